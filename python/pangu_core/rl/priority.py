"""Priorities for RL rollout groups in the data queue: learning signal, staleness and length.

A GRPO group (one prompt, G sampled responses) teaches the learner something only when its rewards
differ: with equal rewards every group-normalised advantage is 0 and the group's gradient vanishes.
The priority therefore rewards the learning signal, penalises policy lag, and gives long (usually
hard) problems a bonus so they are not starved by many short easy ones::

    priority = reward_std * std(rewards)                  # spread of rewards inside the group
             + advantage  * mean(|advantages|)            # size of the policy-gradient weights
             - version_lag * lag                          # versions between sampling and now
             + length     * min(1, log1p(L) / log1p(length_scale))   # L: mean response length

Inside the queue an age boost (``PriorityQueue(age_boost=...)``) then lifts waiting groups by
``alpha`` per policy version, so even a zero-signal group is eventually served. The priority is
fixed at put time, while the boost grows with the time spent queued.

All functions are pure: numbers or arrays in, numbers or arrays out (torch CPU tensors accepted).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pangu_core.config import Config, expect, is_number

__all__ = [
    "PriorityWeights", "reward_std", "mean_abs_advantage", "group_advantages", "length_bonus",
    "group_priority", "group_priorities",
]


@dataclasses.dataclass(frozen=True)
class PriorityWeights(Config):
    """Weights of the group priority (see the module docstring); checked on construction."""

    # Weight on the standard deviation of rewards within the group (>= 0).
    reward_std: float = 1.0
    # Weight on the mean absolute advantage of the group (>= 0).
    advantage: float = 0.5
    # Priority lost per policy version between sampling and queueing (>= 0).
    version_lag: float = 0.1
    # Weight of the length bonus, which grows with log response length up to 1 (>= 0).
    length: float = 0.2
    # Mean response length (tokens) at which the length bonus reaches 1 (>= 1).
    length_scale: float = 4096.0
    # Added to the reward std when computing group-normalised advantages (> 0).
    eps: float = 1e-6

    def validate(self) -> list[str]:
        problems: list[str] = []
        for field in ("reward_std", "advantage", "version_lag", "length"):
            value = getattr(self, field)
            expect(problems, _is_finite(value) and value >= 0, field, "a finite number >= 0", value)
        expect(problems, _is_finite(self.length_scale) and self.length_scale >= 1, "length_scale",
               "a finite number >= 1", self.length_scale)
        expect(problems, _is_finite(self.eps) and self.eps > 0, "eps", "a finite number > 0", self.eps)
        return problems


def _is_finite(value: Any) -> bool:
    # Fields of the wrong type are reported by the type check; the rules then skip them.
    return is_number(value) and math.isfinite(value)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _as_float_array(value: Any, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    """float64 array of ``value`` (numbers, sequences, numpy arrays, torch CPU tensors), checked."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        if getattr(value, "device", None) is not None and str(value.device) != "cpu":
            raise ValueError(f"{name}: expected a CPU tensor, got device {value.device}")
        value = value.detach().float().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected real numbers, got {type(value).__name__}") from None
    if array.ndim not in ndim:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndim)} values, got shape {array.shape}")
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return array


def reward_std(rewards: Any) -> np.ndarray | float:
    """Population standard deviation of rewards within each group.

    rewards: (G,) for one group -> float, or (B, G) for B groups -> (B,). G >= 1.
    """
    r = _as_float_array(rewards, "rewards", (1, 2))
    if r.shape[-1] < 1:
        raise ValueError(f"rewards: expected at least one reward per group, got shape {r.shape}")
    out = r.std(axis=-1)
    return float(out) if r.ndim == 1 else out


def group_advantages(rewards: Any, eps: float = 1e-6) -> np.ndarray:
    """GRPO group-normalised advantages (r - mean) / (std + eps), same shape as ``rewards``."""
    r = _as_float_array(rewards, "rewards", (1, 2))
    if not (_is_real(eps) and eps > 0):
        raise ValueError(f"eps: expected a number > 0, got {eps!r}")
    mean = r.mean(axis=-1, keepdims=True)
    return (r - mean) / (r.std(axis=-1, keepdims=True) + eps)


def mean_abs_advantage(advantages: Any) -> np.ndarray | float:
    """Mean |advantage| over each group: (G,) -> float, (B, G) -> (B,)."""
    a = _as_float_array(advantages, "advantages", (1, 2))
    if a.shape[-1] < 1:
        raise ValueError(f"advantages: expected at least one value per group, got shape {a.shape}")
    out = np.abs(a).mean(axis=-1)
    return float(out) if a.ndim == 1 else out


def length_bonus(lengths: Any, length_scale: float = 4096.0) -> np.ndarray | float:
    """min(1, log1p(L) / log1p(length_scale)) of the mean response length L of each group.

    lengths: a number or (G,) for one group -> float, (B, G) -> (B,). Lengths are >= 0 tokens.
    """
    l = _as_float_array(lengths, "lengths", (0, 1, 2))
    if l.size and l.min() < 0:
        raise ValueError("lengths: expected token counts >= 0, got a negative value")
    mean = l if l.ndim == 0 else l.mean(axis=-1)
    out = np.minimum(1.0, np.log1p(mean) / math.log1p(length_scale))
    return float(out) if l.ndim <= 1 else out


def group_priorities(
    rewards: Any,
    advantages: Any | None = None,
    version_lags: Any = 0,
    lengths: Any | None = None,
    weights: PriorityWeights | None = None,
) -> np.ndarray:
    """Priorities of B groups at once (the formula in the module docstring).

    rewards: (B, G). advantages: (B, G), or None for the GRPO group-normalised ones.
    version_lags: a number or (B,) non-negative versions. lengths: (B,) mean or (B, G) per
    response token counts, or None (no length term). Returns (B,) float64.
    """
    weights = PriorityWeights() if weights is None else weights
    if not isinstance(weights, PriorityWeights):
        raise TypeError(f"weights: expected PriorityWeights, got {type(weights).__name__}")
    r = _as_float_array(rewards, "rewards", (2,))
    batch = r.shape[0]
    a = group_advantages(r, weights.eps) if advantages is None else _as_float_array(advantages, "advantages", (2,))
    if a.shape != r.shape:
        raise ValueError(f"advantages: expected shape {r.shape} like rewards, got {a.shape}")
    lag = _as_float_array(version_lags, "version_lags", (0, 1))
    if lag.ndim == 1 and lag.shape[0] != batch:
        raise ValueError(f"version_lags: expected a number or shape ({batch},), got {lag.shape}")
    if lag.size and lag.min() < 0:
        raise ValueError("version_lags: expected versions >= 0, got a negative value")
    priority = weights.reward_std * r.std(axis=-1) + weights.advantage * np.abs(a).mean(axis=-1)
    priority = priority - weights.version_lag * lag
    if lengths is not None:
        l = _as_float_array(lengths, "lengths", (1, 2))
        if l.shape[0] != batch or (l.ndim == 2 and l.shape != r.shape):
            raise ValueError(f"lengths: expected shape ({batch},) or {r.shape}, got {l.shape}")
        bonus = length_bonus(l if l.ndim == 2 else l[:, None], weights.length_scale)
        priority = priority + weights.length * bonus
    return np.asarray(priority, dtype=np.float64)


def group_priority(
    rewards: Any,
    advantages: Any | None = None,
    version_lag: int | float = 0,
    length: Any | None = None,
    weights: PriorityWeights | None = None,
) -> float:
    """Priority of one group: rewards (G,), advantages (G,) or None, a lag, a length or (G,) lengths."""
    r = _as_float_array(rewards, "rewards", (1,))
    a = None if advantages is None else _as_float_array(advantages, "advantages", (1,))[None]
    lag = _as_float_array(version_lag, "version_lag", (0,)).reshape(1)
    if lag[0] < 0:
        raise ValueError(f"version_lag: expected versions >= 0, got {version_lag!r}")
    lengths = None
    if length is not None:
        l = _as_float_array(length, "length", (0, 1))
        lengths = l.reshape(1, -1) if l.ndim == 1 else l.reshape(1)
    return float(group_priorities(r[None], a, lag, lengths, weights)[0])
