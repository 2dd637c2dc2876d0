"""The pangu-core command and the benchmark document format."""

from __future__ import annotations

import json
import math

import pytest

from pangu_core import bench, cli
from pangu_core.bench import common


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["frobnicate"])
    assert stop.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_info_prints_build_and_devices(capsys):
    assert cli.main(["info"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["isa_selected"] and any(d["kind"] == "cpu" and d["available"] for d in report["devices"])


def test_unknown_benchmark_lists_the_known_ones(capsys):
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name: unknown benchmark 'nope'; known:"):
        bench.run("nope")


def test_ratio_means_better_whatever_the_metric():
    rate = common.make_case("c", "GB/s", 10.0, "b", 4.0, ceiling="memcpy", ceiling_value=20.0, repeats=5,
                            child_process=False)
    assert rate["ratio"] == 2.5 and rate["ceiling_fraction"] == 0.5
    time = common.make_case("c", "s", 2.0, "b", 6.0, higher_is_better=False, extra_field=1, repeats=5,
                            child_process=False)
    assert time["ratio"] == 3.0 and time["extra_field"] == 1 and "ceiling" not in time


def test_median_repeats_at_least_five_times():
    calls = []
    seconds = common.median_seconds(lambda: calls.append(1), repeats=2, warmup=1)
    assert len(calls) == 6 and seconds >= 0


def test_percentiles_use_nearest_rank():
    values = list(range(1, 101))
    p = common.percentiles(values)
    assert p["p50"] == 50 and p["p99"] == 99
    assert math.isnan(common.percentiles([])["p50"])


def test_documents_render_and_save(tmp_path):
    doc = {"bench": "demo", "machine": common.machine_info(), "seconds": 0.1, "quick": True,
           "cases": [common.make_case("case_a", "items/s", 3.0, "baseline", 1.0, repeats=5, child_process=False)]}
    table = bench.format_table(doc)
    assert "case_a" in table and "3x" in table
    bench.write_json(doc, tmp_path / "out" / "demo.json")
    assert json.loads((tmp_path / "out" / "demo.json").read_text())["cases"][0]["ratio"] == 3.0
    bench.write_json([doc, doc], tmp_path / "all.json")
    assert len(json.loads((tmp_path / "all.json").read_text())["benchmarks"]) == 2


def test_version_prints_the_package_version(capsys):
    from pangu_core import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pangu-core {__version__}"


@pytest.mark.parametrize("content", [None, "trainer: {lr: 1e-3\n", "model_size: nano\nmodel_size: micro\n", "bogus_key: 1\n"])
def test_config_mistakes_are_answered_in_one_line(tmp_path, capsys, content):
    # Missing file, YAML syntax, duplicate key, unknown key: one line naming the file, exit 2, no traceback.
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    assert cli.main(["sft", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pangu-core sft: error: ") and err.count("\n") == 1 and str(path) in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_directory_given_as_config_is_a_user_error(tmp_path, capsys):
    assert cli.main(["merge", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pangu-core merge: error: ") and "is a directory" in err and err.count("\n") == 1


def test_traceback_on_request(tmp_path, monkeypatch):
    # With PANGU_TRACEBACK set the exception propagates instead of becoming one line.
    monkeypatch.setenv("PANGU_TRACEBACK", "1")
    with pytest.raises((ValueError, OSError)):
        cli.main(["sft", "--config", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "out")])


def test_bench_device_is_refused_by_cpu_only_benchmarks(capsys):
    assert cli.main(["bench", "queue", "--device", "cuda"]) == 2
    assert "device: benchmark 'queue' runs only on cpu, got 'cuda'" in capsys.readouterr().err


def test_bench_on_an_absent_device_reports_every_case_skipped(tmp_path, capsys):
    # Without the device each case comes back skipped with its reason, and the run still succeeds.
    from pangu_core import device

    if device.probe("npu").available:
        pytest.skip("an NPU is present: this test checks the path without one")
    out = tmp_path / "att.json"
    assert cli.main(["bench", "attention", "--device", "npu", "--quick", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    doc = doc["benchmarks"][0] if "benchmarks" in doc else doc
    assert doc["device"] == "npu" and doc["cases"]
    assert all(case["skipped"] and math.isnan(case["ratio"]) for case in doc["cases"])
