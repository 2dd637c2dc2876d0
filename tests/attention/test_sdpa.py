"""The "sdpa" backend (torch SDPA with our mask) on CPU tensors against the float64 reference.

The same backend serves CUDA tensors by default (test_cuda.py runs it there); here it is forced.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import reference, reference_varlen

from pangu_core import attention as attn


@pytest.fixture(autouse=True)
def sdpa():
    with attn.use_backend("sdpa"):
        yield


def _qkv(batch, heads, kv_heads, q_len, k_len, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, q_len, dim, generator=g).to(dtype),
            torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype),
            torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype))


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


# (batch, heads, kv_heads, q_len, k_len, head_dim): head dim 59, seqlen 97, q_len < k_len, GQA 1/4/8.
SHAPES = [(2, 4, 4, 97, 97, 59), (1, 8, 2, 33, 97, 64), (2, 8, 1, 1, 130, 59), (1, 4, 1, 97, 40, 80)]
# (causal, window): plain, bottom-right causal, causal window, one-sided window without causal.
MASKS = [(False, None), (True, None), (True, 9), (False, 9), (False, 500)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal, window", MASKS, ids=lambda x: str(x))
def test_matches_reference(shape, causal, window):
    # Invariant: sdpa computes the same masked attention as the reference, including bottom-right
    # causal alignment (SDPA's own is_causal is top-left) and zero rows for queries that see nothing.
    b, h, hk, sq, sk, d = shape
    q, k, v = _qkv(b, h, hk, sq, sk, d, seed=sq + sk)
    out = attn.attention(q, k, v, causal=causal, window=window)
    assert out.shape == q.shape and out.dtype == q.dtype and not out.isnan().any()
    assert _max_err(out, reference(q, k, v, causal=causal, window=window or 0)) < 2e-5


@pytest.mark.parametrize("window", [None, 5])
def test_decode_with_ragged_cache_lengths(window):
    # Invariant: each sequence sees only its first kv_lens[b] keys; an empty cache gives zeros.
    lens = torch.tensor([1, 60, 0, 97], dtype=torch.int32)
    q, k, v = _qkv(4, 8, 2, 2, 97, 59, seed=3)
    out = attn.decode(q, k, v, lens, window=window)
    assert _max_err(out, reference(q, k, v, causal=True, window=window or 0, kv_lens=lens)) < 2e-5
    assert torch.all(out[2] == 0)


@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 4), (False, 4)])
def test_varlen_matches_per_sequence_reference(causal, window):
    # Invariant: packed sequences are attended independently, each with its own lengths; a sequence
    # with queries but no keys gives zeros.
    g = torch.Generator().manual_seed(4)
    q_lens, k_lens = [1, 7, 0, 97, 30, 3], [5, 7, 3, 97, 64, 0]
    cu_q = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(k_lens).cumsum(0).tolist()], dtype=torch.int64)
    q = torch.randn(sum(q_lens), 8, 59, generator=g)
    k = torch.randn(sum(k_lens), 2, 59, generator=g)
    v = torch.randn(sum(k_lens), 2, 59, generator=g)
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, causal=causal, window=window)
    expected = reference_varlen(q, k, v, cu_q, cu_k, causal=causal, window=window or 0)
    assert _max_err(out, expected) < 2e-5
    assert torch.all(out[-3:] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_reference(dtype):
    # Invariant: 16-bit inputs give results within 16-bit rounding of the float64 reference.
    q, k, v = _qkv(1, 8, 2, 33, 97, 64, dtype=dtype, seed=5)
    out = attn.attention(q, k, v, causal=True, window=20)
    assert out.dtype == dtype
    assert _max_err(out, reference(q, k, v, causal=True, window=20)) < 2e-2


def test_gradients_match_reference():
    # Invariant: the sdpa backend is differentiable through the explicit mask path.
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
               for s in ((1, 4, 9, 59), (1, 2, 20, 59), (1, 2, 20, 59)))
    lens = torch.tensor([17])
    ours = torch.autograd.grad(attn.attention(q.float(), k.float(), v.float(), causal=True, window=6,
                                              kv_lens=lens).sum(), (q, k, v))
    expected = torch.autograd.grad(reference(q, k, v, causal=True, window=6, kv_lens=lens).sum(), (q, k, v))
    for a, e in zip(ours, expected):
        assert _max_err(a, e) < 1e-4
