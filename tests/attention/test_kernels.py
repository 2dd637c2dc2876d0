"""CPU attention kernels against a float64 reference, on every ISA path this machine has."""

from __future__ import annotations

import pytest
import torch
from attention_reference import reference, reference_varlen

import pangu_core
from pangu_core import attention as attn


ISAS = pangu_core.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    pangu_core.set_isa(request.param)
    yield request.param
    pangu_core.reset_isa()


def _qkv(batch, heads, kv_heads, q_len, k_len, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype)
    return q, k, v


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


# Shapes: (batch, heads, kv_heads, q_len, k_len, head_dim). Awkward lengths straddle key blocks
# (64) and tile widths; GQA ratios 1, 4, 8; head dims 64, 80, 128 and odd 59.
SHAPES = [
    (2, 4, 4, 1, 1, 64),
    (2, 4, 1, 7, 7, 80),
    (1, 8, 1, 97, 97, 128),
    (2, 8, 2, 97, 130, 59),
    (1, 4, 4, 33, 200, 96),
    (1, 2, 2, 7, 97, 256),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_float64_reference_on_every_isa(isa, shape, causal):
    # Invariant: every dispatch path computes softmax(q k^T / sqrt(d)) v with bottom-right causal
    # alignment and GQA sharing, to float32 accuracy.
    b, h, hk, sq, sk, d = shape
    q, k, v = _qkv(b, h, hk, sq, sk, d)
    out = attn.attention(q, k, v, causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert _max_err(out, reference(q, k, v, causal=causal)) < 2e-5


@pytest.mark.sanitize
@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_1025(causal):
    # Invariant: many key blocks and query blocks (with the threaded split) stay exact at seq 1025.
    q, k, v = _qkv(1, 4, 1, 1025, 1025, 64, seed=3)
    out = attn.attention(q, k, v, causal=causal)
    assert _max_err(out, reference(q, k, v, causal=causal)) < 2e-5


def test_long_sequence_1025_scalar_path():
    # Invariant: the scalar path agrees on the long shape too (one combination, it is slow).
    q, k, v = _qkv(1, 2, 1, 1025, 1025, 80, seed=4)
    pangu_core.set_isa("scalar")
    try:
        out = attn.attention(q, k, v, causal=True)
    finally:
        pangu_core.reset_isa()
    assert _max_err(out, reference(q, k, v, causal=True)) < 2e-5


@pytest.mark.parametrize("window", [1, 5, 64, 200])
def test_sliding_window(isa, window):
    # Invariant: query i sees keys in (pos_i - window, pos_i] only.
    q, k, v = _qkv(1, 4, 2, 70, 150, 64, seed=5)
    out = attn.attention(q, k, v, causal=True, window=window)
    assert _max_err(out, reference(q, k, v, causal=True, window=window)) < 2e-5


@pytest.mark.parametrize("window", [1, 9, 300])
def test_window_without_causal_keeps_later_keys(isa, window):
    # Invariant: without causal the window bounds only keys before the query's position
    # (pos = k_len - q_len + i): keys after it stay visible, on every dispatch path.
    q, k, v = _qkv(2, 4, 2, 41, 97, 59, seed=15)
    out = attn.attention(q, k, v, causal=False, window=window)
    assert _max_err(out, reference(q, k, v, causal=False, window=window)) < 2e-5


@pytest.mark.parametrize("causal", [False, True])
def test_window_with_ragged_cache_lengths(isa, causal):
    # Invariant: windows count back from each sequence's own last key (kv_lens[b]), not from k_len.
    lens = torch.tensor([97, 40, 3], dtype=torch.int64)
    q, k, v = _qkv(3, 4, 1, 5, 97, 64, seed=16)
    out = attn.attention(q, k, v, causal=causal, window=7, kv_lens=lens)
    assert _max_err(out, reference(q, k, v, causal=causal, window=7, kv_lens=lens)) < 2e-5


def test_custom_scale_and_strided_inputs():
    # Invariant: a (batch, seq, heads, dim) tensor transposed to (batch, heads, seq, dim) is read in
    # place through its strides, and the scale argument is honoured.
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 19, 4, 64, generator=g).transpose(1, 2)
    k = torch.randn(2, 23, 2, 64, generator=g).transpose(1, 2)
    v = torch.randn(2, 23, 2, 64, generator=g).transpose(1, 2)
    out = attn.attention(q, k, v, causal=True, scale=0.3)
    assert _max_err(out, reference(q, k, v, causal=True, scale=0.3)) < 2e-5


def test_decode_with_ragged_cache_lengths(isa):
    # Invariant: one new token per sequence sees exactly its own kv_lens[b] cached keys, including
    # the long-cache split across threads (flash-decoding) and an empty cache (zero output).
    torch.manual_seed(7)
    lens = torch.tensor([1, 700, 0, 1500], dtype=torch.int32)
    q, k, v = _qkv(4, 8, 2, 1, 1500, 128, seed=7)
    out = attn.decode(q, k, v, lens)
    expected = reference(q, k, v, causal=True, kv_lens=lens)
    assert _max_err(out, expected) < 2e-5
    assert torch.all(out[2] == 0)


@pytest.mark.sanitize
def test_decode_split_single_sequence():
    # Invariant: a single long sequence with one kv head (work split across threads) is exact.
    pangu_core.set_num_threads(2)
    q, k, v = _qkv(1, 4, 1, 2, 3000, 64, seed=8)
    lens = torch.tensor([2999])
    out = attn.decode(q, k, v, lens)
    assert _max_err(out, reference(q, k, v, causal=True, kv_lens=lens)) < 2e-5


def test_fully_masked_rows_are_zero_not_nan():
    # Invariant: causal with more queries than keys leaves early queries seeing nothing: zeros.
    q, k, v = _qkv(1, 2, 2, 10, 4, 64, seed=9)
    out = attn.attention(q, k, v, causal=True)
    assert not torch.isnan(out).any()
    assert torch.all(out[:, :, :6] == 0)
    assert _max_err(out, reference(q, k, v, causal=True)) < 2e-5


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_per_sequence_reference(isa, causal):
    # Invariant: packed sequences are independent; each is attended with its own lengths.
    g = torch.Generator().manual_seed(10)
    q_lens, k_lens = [1, 7, 0, 97, 30], [5, 7, 3, 97, 64]
    cu_q = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(k_lens).cumsum(0)), dtype=torch.int64)
    q = torch.randn(sum(q_lens), 8, 80, generator=g)
    k = torch.randn(sum(k_lens), 2, 80, generator=g)
    v = torch.randn(sum(k_lens), 2, 80, generator=g)
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, causal=causal)
    assert _max_err(out, reference_varlen(q, k, v, cu_q, cu_k, causal=causal)) < 2e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 8, 2, 97, 97, 128), (2, 4, 1, 33, 130, 64), (1, 8, 1, 1, 600, 80)],
                         ids=lambda s: "x".join(map(str, s)))
def test_half_precision_error_within_twice_sdpa(isa, dtype, shape):
    # Invariant: 16-bit inputs accumulate in float32, so the error against float64 (from the same
    # rounded inputs) is at most twice that of torch SDPA in the same dtype.
    b, h, hk, sq, sk, d = shape
    q, k, v = _qkv(b, h, hk, sq, sk, d, dtype=dtype, seed=11)
    causal = sq > 1
    expected = reference(q, k, v, causal=causal)
    ours = attn.attention(q, k, v, causal=causal)
    assert ours.dtype == dtype
    with attn.use_backend("sdpa"):
        theirs = attn.attention(q, k, v, causal=causal)
    assert _max_err(ours, expected) <= 2 * _max_err(theirs, expected) + 1e-6


@pytest.mark.sanitize
def test_threads_do_not_change_results():
    # Invariant: the partition over threads is deterministic per row: 1 and 2 threads agree bit for bit.
    q, k, v = _qkv(2, 8, 2, 130, 130, 64, seed=12)
    before = pangu_core.get_num_threads()
    try:
        pangu_core.set_num_threads(1)
        one = attn.attention(q, k, v, causal=True)
        pangu_core.set_num_threads(2)
        two = attn.attention(q, k, v, causal=True)
    finally:
        pangu_core.set_num_threads(before)
    assert torch.equal(one, two)


def test_bfloat16_window_and_varlen_on_best_path():
    # Invariant: the best bfloat16 path (AMX tiles where present) masks windows and packed
    # sequences like the float64 reference, within twice SDPA's bfloat16 error.
    q, k, v = _qkv(1, 8, 2, 150, 200, 96, dtype=torch.bfloat16, seed=13)
    expected = reference(q, k, v, causal=True, window=37)
    ours = attn.attention(q, k, v, causal=True, window=37)
    with attn.use_backend("sdpa"):
        theirs = attn.attention(q, k, v, causal=True, window=37)
    assert _max_err(ours, expected) <= 2 * _max_err(theirs, expected) + 1e-6
    g = torch.Generator().manual_seed(14)
    cu_q = torch.tensor([0, 40, 40, 140], dtype=torch.int32)
    cu_k = torch.tensor([0, 50, 60, 260], dtype=torch.int32)
    qv = torch.randn(140, 8, 64, generator=g).bfloat16()
    kv = torch.randn(260, 4, 64, generator=g).bfloat16()
    vv = torch.randn(260, 4, 64, generator=g).bfloat16()
    out = attn.attention_varlen(qv, kv, vv, cu_q, cu_k, causal=True)
    assert _max_err(out, reference_varlen(qv, kv, vv, cu_q, cu_k, causal=True)) < 0.03
