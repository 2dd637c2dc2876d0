"""Inter-iteration merging of distillation rounds onto the base."""

from __future__ import annotations

import pytest
import torch

from pangu_core.distill.round_merge import (RoundMergeConfig, merge_round_checkpoints, merge_rounds,
                                            round_merge_config)
from pangu_core.config import ConfigError
from pangu_core.merge import load_checkpoint, save_checkpoint


def _rounds(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(40, 30, generator=g), "b": torch.randn(30, generator=g)}
    rounds = [{k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(n)]
    return base, rounds


# Default: base + mean of the round deltas (w_t = 1/T, lambda = 1), in float64 within float32 rounding.
def test_default_is_mean_of_round_deltas():
    base, rounds = _rounds()
    merged = merge_rounds(base, rounds)
    for k in base:
        want = base[k].double() + sum((r[k].double() - base[k].double()) / 3 for r in rounds)
        torch.testing.assert_close(merged[k].double(), want, rtol=1e-6, atol=1e-6)


# Explicit per-round weights and lambda follow base + lambda * sum_t w_t (theta_t - base).
def test_weights_and_lambda():
    base, rounds = _rounds(2)
    merged = merge_rounds(base, rounds, RoundMergeConfig(weights=(0.2, 1.0), lambda_=0.5))
    want = base["w"].double() + 0.5 * (0.2 * (rounds[0]["w"].double() - base["w"].double())
                                        + 1.0 * (rounds[1]["w"].double() - base["w"].double()))
    torch.testing.assert_close(merged["w"].double(), want, rtol=1e-6, atol=1e-6)


# TIES / DARE variants are selectable; DARE with density 1 equals plain task arithmetic.
def test_variants():
    base, rounds = _rounds()
    plain = merge_rounds(base, rounds)
    assert torch.equal(merge_rounds(base, rounds, RoundMergeConfig(method="dare_linear", density=1.0))["w"],
                       plain["w"])
    ties = merge_rounds(base, rounds, RoundMergeConfig(method="ties", density=0.3))
    changed = (ties["w"] != base["w"]).float().mean()
    assert 0.2 < changed < 0.95 and not torch.equal(ties["w"], plain["w"])
    a = merge_rounds(base, rounds, RoundMergeConfig(method="dare_ties", density=0.5, seed=1))
    b = merge_rounds(base, rounds, RoundMergeConfig(method="dare_ties", density=0.5, seed=1))
    assert torch.equal(a["w"], b["w"])


# Folder rounds merge like in-memory ones.
def test_round_checkpoints(tmp_path):
    base, rounds = _rounds()
    save_checkpoint(base, tmp_path / "base")
    paths = [save_checkpoint(r, tmp_path / f"round{t}") for t, r in enumerate(rounds)]
    out = merge_round_checkpoints(tmp_path / "base", paths, tmp_path / "merged", progress=False)
    merged = load_checkpoint(out)
    assert all(torch.equal(merged[k], merge_rounds(base, rounds)[k]) for k in base)


# Bad values are all reported at once, each naming its field; round arguments are checked too.
def test_errors():
    with pytest.raises(ConfigError) as info:
        RoundMergeConfig(method="slerp", density=2.0, seed=-1)
    assert info.value.problems == [
        "method: expected one of 'task_arithmetic', 'ties', 'dare_linear', 'dare_ties', got 'slerp' (str)",
        "density: expected a number in [0, 1], got 2.0",
        "seed: expected an int in [0, 2**64), got -1",
    ]
    with pytest.raises(ConfigError, match=r"weights: expected a non-empty list of finite numbers or null"):
        RoundMergeConfig(weights=())
    with pytest.raises(ValueError, match="weights: expected 2 values"):
        round_merge_config("b", ["r1", "r2"], RoundMergeConfig(weights=(1.0,)))
    with pytest.raises(ValueError, match="rounds: expected at least one"):
        round_merge_config("b", [])


# The config is a typed Config: dict and YAML round trips, unknown keys and wrong types refused.
def test_config_round_trip_and_strictness(tmp_path):
    config = RoundMergeConfig(method="dare_ties", weights=(0.25, 1), lambda_=0.5, density=0.7, seed=4)
    assert config.weights == (0.25, 1.0)
    assert RoundMergeConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "round.yaml"
    config.to_yaml(path)
    assert RoundMergeConfig.from_yaml(path) == config
    with pytest.raises(ConfigError, match="lambda: unknown key; known: method, weights, lambda_, density, seed"):
        RoundMergeConfig.from_dict({"lambda": 0.5})
    path.write_text("method: ties\nweights: [1, x]\n")
    with pytest.raises(ConfigError, match=r"round.yaml:2: weights\[1\]: expected a number, got 'x'"):
        RoundMergeConfig.from_yaml(path)
