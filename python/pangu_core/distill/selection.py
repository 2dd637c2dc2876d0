"""Model-aware data selection for iterative distillation: complexity, weights, draws, token budgets.

Each round scores every candidate prompt by how hard it is *for the current student*: with ``k``
sampled answers of which ``correct`` are right, its complexity is ``C = 1 - correct / k`` (0: the
student always solves it, 1: never). Prompts of middling complexity teach the most, so the default
draw weights them by a Gaussian bump around ``mu``::

    w = (1 - floor) * exp(-(C - mu)^2 / (2 sigma^2)) + floor

and draws ``n`` prompts without replacement with probability proportional to ``w`` (the floor keeps
every prompt possible). The other strategies are the comparisons a fair ablation needs:

* ``random``: uniform without replacement (what selection is compared against);
* ``level_matched_random``: the level histogram the gaussian draw would have picked (same seed),
  filled uniformly within each level: it separates "which levels" from "which prompts in a level";
* ``fixed_levels``: uniform over the prompts of given levels (a skill schedule, for merging studies).

All functions are pure numpy and deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("gaussian", "random", "level_matched_random", "fixed_levels")
# Bin edges of the complexity histograms in reports: [0, 0.1), ..., [0.9, 1.0].
HISTOGRAM_BINS = 10
# Complexity counted as "middling" in reports: MID_LOW <= C <= MID_HIGH.
MID_LOW, MID_HIGH = 0.25, 0.75


def _as_array(values, name: str, dtype=float) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D sequence of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {array.shape}")
    return array


def complexity(correct: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """``1 - correct / k`` per prompt (float64); ``correct`` counts right answers out of ``k`` samples."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    counts = _as_array(correct, "correct")
    if counts.size and (np.any(counts != np.round(counts)) or counts.min() < 0 or counts.max() > k):
        raise ValueError(f"correct: expected integer counts in [0, k={k}]")
    return 1.0 - counts / k


def gaussian_weights(c: Sequence[float] | np.ndarray, mu: float = 0.5, sigma: float = 0.2,
                     floor: float = 0.05) -> np.ndarray:
    """``(1 - floor) * exp(-(C - mu)^2 / (2 sigma^2)) + floor`` per prompt (float64, in [floor, 1])."""
    values = _check_complexity(c)
    if not (isinstance(mu, (int, float)) and math.isfinite(mu)):
        raise ValueError(f"mu: expected a finite number, got {mu!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma: expected a finite number > 0, got {sigma!r}")
    if not (isinstance(floor, (int, float)) and 0.0 <= floor <= 1.0):
        raise ValueError(f"floor: expected a number in [0, 1], got {floor!r}")
    return (1.0 - floor) * np.exp(-((values - mu) ** 2) / (2.0 * sigma**2)) + floor


def _check_complexity(c) -> np.ndarray:
    values = _as_array(c, "C")
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0):
        raise ValueError("C: expected complexities in [0, 1]")
    return values


def _weighted_draw(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices without replacement, each next one with probability proportional to its weight.

    Gumbel top-k: the ``n`` largest of ``log w + Gumbel noise`` are distributed exactly as successive
    draws without replacement. Zero weights are drawn only after every positive one.
    """
    with np.errstate(divide="ignore"):
        keys = np.log(weights) + rng.gumbel(size=weights.size)
    order = np.argsort(-keys, kind="stable")
    return np.sort(order[:n])


def select(c: Sequence[float] | np.ndarray, n: int, strategy: str = "gaussian",
           levels: Sequence[int] | np.ndarray | None = None, seed: int = 0, *, mu: float = 0.5,
           sigma: float = 0.2, floor: float = 0.05, fixed: Sequence[int] = ()) -> np.ndarray:
    """Indices (sorted, int64) of the ``n`` prompts a round trains on; see the module docstring.

    ``levels`` (one per prompt) is needed by ``level_matched_random`` and ``fixed_levels``;
    ``fixed`` names the levels ``fixed_levels`` draws from. Fewer than ``n`` candidates (of the
    fixed levels, for ``fixed_levels``) are all taken.
    """
    values = _check_complexity(c)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    level_array = None
    if levels is not None:
        level_array = _as_array(levels, "levels", dtype=np.int64)
        if level_array.size != values.size:
            raise ValueError(f"levels: expected {values.size} values (one per prompt), got {level_array.size}")
    if strategy in ("level_matched_random", "fixed_levels") and level_array is None:
        raise ValueError(f"levels: strategy {strategy!r} needs the level of every prompt")
    n = min(int(n), values.size)
    rng = np.random.default_rng([int(seed), STRATEGIES.index(strategy)])
    if strategy == "gaussian":
        return _weighted_draw(gaussian_weights(values, mu, sigma, floor), n, rng)
    if strategy == "random":
        return np.sort(rng.choice(values.size, size=n, replace=False)).astype(np.int64)
    if strategy == "fixed_levels":
        if not fixed:
            raise ValueError("fixed: strategy 'fixed_levels' needs at least one level")
        candidates = np.flatnonzero(np.isin(level_array, np.asarray(list(fixed), dtype=np.int64)))
        take = min(n, candidates.size)
        return np.sort(rng.choice(candidates, size=take, replace=False)).astype(np.int64)
    # level_matched_random: the gaussian arm's level counts (its own seed stream), uniform within levels
    picked = select(values, n, "gaussian", seed=seed, mu=mu, sigma=sigma, floor=floor)
    chosen = []
    for level, count in zip(*np.unique(level_array[picked], return_counts=True)):
        members = np.flatnonzero(level_array == level)
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def histogram(c: Sequence[float] | np.ndarray, bins: int = HISTOGRAM_BINS) -> list[int]:
    """Counts of complexities in ``bins`` equal bins over [0, 1] (1.0 falls in the last)."""
    values = _check_complexity(c)
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins).astype(int).tolist()


def mid_share(c: Sequence[float] | np.ndarray) -> float:
    """Share of prompts with ``MID_LOW <= C <= MID_HIGH`` (NaN for no prompts)."""
    values = _check_complexity(c)
    return float(np.mean((values >= MID_LOW) & (values <= MID_HIGH))) if values.size else float("nan")


def steps_for_tokens(examples: Sequence, batch_size: int, tokens: int) -> int:
    """Optimizer steps whose batches hold about ``tokens`` response tokens of ``examples`` in all.

    Batches are drawn uniformly from ``examples`` (each with ``response_ids``, or an int count), so a
    step covers ``batch_size`` times their mean response length: arms whose data differ in length
    get the same token budget, not the same step count. At least one step.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens: expected an int >= 1, got {tokens!r}")
    if not examples:
        raise ValueError("examples: expected at least one example")
    lengths = [e if isinstance(e, (int, np.integer)) else len(e.response_ids) for e in examples]
    mean = sum(lengths) / len(lengths)
    if mean <= 0:
        raise ValueError("examples: expected responses with at least one token")
    return max(1, round(tokens / (batch_size * mean)))
