"""CUDA tier: dispatch sends CUDA tensors to the "sdpa" backend, which matches the float64 reference.

Every test is marked cuda; the root conftest skips them where torch.cuda.is_available() is false.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import reference, reference_varlen

from pangu_core import attention as attn

pytestmark = pytest.mark.cuda

# Max abs error against float64: fp32 kernels reorder sums; bf16 rounds inputs, probabilities and output.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 4e-2}


def _qkv(batch, heads, kv_heads, q_len, k_len, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, h, n, dim, generator=g).to(dtype).cuda()
                 for h, n in ((heads, q_len), (kv_heads, k_len), (kv_heads, k_len)))


def _max_err(out, expected):
    return (out.detach().cpu().double() - expected.double()).abs().max().item()


@pytest.fixture(autouse=True)
def default_choice(monkeypatch):
    # The backend must come from the device, not from a forced name or the environment.
    monkeypatch.delenv(attn.ENV_VAR, raising=False)
    with attn.use_backend(None):
        yield


def test_dispatch_chooses_sdpa_for_cuda_tensors():
    q, _, _ = _qkv(1, 4, 2, 3, 3, 64, torch.float32)
    assert attn.backend_for(q.device).name == "sdpa"
    with attn.use_backend("cpu"), pytest.raises(ValueError, match="'cpu' runs on cpu, but the tensors are on cuda"):
        attn.attention(q, q, q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 16), (False, 16)])
def test_attention_matches_reference(dtype, causal, window):
    # Invariant: bottom-right causal (q_len < k_len), windows and GQA on the GPU, in q's dtype on q's device.
    q, k, v = _qkv(2, 8, 2, 33, 97, 59, dtype, seed=1)
    out = attn.attention(q, k, v, causal=causal, window=window)
    assert out.device == q.device and out.dtype == dtype and out.shape == q.shape
    assert _max_err(out, reference(q, k, v, causal=causal, window=window or 0)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_with_kv_lens(dtype):
    # Invariant: kv_lens on the GPU limits each sequence's keys; an empty cache gives a zero row.
    q, k, v = _qkv(3, 8, 2, 1, 130, 64, dtype, seed=2)
    lens = torch.tensor([130, 45, 0], dtype=torch.int32, device="cuda")
    out = attn.decode(q, k, v, lens)
    assert _max_err(out, reference(q, k, v, causal=True, kv_lens=lens.cpu())) < TOLERANCE[dtype]
    assert torch.all(out[2] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_matches_reference(dtype):
    g = torch.Generator().manual_seed(3)
    cu_q = torch.tensor([0, 1, 8, 105], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, 5, 12, 109], dtype=torch.int32, device="cuda")
    q = torch.randn(105, 8, 64, generator=g).to(dtype).cuda()
    k = torch.randn(109, 2, 64, generator=g).to(dtype).cuda()
    v = torch.randn(109, 2, 64, generator=g).to(dtype).cuda()
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, causal=True, window=32)
    assert out.device == q.device
    expected = reference_varlen(q, k, v, cu_q.cpu(), cu_k.cpu(), causal=True, window=32)
    assert _max_err(out, expected) < TOLERANCE[dtype]
