"""`pangu-core dual` end to end on a tiny config: report schema, phases, resume, bad configs, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pangu_core.config import ConfigError, load_yaml
from pangu_core.dual.config import DualConfig, builtin_config
from pangu_core.dual.run import DualRun, run_dual

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SFT = {"batch_size": 4, "warmup_steps": 1, "max_length": 160, "log_every": 1}
SMALL = {
    "levels": [1, 2], "test_per_level": 3, "num_threads": 1,
    "phase1": {"prompts": 12, "sft": {"max_steps": 3, **SFT}},
    "labels": {"pool_size": 8, "k": 2, "max_new_tokens": 12, "batch_size": 8},
    "phase2": {"prompts": 8, "sft": {"max_steps": 2, **SFT}},
    "eval": {"modes": ["slow", "fast", "auto"], "max_new_tokens": 12, "batch_size": 8, "self_repair": True},
    "biases": [-2.0, 0.0, 2.0],
    "stress": {"levels": [4], "per_level": 2, "max_new_tokens": 12},
    "warm_start": {"levels": [1, 2], "train_problems": 40, "trainer": {"max_steps": 3, **SFT}},
}


def small_config(**changes) -> DualConfig:
    data = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return DualConfig.from_dict(data)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, start_folder):
    """One finished run from --init (shared by the schema and resume tests)."""
    out = tmp_path_factory.mktemp("run") / "out"
    return out, run_dual(small_config(), out, init=start_folder, progress=False)


def test_report_schema_and_run_folder(finished):
    out, report = finished
    for name in ("dual_run.json", "start/start.json", "phase1/checkpoint/model.safetensors", "phase1/phase.json",
                 "labels/labels.jsonl", "labels/labels.json", "phase2/checkpoint/model.safetensors",
                 "phase2/phase.json", "eval/final.json", "eval/bias_-2.json", "eval/bias_+2.json",
                 "eval/stress_sample_repair.json", "report.json"):
        assert (out / name).is_file(), name
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert set(report) >= {"config", "init", "machine", "phases", "start", "final", "mixes", "sweep", "stress",
                           "targets", "seconds"}
    final = report["final"]
    for name in ("accuracy", "tokens", "fast_share", "looped", "repairs"):
        assert set(final[name]) == {"slow", "fast", "auto"} and set(final[name]["auto"]) == {"1", "2"}, name
    assert set(final["mode_follow"]) == {"slow", "fast"}
    assert set(report["start"]["accuracy"]) == {"slow", "fast"}
    # phase 1: one stage per fast share, every prompt once in each, the fast pairs rising 10/30/50%
    assert report["phases"]["phase1"]["stages"] == [12, 12, 12]
    assert report["phases"]["phase1"]["fast_pairs_per_stage"] == [1, 4, 6]
    assert report["phases"]["labels"]["pool_size"] == 8
    labels = [json.loads(line) for line in (out / "labels" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 8 and all(r["p_fast"] in (0.0, 0.5, 1.0) for r in labels)
    for mix in ("uniform", "easy_heavy"):
        summary = report["mixes"][mix]
        assert set(summary) >= {"slow", "fast", "auto", "oracle", "random_at_auto_share", "random_at_auto_tokens",
                                "auto_over_random", "oracle_over_random", "savings_vs_oracle", "weights"}
        assert summary["oracle"]["accuracy"] >= max(summary["slow"]["accuracy"], summary["fast"]["accuracy"])
    assert report["mixes"]["easy_heavy"]["weights"] == pytest.approx({"1": 0.5 / 0.7, "2": 0.2 / 0.7})
    assert [p["bias"] for p in report["sweep"]["points"]] == [-2.0, 0.0, 2.0]
    assert set(report["stress"]["decodings"]) == {"greedy", "sample"}
    for name, target in report["targets"].items():
        extra = {"oracle"} if name.startswith("auto_over_random_") else set()
        assert set(target) == {"value", "target", "met"} | extra, name
    assert report["targets"]["auto_over_random_uniform"]["oracle"] == report["mixes"]["uniform"]["oracle_over_random"]
    assert "mode_follow_min" in report["targets"] and "savings_vs_oracle_easy_heavy" in report["targets"]


def test_resume_skips_finished_phases(finished, start_folder, monkeypatch):
    # Every phase of a finished run is skipped on a restart: nothing is trained or evaluated again.
    out, report = finished

    def refuse(*args, **kwargs):
        raise AssertionError("a finished phase ran again")

    monkeypatch.setattr(DualRun, "_train", refuse)
    monkeypatch.setattr(DualRun, "_evaluate", refuse)
    again = run_dual(small_config(), out, init=start_folder, progress=False, plot=False)
    assert again["final"] == report["final"] and again["targets"] == report["targets"]
    # another config in the same folder is refused, naming what changed
    with pytest.raises(FileExistsError, match="other settings \\(config\\)"):
        run_dual(small_config(seed=3), out, init=start_folder, progress=False)


def test_an_interrupted_run_continues_from_its_last_finished_phase(tmp_path, start_folder, monkeypatch):
    # Without --init the warm start trains the start checkpoint. A crash in the labels phase leaves
    # the start and phase 1 done; the restart runs only what is missing.
    calls = []
    original = DualRun.labels

    def crash(self):
        calls.append("labels")
        raise KeyboardInterrupt

    monkeypatch.setattr(DualRun, "labels", crash)
    with pytest.raises(KeyboardInterrupt):
        run_dual(small_config(), tmp_path / "out", progress=False, plot=False)
    assert (tmp_path / "out" / "start" / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "phase1" / "phase.json").is_file() and not (tmp_path / "out" / "labels").exists()
    phase1 = (tmp_path / "out" / "phase1" / "phase.json").read_text()
    monkeypatch.setattr(DualRun, "labels", original)
    trained = []
    original_train = DualRun._train
    monkeypatch.setattr(DualRun, "_train", lambda self, phase, *a: trained.append(phase) or original_train(self, phase, *a))
    report = run_dual(small_config(), tmp_path / "out", progress=False, plot=False)
    assert trained == [2] and (tmp_path / "out" / "phase1" / "phase.json").read_text() == phase1
    assert report["phases"]["phase1"]["start"] == str(tmp_path / "out" / "start" / "checkpoint")


@pytest.mark.parametrize("changes, message", [
    ({"levels": [1, 7]}, "levels: expected distinct levels"),
    ({"eval": {"modes": ["slow", "fast"]}}, "eval.modes: expected slow, fast and auto"),
    ({"biases": []}, "biases: expected at least one finite number"),
    ({"phase1": {"sft": {"max_steps": 2}}}, "phase1.sft.max_steps: expected at least one step per stage"),
    ({"phase2": {"prompts": 20}}, "phase2.prompts: expected at most labels.pool_size=8"),
    ({"labels": {"k": 0}}, "labels.k: expected an int >= 1"),
    ({"stress": {"levels": [6]}}, "stress.levels: expected distinct levels"),
    ({"stress": {"mode": "fast"}}, "stress.mode"),
    ({"fusion": {"tau": 2.0}}, "fusion.tau: expected a number in \\[0, 1\\]"),
    ({"repair_pair_share": -0.1}, "repair_pair_share: expected a number in \\[0, 1\\]"),
    ({"warm_start": {"levels": [1, 2, 3]}}, "warm_start.levels: expected the run's levels"),
])
def test_bad_configs_are_refused_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**changes)


def test_unknown_keys_and_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="labels.poolsize: unknown key"):
        small_config(labels={"poolsize": 3})
    with pytest.raises(FileNotFoundError, match="--init: .* is not a model folder"):
        run_dual(small_config(), tmp_path / "a", init=tmp_path, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--out: .* is not empty and holds no dual run"):
        run_dual(small_config(), tmp_path / "busy", progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(TypeError, match="config: expected DualConfig"):
        run_dual({}, tmp_path / "b")


def field_paths(config, prefix=()):
    """Every field path of a config, nested configs' fields included."""
    import dataclasses

    from pangu_core.config import Config

    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        yield prefix + (item.name,)
        if isinstance(value, Config):
            yield from field_paths(value, prefix + (item.name,))


@pytest.mark.parametrize("name", ["dual_default", "dual_quick"])
def test_builtin_configs_load_round_trip_and_comment_every_field(name):
    path = builtin_config(name)
    config = DualConfig.from_yaml(path)
    assert DualConfig.from_dict(config.to_dict()) == config
    data, lines = load_yaml(path)
    text = path.read_text().splitlines()
    # both list every top-level field; the default comments every field it writes, at every depth
    # (warm_start.eval is left out: the run's eval replaces it), the quick one every top-level field
    assert set(data) == set(config.to_dict())
    paths = [p for p in field_paths(config) if p in lines] if name == "dual_default" else [(key,) for key in data]
    for field_path in paths:
        line = lines[field_path]
        assert text[line - 2].lstrip().startswith("#"), f"{name}.yaml:{line}: {'.'.join(field_path)}: no comment above"
    with pytest.raises(FileNotFoundError, match="no built-in 'dual_huge'; known: dual_default, dual_quick"):
        builtin_config("dual_huge")


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from pangu_core.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("levels: [1, 2]\nlabels:\n  pool_size: 4\nphase2:\n  prompts: 9\n")
    assert main(["dual", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pangu-core dual: error: ") and "phase2.prompts: expected at most labels.pool_size=4" in err
    assert "\n" not in err and not (tmp_path / "out").exists()
    assert main(["dual", "--quick", "--init", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "--init: " in capsys.readouterr().err


def test_cli_runs_a_config_and_prints_the_targets(tmp_path, start_folder, capsys):
    from pangu_core.cli import main

    config = tmp_path / "small.yaml"
    small_config().to_yaml(config)
    assert main(["dual", "--config", str(config), "--init", str(start_folder), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["accuracy"]) == {"slow", "fast", "auto"} and "mode_follow_min" in summary["targets"]
    assert Path(summary["files"]["pareto"]).is_file()
