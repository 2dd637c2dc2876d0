"""`pangu-core bench rl_scheduler`: the case's structure on a tiny size (never its speed)."""

from __future__ import annotations

import pytest

from pangu_core import bench
from pangu_core.bench import rl_scheduler


# Registered under its name; one case, with the fixed id, the named baseline, the ceiling at twice
# the sync arm (so ceiling_fraction = ratio / 2), and both arms within their staleness bounds.
def test_case_structure(monkeypatch, check_spread):
    monkeypatch.setitem(rl_scheduler.SIZES, "quick", (2, 2, 4, 3, 1))
    assert bench.registry()["rl_scheduler"] == "pangu_core.bench.rl_scheduler"
    document = bench.run("rl_scheduler", quick=True, log=None)
    assert document["bench"] == "rl_scheduler"
    (case,) = document["cases"]
    assert case["case"] == "async_vs_sync_balanced" and case["metric"] == "groups/s"
    assert case["baseline"] == rl_scheduler.BASELINE and case["ceiling"] == rl_scheduler.CEILING
    assert case["repeats"] == 1 and case["child_process"] is False and not case.get("failed")
    assert case["ratio"] == pytest.approx(case["ours"] / case["baseline_value"])
    check_spread(case)  # one repetition: lo = hi = ratio
    assert case["ceiling_value"] == pytest.approx(2.0 * case["baseline_value"])
    assert case["ceiling_fraction"] == pytest.approx(case["ratio"] / 2.0)
    assert case["g_s_per_batch"] == pytest.approx(case["t_s_per_batch_calibrated"])
    assert case["max_lag_consumed"]["async"] <= 1 and case["max_lag_consumed"]["sync"] == 0
    assert case["limit_ratio"] == 2.0 and case["steps"] == 3


# The simulated generator returns G responses of the set length per prompt, with zero log-probs.
def test_sleeping_generator_shapes():
    generator = rl_scheduler.SleepingGenerator(0.0, length=5, vocab=20, seed=0)
    generation = generator.generate([[1, 2], [3]], 3, 1.0, 5)
    assert len(generation.responses) == 6 and all(len(r) == 5 for r in generation.responses)
    assert all(0 <= t < 20 for r in generation.responses for t in r)
    assert all(lp.shape == (5,) and float(lp.abs().sum()) == 0.0 for lp in generation.log_probs)
    rewards = rl_scheduler.CoinScorer(seed=0)(None, [[1]] * 8)
    assert len(rewards) == 8 and set(rewards) <= {0.0, 1.0}
