"""CPU simulation of the Ascend C kernel's schedule against a float64 reference and torch SDPA with an
explicit bottom-right causal mask: float32/float16/bfloat16, prefill and decode, GQA, ragged caches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from attention_reference import reference_mask

from pangu_core.attention.npu import AscendHardware, plan_tiling, simulate


def _reference64(q, k, v, causal: bool, scale: float, kv_lens: list[int] | None) -> torch.Tensor:
    """Float64 attention; rows that see no key are zeros."""
    group = q.shape[1] // k.shape[1]
    q64, k64, v64 = q.double(), k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    mask = reference_mask(q.shape[0], q.shape[2], k.shape[2], causal=causal, kv_lens=kv_lens)
    scores = (q64 @ k64.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v64


def _sdpa(q, k, v, causal: bool, scale: float, kv_lens: list[int] | None) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    mask = reference_mask(q.shape[0], q.shape[2], k.shape[2], causal=causal, kv_lens=kv_lens)
    return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                          attn_mask=mask, scale=scale)


def _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    return q, k, v


def _max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref).abs().max().item()


CASES = [
    # batch, heads, kv_heads, q_len, kv_len, head_dim, causal
    (2, 4, 4, 7, 7, 64, True),      # prefill, MHA
    (1, 8, 2, 97, 97, 80, True),    # prefill, GQA 4, head_dim 80
    (1, 8, 1, 97, 97, 128, False),  # prefill, MQA-like GQA 8, non-causal
    (1, 8, 1, 33, 97, 128, True),   # chunked prefill: q_len < kv_len, bottom-right aligned
    (2, 8, 8, 1, 1025, 64, True),   # decode, MHA
    (1, 16, 2, 1, 1025, 128, True), # decode, GQA 8
    (1, 2, 2, 1025, 1025, 64, True),  # long prefill
]


# Within twice the error of SDPA in the same dtype against the float64 reference (float32: tight).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}kv{}q{}s{}d{}{}".format(*c[:6], "c" if c[6] else ""))
def test_simulation_matches_reference(dtype: torch.dtype, case: tuple) -> None:
    batch, heads, kv_heads, q_len, kv_len, head_dim, causal = case
    q, k, v = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype)
    scale = 1.0 / math.sqrt(head_dim)
    out = simulate(q, k, v, causal=causal)
    assert out.dtype == dtype and out.shape == q.shape
    ref = _reference64(q, k, v, causal, scale, None)
    err = _max_err(out, ref)
    sdpa_err = _max_err(_sdpa(q, k, v, causal, scale, None), ref)
    if dtype == torch.float32:
        assert err < 2e-5
    else:
        assert err <= 2 * sdpa_err + 1e-3, (err, sdpa_err)


# Decode against ragged cache lengths, including an empty cache (zeros) and a 1-token cache.
@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_len", [1, 4])
def test_ragged_cache_lengths(dtype: torch.dtype, q_len: int) -> None:
    lens = [1025, 7, 0, 1, 97]
    q, k, v = _inputs(5, 8, 2, q_len, 1025, 128, dtype, seed=3)
    kv_lens = torch.tensor(lens, dtype=torch.int64)
    out = simulate(q, k, v, causal=True, kv_lens=kv_lens)
    ref = _reference64(q, k, v, True, 1 / math.sqrt(128), lens)
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert _max_err(out, ref) < tol
    # The padding beyond each cache length never matters.
    k2, v2 = k.clone(), v.clone()
    for b, length in enumerate(lens):
        k2[b, :, length:] = 1e4
        v2[b, :, length:] = float("nan")
    assert torch.equal(simulate(q, k2, v2, causal=True, kv_lens=kv_lens), out)


# q_len > kv_len with causal: the first rows see no key and are zeros, the rest match.
def test_rows_without_keys_are_zero() -> None:
    q, k, v = _inputs(1, 2, 2, 9, 4, 16, torch.float32)
    out = simulate(q, k, v, causal=True, scale=0.5)
    assert torch.equal(out[:, :, :5], torch.zeros_like(out[:, :, :5]))
    assert _max_err(out, _reference64(q, k, v, True, 0.5, None)) < 1e-5


# The core split changes nothing: every unit runs the same arithmetic whichever core owns it.
@pytest.mark.sanitize
def test_result_independent_of_core_count() -> None:
    q, k, v = _inputs(2, 8, 2, 97, 97, 64, torch.float16, seed=1)
    one, plan_one = simulate(q, k, v, causal=True, hardware=AscendHardware(num_cores=1), return_plan=True)
    many, plan_many = simulate(q, k, v, causal=True, hardware=AscendHardware(num_cores=5), return_plan=True)
    assert (plan_one["block_q"], plan_one["block_kv"]) == (plan_many["block_q"], plan_many["block_kv"])
    assert plan_many["used_cores"] == 5
    assert torch.equal(one, many)


# Different block sizes (from different UB sizes) reorder the online softmax but agree closely.
def test_block_sizes_change_order_not_result() -> None:
    q, k, v = _inputs(1, 4, 4, 97, 97, 64, torch.float32, seed=2)
    small, plan_small = simulate(q, k, v, causal=True, hardware=AscendHardware(ub_bytes=48 * 1024), return_plan=True)
    large, plan_large = simulate(q, k, v, causal=True, return_plan=True)
    assert (plan_small["block_q"], plan_small["block_kv"]) != (plan_large["block_q"], plan_large["block_kv"])
    assert _max_err(small, large.double()) < 2e-6


# The simulation executes exactly the plan the tiling computes for the kernel's 2-byte tiles.
def test_simulation_runs_the_planned_schedule() -> None:
    q, k, v = _inputs(2, 8, 2, 97, 200, 80, torch.bfloat16)
    lens = torch.tensor([200, 150], dtype=torch.int32)
    _, plan = simulate(q, k, v, causal=True, kv_lens=lens, return_plan=True)
    expected = plan_tiling(2, 8, 2, 97, 200, 80, causal=True, kv_lens=[200, 150])
    assert plan == expected


# Non-contiguous views are accepted (copied to contiguous) and give the same result.
def test_non_contiguous_inputs() -> None:
    q, k, v = _inputs(1, 4, 2, 16, 32, 64, torch.float32)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert not qt.is_contiguous()
    assert torch.equal(simulate(qt, k, v, causal=False), simulate(q, k, v, causal=False))


def test_simulate_errors() -> None:
    q, k, v = _inputs(1, 4, 2, 8, 8, 64, torch.float32)
    with pytest.raises(TypeError, match="k: expected float32 like q, got float16"):
        simulate(q, k.half(), v, causal=False)
    with pytest.raises(TypeError, match="q: expected float32 or float16 or bfloat16"):
        simulate(q.double(), k, v, causal=False)
    with pytest.raises(ValueError, match="q: expected 4 dimensions"):
        simulate(q[0], k, v, causal=False)
    with pytest.raises(ValueError, match="v: expected shape"):
        simulate(q, k, v[:, :, :4], causal=False)
    with pytest.raises(ValueError, match="k: expected kv_heads dividing heads=4"):
        simulate(q, k[:, :1].expand(1, 3, 8, 64), v[:, :1].expand(1, 3, 8, 64), causal=False)
    with pytest.raises(ValueError, match="head_dim: expected a multiple of 16"):
        simulate(q[..., :40], k[..., :40], v[..., :40], causal=False)
    with pytest.raises(ValueError, match="kv_lens: expected values in \\[0, kv_len=8\\]"):
        simulate(q, k, v, causal=False, kv_lens=torch.tensor([9]))
    with pytest.raises(TypeError, match="kv_lens: expected int32 or int64"):
        simulate(q, k, v, causal=False, kv_lens=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="kv_lens: expected 1 lengths"):
        simulate(q, k, v, causal=False, kv_lens=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="scale: expected a finite number > 0"):
        simulate(q, k, v, causal=False, scale=-1.0)
    with pytest.raises(TypeError, match="causal: expected a bool"):
        simulate(q, k, v, causal="yes")
    with pytest.raises(TypeError, match="q: expected a torch.Tensor"):
        simulate(q.numpy(), k, v, causal=False)
