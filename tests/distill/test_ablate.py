"""Distillation ablations: arms differ in one setting, forgetting and paired gaps by hand, the runs' plumbing."""

from __future__ import annotations

import json

import pytest

from pangu_core.distill.ablate import (
    _paired,
    forgetting,
    hard_accuracy,
    merging_arms,
    run_ablation,
    selection_arms,
)
from pangu_core.distill.config import DistillConfig, builtin_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _differences(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set(a) | set(b)
    out = set()
    for key in keys:
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out |= _differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.add(prefix + key)
    return out


def test_arms_change_one_setting_only():
    config = DistillConfig.from_yaml(builtin_config("distill_ablate"))
    arms = {name: arm.to_dict() for name, arm in selection_arms(config).items()}
    for name, arm in arms.items():
        assert _differences(arm, arms["gaussian"]) <= {"selection.strategy", "selection.fixed_levels"}, name
    merging = {name: arm.to_dict() for name, arm in merging_arms(config).items()}
    for name, arm in merging.items():
        assert not {d for d in _differences(arm, merging["chain"]) if not d.startswith("merging.")}, name
        assert arm["selection"]["fixed_levels"] == [[3], [4], [5]][:config.rounds]


def _report(feed_method: str, rounds: list[dict]) -> dict:
    return {"config": {"merging": {"method": feed_method, "feed_merged": True},
                       "selection": {"fixed_levels": [[3], [4], [5]]}},
            "rounds": [{"round": t, "eval": {"merged": {"accuracy": acc}, "last": {"accuracy": acc}}}
                       for t, acc in enumerate(rounds)]}


def test_forgetting_by_hand():
    def acc(fast1, s3, s4, s5):
        return {"fast": {"1": fast1}, "slow": {"3": s3, "4": s4, "5": s5}}

    report = _report("task_arithmetic", [acc(0.9, 0.2, 0.1, 0.0), acc(0.5, 0.8, 0.2, 0.0),
                                         acc(0.4, 0.6, 0.9, 0.1), acc(0.3, 0.5, 0.7, 0.8)])
    f, final = forgetting(report)
    # earlier skills: fast 1 (best 0.9, final 0.3), slow 3 (0.8 -> 0.5), slow 4 (0.9 -> 0.7)
    assert f == pytest.approx((0.6 + 0.3 + 0.2) / 3)
    assert final == pytest.approx((0.3 + 0.5 + 0.7 + 0.8) / 4)
    assert hard_accuracy(report) == pytest.approx((0.5 + 0.7 + 0.8) / 3)


def test_paired_differences_by_hand():
    gap = _paired([0.5, 0.6, 0.7], [0.4, 0.4, 0.8])
    assert gap["differences"] == pytest.approx([0.1, 0.2, -0.1])
    assert gap["mean"] == pytest.approx(0.2 / 3)
    # sd of (0.1, 0.2, -0.1) with n - 1: sqrt(((0.0333)^2 + (0.1333)^2 + (0.1667)^2) / 2)
    assert gap["sd"] == pytest.approx(0.152752523, abs=1e-8)
    assert gap["positive"] == 2 and gap["effect"] is False


def test_a_merging_ablation_runs_and_writes_its_summary(tmp_path, small_config):
    config = small_config(rounds=2)
    summary = run_ablation("merging", config, [0, 1], tmp_path, progress=False, command="test")
    assert set(summary["arms"]) == {"chain", "base", "base_ties", "previous_ties"}
    for arm in summary["arms"].values():
        assert len(arm["forgetting"]) == 2 and len(arm["final_mean_accuracy"]) == 2
    assert json.loads((tmp_path / "merging.json").read_text())["seeds"] == [0, 1]
    assert (tmp_path / "merging.png").stat().st_size > 0
    # every arm started from the one shared checkpoint
    starts = {json.loads((tmp_path / "runs" / arm / "seed0" / "distill_run.json").read_text())["init"]
              for arm in summary["arms"]}
    assert starts == {str((tmp_path / "start" / "checkpoint").resolve())}
    with pytest.raises(ValueError, match="--seeds: expected distinct ints >= 0"):
        run_ablation("merging", config, [1, 1], tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="ablation: expected one of selection, merging"):
        run_ablation("rounds", config, [0], tmp_path / "y", progress=False)
