"""The maths of measuring the dual system: token savings, the oracle router, the random-mix line, test mixes.

Pure functions on numbers, per-level mappings (level -> value, levels as string keys like the
evaluation's) and per-prompt arrays; no model anywhere.

- **Savings** S = 1 - tokens(auto) / tokens(slow) (:func:`savings`).
- **Oracle router** (:func:`oracle_router`): per prompt, the fast answer where it is right, else
  the slow one; the best a router that reads the answers could do, so its S bounds auto's.
- **Random mix** (:func:`random_mix`, :func:`random_mix_at_tokens`): a router that picks fast with
  probability q whatever the prompt; its accuracy and tokens are the q-weighted means of the fast
  and slow modes, a straight line between them. Auto must lie above it.
- **Test mixes** (:func:`mix_weights`, :func:`mix_mean`): a test distribution is a weight per
  level; "uniform" gives each level the same weight, "easy_heavy" 0.5 / 0.2 / 0.1 / 0.1 / 0.1 over
  levels 1-5 (renormalised over the levels present). A mixed figure is the weighted mean of the
  per-level figures, so every level counts by its weight, not by its number of test prompts.
- **Frontier** (:func:`frontier_violation`): how far a bias sweep is from monotone (more tokens
  never buy less accuracy).
- **Level differences** (:func:`level_differences`): one per-level figure minus another, rounded to
  1e-9 so that a difference of accuracies such as 0.98 - 0.96 is the 0.02 it is, not 0.020000000000000018.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Weights of the easy-heavy test mix over levels 1-5.
EASY_HEAVY = {"1": 0.5, "2": 0.2, "3": 0.1, "4": 0.1, "5": 0.1}
MIXES = ("uniform", "easy_heavy")


def savings(tokens_auto: float, tokens_slow: float) -> float:
    """S = 1 - tokens_auto / tokens_slow (the share of slow mode's tokens that auto mode saves)."""
    if not tokens_slow > 0:
        raise ValueError(f"tokens_slow: expected a number > 0, got {tokens_slow!r}")
    return 1.0 - tokens_auto / tokens_slow


def mix_weights(name: str, levels: Sequence[str | int]) -> dict[str, float]:
    """The weights (summing to 1) of test mix ``name`` ("uniform" or "easy_heavy") over ``levels``."""
    keys = [str(level) for level in levels]
    if not keys:
        raise ValueError("levels: expected at least one level")
    if name == "uniform":
        raw = {key: 1.0 for key in keys}
    elif name == "easy_heavy":
        unknown = [key for key in keys if key not in EASY_HEAVY]
        if unknown:
            raise ValueError(f"levels: the easy_heavy mix has levels 1-5, got {unknown}")
        raw = {key: EASY_HEAVY[key] for key in keys}
    else:
        raise ValueError(f"mix: expected one of {', '.join(MIXES)}, got {name!r}")
    total = sum(raw.values())
    return {key: value / total for key, value in raw.items()}


def mix_mean(per_level: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The ``weights``-weighted mean of a per-level figure (every weighted level must be present)."""
    missing = [level for level in weights if level not in per_level]
    if missing:
        raise KeyError(f"per_level: no value for level(s) {missing}")
    return float(sum(weights[level] * per_level[level] for level in weights))


def _array(name: str, values, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected one value per prompt (1-D), got shape {array.shape}")
    return array


def oracle_router(fast_correct, slow_correct, fast_tokens, slow_tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt (all four of length n): (correct, tokens, routed fast) of the router that takes the
    fast answer where it is right and the slow one elsewhere. Returns bool [n], float64 [n], bool [n]."""
    fast_ok = _array("fast_correct", fast_correct, bool)
    slow_ok = _array("slow_correct", slow_correct, bool)
    fast_t = _array("fast_tokens", fast_tokens, np.float64)
    slow_t = _array("slow_tokens", slow_tokens, np.float64)
    for name, array in (("slow_correct", slow_ok), ("fast_tokens", fast_t), ("slow_tokens", slow_t)):
        if array.shape != fast_ok.shape:
            raise ValueError(f"{name}: expected {fast_ok.shape[0]} values like fast_correct, got {array.shape[0]}")
    correct = np.where(fast_ok, True, slow_ok)
    return correct, np.where(fast_ok, fast_t, slow_t), fast_ok.copy()


def level_differences(minuend: Mapping, subtrahend: Mapping) -> dict:
    """``minuend[level] - subtrahend[level]`` for each level of ``subtrahend`` that ``minuend`` has,
    rounded to 1e-9 (targets such as "within 0.02" compare these)."""
    return {level: round(minuend[level] - value, 9) for level, value in subtrahend.items() if level in minuend}


def per_level_means(levels, values) -> dict[str, float]:
    """The mean of ``values`` per level (``levels`` and ``values`` one per prompt), levels as string keys."""
    levels = [str(level) for level in levels]
    values = np.asarray(values, dtype=np.float64)
    if len(levels) != len(values):
        raise ValueError(f"values: expected {len(levels)} values like levels, got {len(values)}")
    out = {}
    for level in sorted(set(levels), key=int):
        out[level] = float(values[[i for i, lv in enumerate(levels) if lv == level]].mean())
    return out


def random_mix(share: float, fast: tuple[float, float], slow: tuple[float, float]) -> tuple[float, float]:
    """(accuracy, tokens) of a router choosing fast with probability ``share``, from the (accuracy,
    tokens) of fast mode and of slow mode on the same prompts."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: expected a number in [0, 1], got {share!r}")
    return (share * fast[0] + (1 - share) * slow[0], share * fast[1] + (1 - share) * slow[1])


def random_mix_at_tokens(tokens: float, fast: tuple[float, float], slow: tuple[float, float]
                         ) -> tuple[float, float]:
    """(share, accuracy) of the random mix spending ``tokens`` on average: share = (slow tokens -
    tokens) / (slow tokens - fast tokens), clipped to [0, 1]."""
    spread = slow[1] - fast[1]
    if spread == 0:
        share = 0.0 if tokens >= slow[1] else 1.0
    else:
        share = float(np.clip((slow[1] - tokens) / spread, 0.0, 1.0))
    return share, random_mix(share, fast, slow)[0]


def frontier_violation(tokens: Sequence[float], accuracy: Sequence[float]) -> float:
    """The largest accuracy drop met when the points are taken by rising tokens (0.0: monotone).

    A bias sweep is a monotone frontier when spending more tokens never gives less accuracy; points
    with equal tokens are taken by rising accuracy.
    """
    if len(tokens) != len(accuracy):
        raise ValueError(f"accuracy: expected {len(tokens)} values like tokens, got {len(accuracy)}")
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i], accuracy[i]))
    best, worst = -np.inf, 0.0
    for i in order:
        worst = max(worst, best - accuracy[i])
        best = max(best, accuracy[i])
    return float(worst)
