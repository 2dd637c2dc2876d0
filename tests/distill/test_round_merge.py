"""Inter-iteration merging of distillation rounds onto the base."""

from __future__ import annotations

import pytest
import torch

from pangu_core.distill.round_merge import (RoundMergeConfig, merge_round_checkpoints, merge_rounds,
                                            round_merge_config)
from pangu_core.merge_files import load_checkpoint, save_checkpoint


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


def test_errors():
    with pytest.raises(ValueError) as info:
        RoundMergeConfig(method="slerp", density=2.0, seed=-1)
    assert "method:" in str(info.value) and "density:" in str(info.value) and "seed:" in str(info.value)
    with pytest.raises(ValueError, match="weights: expected 2 values"):
        round_merge_config("b", ["r1", "r2"], RoundMergeConfig(weights=(1.0,)))
    with pytest.raises(ValueError, match="rounds: expected at least one"):
        round_merge_config("b", [])
    assert RoundMergeConfig.from_dict({"lambda": 0.5, "weights": [1, 2]}).weights == (1, 2)
