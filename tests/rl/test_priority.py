"""RL priority helpers: the formula against a direct computation, error paths, and no starvation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.queue import PriorityQueue
from pangu_core.rl.priority import (
    PriorityWeights,
    group_advantages,
    group_priorities,
    group_priority,
    length_bonus,
    mean_abs_advantage,
    reward_std,
)


# Each term of the formula matches a plain computation; batched and single-group agree.
def test_group_priority_formula():
    weights = PriorityWeights(reward_std=2.0, advantage=0.5, version_lag=0.25, length=0.3, length_scale=1000)
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0]
    advantages = [0.5, -1.0, 0.25, 2.0, 0.0]
    lengths = [100, 300, 200, 50, 350]
    mean = sum(rewards) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 5)
    expected = (2.0 * std + 0.5 * (0.5 + 1.0 + 0.25 + 2.0) / 5 - 0.25 * 3
                + 0.3 * min(1.0, math.log1p(200) / math.log1p(1000)))
    got = group_priority(rewards, advantages, version_lag=3, length=lengths, weights=weights)
    assert got == pytest.approx(expected, rel=1e-12)
    batch = group_priorities([rewards, [1.0] * 5], [advantages, [0.0] * 5], version_lags=[3, 0],
                             lengths=[200.0, 10_000.0], weights=weights)
    assert batch[0] == pytest.approx(expected, rel=1e-12)
    assert batch[1] == pytest.approx(0.3)  # no signal, no lag, length bonus capped at 1


# Groups whose rewards all agree carry no learning signal and rank below groups that disagree.
def test_signal_ranks_groups():
    p = group_priorities(np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=float))
    assert p[0] == pytest.approx(0.0, abs=1e-9)
    assert p[1] > p[2] > p[0]
    # group-normalised advantages: zero mean, unit std (up to eps) per group
    a = group_advantages([[1.0, 0.0, 1.0, 0.0]])
    assert a.mean() == pytest.approx(0.0) and a.std() == pytest.approx(1.0, rel=1e-5)


# Lag lowers priority; longer responses raise it, up to the cap.
def test_lag_and_length_directions():
    base = dict(rewards=[1.0, 0.0], weights=PriorityWeights())
    assert group_priority(version_lag=0, **base) > group_priority(version_lag=4, **base)
    assert group_priority(length=4000, **base) > group_priority(length=40, **base) > group_priority(**base)
    assert length_bonus(10**9, 100) == 1.0 and length_bonus(0) == 0.0


# torch CPU tensors work like numpy arrays and lists.
def test_accepts_torch_and_numpy():
    t = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.bfloat16)
    assert reward_std(t) == pytest.approx(reward_std(np.array([[0.0, 1.0, 1.0]])))
    assert mean_abs_advantage(torch.tensor([1.0, -3.0])) == pytest.approx(2.0)


# Bad weights are all reported at once; unknown keys list the known ones.
def test_weights_validation():
    with pytest.raises(ValueError) as info:
        PriorityWeights(reward_std=-1, advantage=float("nan"), version_lag="x", length_scale=0, eps=0)
    message = str(info.value)
    for part in ("reward_std", "advantage", "version_lag", "length_scale", "eps"):
        assert f"{part}: expected" in message
    with pytest.raises(ConfigError, match="reward: unknown key; known: reward_std, advantage"):
        PriorityWeights.from_dict({"reward": 1.0})
    with pytest.raises(ConfigError, match="version_lag: expected a number, got 'x'"):
        PriorityWeights(version_lag="x")
    with pytest.raises(ConfigError, match="length_scale: expected a finite number >= 1, got inf"):
        PriorityWeights(length_scale=float("inf"))
    assert PriorityWeights.from_dict({"length": 0.0}).length == 0.0


# Weights written out and read back are the same weights (dict and YAML).
def test_weights_round_trip(tmp_path):
    weights = PriorityWeights(reward_std=2.0, advantage=0.0, version_lag=0.25, length=1, length_scale=512, eps=1e-4)
    assert PriorityWeights.from_dict(weights.to_dict()) == weights
    weights.to_yaml(tmp_path / "weights.yaml")
    assert PriorityWeights.from_yaml(tmp_path / "weights.yaml") == weights


# Every bad input names itself.
@pytest.mark.parametrize("call, error, pattern", [
    (lambda: group_priorities([1.0, 0.0]), ValueError, r"rewards: expected 2-D"),
    (lambda: group_priorities([[1.0, np.nan]]), ValueError, "rewards: expected finite"),
    (lambda: group_priorities([[1.0, 0.0]], [[1.0]]), ValueError, "advantages: expected shape"),
    (lambda: group_priorities([[1.0, 0.0]], version_lags=[1, 2]), ValueError, "version_lags: expected a number or shape"),
    (lambda: group_priorities([[1.0, 0.0]], version_lags=-1), ValueError, "version_lags: expected versions >= 0"),
    (lambda: group_priorities([[1.0, 0.0]], lengths=[[1, 2, 3]]), ValueError, "lengths: expected shape"),
    (lambda: group_priorities([[1.0, 0.0]], lengths=[-5]), ValueError, "lengths: expected token counts >= 0"),
    (lambda: group_priorities([[1.0, 0.0]], weights={"length": 1}), TypeError, "weights: expected PriorityWeights"),
    (lambda: group_priority(["a", "b"]), TypeError, "rewards: expected real numbers"),
    (lambda: group_priority([1.0], version_lag=-2), ValueError, "version_lag: expected versions >= 0"),
    (lambda: reward_std(np.zeros((2, 0))), ValueError, "at least one reward"),
    (lambda: group_advantages([1.0], eps=0), ValueError, "eps: expected a number > 0"),
])
def test_bad_inputs(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# With these priorities, a zero-signal (priority ~0) group is starved by a constant stream of
# high-signal groups unless the queue's age boost is on; with it, it is served within a bound.
def test_age_boost_prevents_starvation_of_low_priority_groups():
    rng = np.random.default_rng(0)

    def served_at(age_boost: float, rounds: int = 300) -> int | None:
        q = PriorityQueue(capacity=64, overflow="block", age_boost=age_boost)
        q.put("no-signal group", group_priority([1.0, 1.0, 1.0, 1.0]))
        for version in range(1, rounds + 1):
            q.advance_version(version)
            rewards = rng.integers(0, 2, size=(4, 4)).astype(float)
            rewards[:, 0], rewards[:, 1] = 0.0, 1.0  # always some signal
            q.put_many([f"group {version}.{i}" for i in range(4)], group_priorities(rewards))
            if "no-signal group" in q.get_batch(4):
                return version
        return None

    assert served_at(0.0) is None
    served = served_at(0.1)
    assert served is not None and served < 40
