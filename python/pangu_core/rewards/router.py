"""Reward sources in a registry, routing by task type, and adaptive weighting of their scores.

A source turns a batch of samples into one :class:`SourceScore` each. ``register_source(name)``
adds a factory ``factory(config: RewardConfig) -> RewardSource``; ``RouterConfig.routes`` says which
sources score which task type.

Combining (``AdaptiveWeights``), per sample over the sources routed to it:

    total = sum_i w_i * x_i
    x_i   = raw score s_i, or with ``normalise`` (after ``warmup`` observations of source i)
            the z-score (s_i - mean_i) / sqrt(var_i + variance_floor)
    w_i   = base_i * f_i / mean_j(f_j)            (j over the sample's sources; keeps the scale)
    f_i   = 1                                    weighting = "fixed"
          = 1 / (var_i + variance_floor)         weighting = "inverse_variance"
          = reliability_i                        weighting = "reliability"

mean_i, var_i and reliability_i (share of decided verdicts: no timeout, parsable evaluator) are
exponential moving averages with ``momentum``, updated with each batch before it is combined.
"""

from __future__ import annotations

import math as _math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

from pangu_core.rewards import shaping
from pangu_core.rewards.config import RewardConfig, RouterConfig
from pangu_core.rewards.types import Sample, SourceScore


class RewardSource(Protocol):
    """Anything that scores a batch of samples; ``close()`` frees its workers."""

    name: str

    def score(self, samples: Sequence[Sample]) -> list[SourceScore]: ...

    def close(self) -> None: ...


_REGISTRY: dict[str, Callable[[RewardConfig], RewardSource]] = {}


def register_source(name: str) -> Callable[[Callable[[RewardConfig], RewardSource]], Callable[[RewardConfig], RewardSource]]:
    """Decorator adding a source factory under ``name`` (replacing any earlier one)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")

    def add(factory: Callable[[RewardConfig], RewardSource]) -> Callable[[RewardConfig], RewardSource]:
        _REGISTRY[name] = factory
        return factory
    return add


def known_sources() -> list[str]:
    return sorted(_REGISTRY)


def create_source(name: str, config: RewardConfig) -> RewardSource:
    if name not in _REGISTRY:
        raise KeyError(f"reward source: unknown name {name!r}; known: {', '.join(known_sources())}")
    return _REGISTRY[name](config)


class _FunctionSource:
    """A source from a per-sample pure function (the shaping terms)."""

    def __init__(self, name: str, fn: Callable[[Sample], SourceScore]) -> None:
        self.name, self._fn = name, fn

    def score(self, samples: Sequence[Sample]) -> list[SourceScore]:
        return [self._fn(s) for s in samples]

    def close(self) -> None:
        pass


class _MathSource:
    name = "math"

    def __init__(self, config: RewardConfig) -> None:
        from pangu_core.rewards.math import MathVerifier

        self.verifier = MathVerifier(config.math)

    def score(self, samples: Sequence[Sample]) -> list[SourceScore]:
        missing = [i for i, s in enumerate(samples) if s.reference is None]
        if missing:
            raise ValueError(f"samples[{missing[0]}].reference: expected the gold answer for a math task, got None")
        return self.verifier.score([s.response for s in samples], [str(s.reference) for s in samples])

    def close(self) -> None:
        self.verifier.close()


class _CodeSource:
    name = "code"

    def __init__(self, config: RewardConfig) -> None:
        from pangu_core.rewards.code import CodeVerifier

        self.verifier = CodeVerifier(config.code)
        self.workers = config.code.workers

    def score(self, samples: Sequence[Sample]) -> list[SourceScore]:
        for i, s in enumerate(samples):
            if not s.reference:
                raise ValueError(f"samples[{i}].reference: expected CodeTest items for a code task")
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda s: self.verifier.score(s.response, s.reference), samples))

    def close(self) -> None:
        pass


class _JudgeSource:
    name = "judge"

    def __init__(self, config: RewardConfig) -> None:
        from pangu_core.rewards.judge import JudgeScorer

        self.scorer = JudgeScorer(config.judge)

    def score(self, samples: Sequence[Sample]) -> list[SourceScore]:
        refs = [None if s.reference is None else str(s.reference) for s in samples]
        rubrics = [s.metadata.get("rubric") for s in samples]
        return self.scorer.score([s.prompt for s in samples], [s.response for s in samples], refs, rubrics)

    def close(self) -> None:
        pass


register_source("math")(_MathSource)
register_source("code")(_CodeSource)
register_source("judge")(_JudgeSource)
register_source("format")(lambda c: _FunctionSource("format", lambda s: shaping.format_score(s.response, s.mode)))
register_source("repetition")(lambda c: _FunctionSource("repetition", lambda s: shaping.repetition_score(s.response, c.shaping)))
register_source("length")(lambda c: _FunctionSource("length", lambda s: shaping.length_score(s.response, s.mode, c.shaping)))


class AdaptiveWeights:
    """Running per-source statistics and the combination rule in this module's docstring."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, float]] = {}

    def observe(self, source: str, scores: Sequence[SourceScore]) -> None:
        m = self.config.momentum
        with self._lock:
            st = self._stats.setdefault(source, {"count": 0, "mean": 0.0, "var": 0.0, "reliability": 1.0})
            for s in scores:
                if st["count"] == 0:
                    st["mean"] = s.score
                else:
                    delta = s.score - st["mean"]
                    st["mean"] += (1 - m) * delta
                    st["var"] = m * (st["var"] + (1 - m) * delta * delta)
                st["reliability"] = m * st["reliability"] + (1 - m) * (1.0 if s.decided else 0.0)
                st["count"] += 1

    def stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {k: dict(v) for k, v in self._stats.items()}

    def combine(self, scores: dict[str, SourceScore]) -> float:
        """Total reward of one sample from its sources' scores."""
        cfg = self.config
        with self._lock:
            stats = {name: dict(self._stats.get(name, {"count": 0, "mean": 0.0, "var": 0.0, "reliability": 1.0}))
                     for name in scores}
        factors = {}
        for name, st in stats.items():
            if cfg.weighting == "inverse_variance":
                factors[name] = 1.0 / (st["var"] + cfg.variance_floor)
            elif cfg.weighting == "reliability":
                factors[name] = st["reliability"]
            else:
                factors[name] = 1.0
        mean_factor = sum(factors.values()) / len(factors) if factors else 1.0
        total = 0.0
        for name, verdict in scores.items():
            st = stats[name]
            x = verdict.score
            if cfg.normalise and st["count"] >= max(cfg.warmup, 2):
                x = (x - st["mean"]) / _math.sqrt(st["var"] + cfg.variance_floor)
            weight = cfg.weight_of(name) * (factors[name] / mean_factor if mean_factor > 0 else 0.0)
            total += weight * x
        return total
