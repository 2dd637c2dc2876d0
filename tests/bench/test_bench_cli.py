"""`pangu-core bench` exits non-zero when any case failed to measure, after printing every table."""

from __future__ import annotations

import json

from pangu_core import bench, cli
from pangu_core.bench import common


def _fake_run(cases_by_name):
    def run(name, quick=False, log=None, device="cpu"):
        return {"bench": name, "quick": quick, "machine": common.machine_info(), "seconds": 0.0,
                "cases": cases_by_name(name)}
    return run


def test_a_failed_case_makes_the_command_exit_non_zero(monkeypatch, capsys, tmp_path):
    def cases(name):
        good = common.make_case(f"{name}_good", "items/s", 3.0, "b", 1.0, repeats=5, child_process=False)
        bad = common.make_case(f"{name}_zero", "items/s", 0.0, "b", 1.0, repeats=5, child_process=False)
        return [good, bad] if name == "queue" else [good]

    monkeypatch.setattr(bench, "run", _fake_run(cases))
    out_json = tmp_path / "all.json"
    assert cli.main(["bench", "all", "--quick", "--json", str(out_json)]) == 1
    captured = capsys.readouterr()
    assert "queue_zero" in captured.out and "FAILED" in captured.out
    assert "1 case(s) failed to measure: queue/queue_zero" in captured.err
    # Every benchmark of 'all' still ran and was saved.
    saved = json.loads(out_json.read_text())["benchmarks"]
    assert [d["bench"] for d in saved] == [name for name in bench.registry() if bench.in_all(name)]


def test_no_failure_exits_zero_even_with_a_flag_or_a_skip(monkeypatch, capsys):
    def cases(name):
        return [common.make_case("over", "GB/s", 2.0, "b", 1.0, repeats=5, child_process=False,
                                 ceiling="memcpy", ceiling_value=1.0),
                common.skipped_case("on_device", "GB/s", "b", "no device")]

    monkeypatch.setattr(bench, "run", _fake_run(cases))
    assert cli.main(["bench", "queue"]) == 0
    out = capsys.readouterr().out
    assert "ceiling exceeded" in out and "skipped: no device" in out


def test_an_unknown_benchmark_is_a_one_line_error(capsys):
    assert cli.main(["bench", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pangu-core bench: error: name: unknown benchmark 'nope'; known:")


def test_all_leaves_out_benchmarks_that_opt_out(monkeypatch):
    ran = []
    monkeypatch.setattr(bench, "registry", lambda: {"fast": "m.fast", "long": "m.long"})
    monkeypatch.setattr(bench, "in_all", lambda name: name != "long")
    fake = _fake_run(lambda name: [])
    monkeypatch.setattr(bench, "run", lambda name, quick=False, device="cpu": ran.append(name) or fake(name, quick))
    assert cli.main(["bench", "all", "--quick"]) == 0
    assert ran == ["fast"]
    assert cli.main(["bench", "long", "--quick"]) == 0      # still runs by name
    assert ran == ["fast", "long"]


def test_the_trl_comparison_runs_by_name_only():
    assert "rl_vs_trl" in bench.registry()
    assert not bench.in_all("rl_vs_trl")
    assert all(bench.in_all(name) for name in bench.registry() if name != "rl_vs_trl")
