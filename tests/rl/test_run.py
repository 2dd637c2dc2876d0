"""`pangu-core rl` end to end on a tiny config: the report, the invariants, resume, a killed worker, errors."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import uuid
from pathlib import Path

import pytest

from pangu_core.cli import main
from pangu_core.config import ConfigError
from pangu_core.rl.config import RLConfig, builtin_config
from pangu_core.rl.run import STATE_FILE, run_rl

REPORT_KEYS = {"eta", "throughput", "idle", "lag_histogram", "max_lag_consumed", "queue", "levels_generated",
               "levels_consumed", "curves", "accuracy", "speed_model"}


def tiny(eta: int = 1, steps: int = 4) -> RLConfig:
    """The quick config made tiny: levels 1-2, 2 groups of 2 per step, 16-token answers."""
    config = RLConfig.from_yaml(builtin_config("rl_quick"))
    return config.replace(steps=steps, checkpoint_every=2, snapshot_steps=(0, 2), train_prompts=40, test_per_level=3,
                          levels=(1, 2), schedule=config.schedule.replace(eta=eta, max_new_tokens=16, group_size=2,
                                                                          batch_groups=2, prompts_per_claim=2,
                                                                          poll_s=0.05),
                          eval=config.eval.replace(max_new_tokens=16))


def leftovers(prefix: str) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]


def check_report(report: dict, config: RLConfig) -> None:
    assert REPORT_KEYS <= set(report)
    assert report["max_lag_consumed"] <= config.schedule.eta
    queue = report["queue"]
    assert queue["put"] == queue["got"] + queue["evicted"] + queue["dropped"] + queue["size"]
    assert report["curves"]["step"] == list(range(1, config.steps + 1))
    assert [a["step"] for a in report["accuracy"]] == [0, 2, config.steps]
    assert set(report["accuracy"][0]["by_level"]) == {"1", "2"}
    assert set(report["throughput"]) >= {"groups_per_s", "tokens_per_s"}
    assert set(report["idle"]) == {"learner", "rollout"}
    model = report["speed_model"]
    assert model["applies"] == ("async: max(g, t)" if config.schedule.eta else "sync: g + t")
    assert model["limit_same_threads"] >= 1.0


# A tiny async run end to end: report and figure written, invariants hold, the checkpoint holds the
# learner state at the last step, nothing is left in /dev/shm.
def test_run_writes_the_report(init, tmp_path):
    config, prefix = tiny(eta=1), f"t{uuid.uuid4().hex[:10]}"
    report = run_rl(config, tmp_path / "out", init=init, progress=False, shm_prefix=prefix)
    check_report(report, config)
    assert report["queue"]["got"] == config.steps * config.schedule.batch_groups
    assert sum(report["levels_consumed"].values()) == config.steps * config.schedule.batch_groups
    assert json.loads((tmp_path / "out" / "report.json").read_text())["eta"] == 1
    assert (tmp_path / "out" / "report.png").stat().st_size > 0
    assert (tmp_path / "out" / "checkpoint" / STATE_FILE).is_file()
    assert (tmp_path / "out" / "snapshots" / "step_2" / "config.json").is_file()
    assert leftovers(prefix) == []
    # The finished run is not trained again: the same call gives the same figures.
    again = run_rl(config, tmp_path / "out", init=init, progress=False, plot=False)
    assert again["curves"] == report["curves"] and again["queue"] == report["queue"]


# The only rollout worker is killed at step 2 (sync): the run stops with an error naming it, leaves
# nothing in /dev/shm, and the same command resumes from the step-2 checkpoint to the end.
def test_killed_worker_then_resume(init, tmp_path):
    config, prefix = tiny(eta=0, steps=5), f"t{uuid.uuid4().hex[:10]}"

    def kill_at_two(step, record):
        if step == 2:
            for child in multiprocessing.active_children():
                if child.name == "rollout-0":
                    os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(RuntimeError, match=r"rollout-0 \(exit code -9\)"):
        run_rl(config, tmp_path / "out", init=init, progress=False, shm_prefix=prefix, on_step=kill_at_two)
    assert leftovers(prefix) == []
    assert not (tmp_path / "out" / "report.json").exists()
    resumed = []
    report = run_rl(config, tmp_path / "out", init=init, progress=False, shm_prefix=prefix,
                    on_step=lambda step, record: resumed.append(step))
    assert resumed[0] == 3 and resumed[-1] == 5          # from the step-2 checkpoint
    check_report(report, config)
    assert leftovers(prefix) == []


# An exception in the learner's thread stops the run with it and leaves nothing in /dev/shm.
def test_learner_error_leaves_no_shared_memory(init, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def explode(step, record):
        raise ArithmeticError("learner exploded")

    with pytest.raises(ArithmeticError, match="learner exploded"):
        run_rl(tiny(steps=2), tmp_path / "out", init=init, progress=False, shm_prefix=prefix, on_step=explode)
    assert leftovers(prefix) == []


def test_configs_round_trip_and_errors(tmp_path):
    for name in ("rl_default", "rl_quick"):
        config = RLConfig.from_yaml(builtin_config(name))
        assert RLConfig.from_dict(config.to_dict()) == config
    assert RLConfig() == RLConfig.from_yaml(builtin_config("rl_default"))
    with pytest.raises(ConfigError, match=r"rollout_workers: expected rollout_workers \* rollout_threads < "
                                          r"num_threads=2"):
        RLConfig(rollout_workers=2)
    with pytest.raises(ConfigError, match=r"snapshot_steps: expected steps in \[0, steps=40\], got \[50\]"):
        RLConfig(snapshot_steps=(50,))
    with pytest.raises(ConfigError, match="schedule.eta: expected an int >= 0"):
        RLConfig.from_dict({"schedule": {"eta": -1}})
    with pytest.raises(ConfigError, match="learning_rat: unknown key"):
        RLConfig.from_dict({"learning_rat": 1.0})
    with pytest.raises(ConfigError, match="eval.modes: expected modes including the run's mode 'slow'"):
        RLConfig.from_dict({"eval": {"modes": ["fast"]}})
    with pytest.raises(FileNotFoundError, match="config: no built-in 'rl_nope'; known: rl_default, rl_quick"):
        builtin_config("rl_nope")


def test_bad_inputs_name_the_argument(init, tmp_path):
    with pytest.raises(FileNotFoundError, match="--init: .* is not a model folder"):
        run_rl(tiny(), tmp_path / "out", init=tmp_path, progress=False)
    with pytest.raises(TypeError, match="config: expected RLConfig"):
        run_rl({"steps": 1}, tmp_path / "out", init=init)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--out: .* holds no rl run"):
        run_rl(tiny(), tmp_path / "foreign", init=init, progress=False)


# The command answers a user error in one line (exit status 2).
def test_cli_one_line_errors(tmp_path, capsys):
    assert main(["rl", "--quick", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pangu-core rl: error: --init: required; pass a checkpoint folder from `pangu-core sft`")
    assert "\n" not in error
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 0\n")
    assert main(["rl", "--config", str(bad), "--init", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "steps: expected an int >= 1, got 0" in capsys.readouterr().err
    assert main(["rl", "--quick", "--eta", "-1", "--init", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "pangu-core rl: error: --eta: expected an int >= 0, got -1\n"
