"""Routing by task type, the source registry, and the adaptive weighting rules."""

from __future__ import annotations

import pytest

from pangu_core.rewards.config import RewardConfig, RouterConfig
from pangu_core.rewards.router import AdaptiveWeights, create_source, known_sources, register_source
from pangu_core.rewards.types import SourceScore


def test_registry_lists_known_names():
    assert {"math", "code", "judge", "format", "repetition", "length"} <= set(known_sources())
    with pytest.raises(KeyError, match="known: .*math"):
        create_source("nope", RewardConfig())


def test_routes_and_unknown_task_type():
    cfg = RouterConfig()
    assert "math" in cfg.sources_for("math") and "code" not in cfg.sources_for("math")
    with pytest.raises(KeyError, match="known"):
        cfg.sources_for("poetry")


def test_fixed_weights_are_a_weighted_sum():
    w = AdaptiveWeights(RouterConfig(weights=(("math", 1.0), ("code", 0.5))))
    assert w.combine({"math": SourceScore(1.0), "code": SourceScore(0.5)}) == pytest.approx(1.25)


def test_inverse_variance_trusts_the_steadier_source():
    w = AdaptiveWeights(RouterConfig(weights=(("math", 1.0), ("judge", 1.0)), weighting="inverse_variance",
                                     momentum=0.9))
    w.observe("math", [SourceScore(0.5)] * 50)  # steady
    w.observe("judge", [SourceScore(float(i % 2)) for i in range(50)])  # noisy
    total = w.combine({"math": SourceScore(1.0), "judge": SourceScore(0.0)})
    assert total > 1.5  # the steady source's 1.0 dominates; the mean weight stays 1
    assert w.combine({"math": SourceScore(0.0), "judge": SourceScore(1.0)}) < 0.5


def test_reliability_discounts_undecided_sources():
    w = AdaptiveWeights(RouterConfig(weights=(("math", 1.0), ("judge", 1.0)), weighting="reliability", momentum=0.8))
    w.observe("math", [SourceScore(1.0)] * 20)  # always decided
    w.observe("judge", [SourceScore(0.5, "timeout", decided=False)] * 20)  # never decided
    stats = w.stats()
    assert stats["math"]["reliability"] == pytest.approx(1.0) and stats["judge"]["reliability"] < 0.05
    assert w.combine({"math": SourceScore(1.0), "judge": SourceScore(1.0)}) == pytest.approx(
        2 * 1.0 / (1 + stats["judge"]["reliability"]) + 2 * stats["judge"]["reliability"] / (1 + stats["judge"]["reliability"]))


def test_normalisation_makes_scales_comparable():
    w = AdaptiveWeights(RouterConfig(weights=(("math", 1.0),), normalise=True, warmup=10, momentum=0.9,
                                     variance_floor=1e-6))
    w.observe("math", [SourceScore(0.9 + 0.01 * (i % 3)) for i in range(200)])
    mean = w.stats()["math"]["mean"]
    assert abs(w.combine({"math": SourceScore(mean)})) < 1e-6
    assert w.combine({"math": SourceScore(1.0)}) > 3  # far above a source that always says ~0.91


def test_custom_source_is_routed():
    @register_source("always_half")
    class Half:
        name = "always_half"

        def __init__(self, config):
            pass

        def score(self, samples):
            return [SourceScore(0.5) for _ in samples]

        def close(self):
            pass

    from pangu_core.rewards import RewardScorer, Sample

    cfg = RewardConfig.from_dict({"router": {"routes": {"poetry": ["always_half"]}, "weights": {"always_half": 2.0}}})
    with RewardScorer(cfg) as scorer:
        [result] = scorer.score([Sample("poetry", "p", "r")])
    assert result.reward == 1.0 and result.scores == {"always_half": 0.5}
