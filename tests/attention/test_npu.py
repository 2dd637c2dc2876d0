"""The NPU attention choice: with torch_npu absent it reports unavailability clearly and validates
input first; the backend switch is a checked registry; the npu tier compares against SDPA on CPU."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from attention_reference import reference_mask

from pangu_core import device
from pangu_core.attention import npu as npu_attention
from pangu_core.attention.npu import attention_bnsd, visible_key_mask


@pytest.fixture
def no_torch_npu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes this process look like one without torch_npu, whatever is installed."""
    monkeypatch.setattr(device, "npu_module_installed", lambda: False)


@pytest.fixture(autouse=True)
def default_backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(npu_attention.ENV_VAR, raising=False)
    npu_attention.set_backend(None)
    yield
    npu_attention.set_backend(None)


def _qkv(dtype=torch.float16, batch=2, heads=8, kv_heads=2, q_len=5, kv_len=9, head_dim=64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, q_len, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    return q, k, v


# Without torch_npu: unavailable, and a call says why instead of failing somewhere inside.
def test_unavailable_without_torch_npu(no_torch_npu: None) -> None:
    assert npu_attention.is_available() is False
    q, k, v = _qkv()
    for training in (False, True):
        with pytest.raises(RuntimeError, match="npu attention: not usable here: torch_npu is not installed"):
            attention_bnsd(q, k, v, causal=True, scale=None, training=training)


# Asking about NPUs never imports torch_npu where it is not installed.
@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed here")
def test_probe_does_not_import_torch_npu() -> None:
    assert npu_attention.is_available() is False
    assert "torch_npu" not in sys.modules


# Input errors are reported before the availability check, naming the argument.
def test_front_door_errors(no_torch_npu: None) -> None:
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="k: expected float16 like q, got float32"):
        attention_bnsd(q, k.float(), v, causal=True, scale=None, training=False)
    with pytest.raises(TypeError, match="q: expected float32 or float16 or bfloat16, got int64"):
        attention_bnsd(q.long(), k, v, causal=True, scale=None, training=False)
    with pytest.raises(ValueError, match="q: expected 4 dimensions"):
        attention_bnsd(q[0], k, v, causal=True, scale=None, training=False)
    with pytest.raises(ValueError, match="k: expected kv_heads dividing heads=8"):
        attention_bnsd(q, k[:, :1].repeat(1, 3, 1, 1), v[:, :1].repeat(1, 3, 1, 1), causal=True, scale=None,
                       training=False)
    with pytest.raises(ValueError, match="k: expected shape \\(2, kv_heads, kv_len, 64\\)"):
        attention_bnsd(q, k[..., :32], v[..., :32], causal=True, scale=None, training=False)
    with pytest.raises(ValueError, match="v: expected shape"):
        attention_bnsd(q, k, v[:, :, :3], causal=True, scale=None, training=False)
    with pytest.raises(TypeError, match="causal: expected a bool"):
        attention_bnsd(q, k, v, causal=None, scale=None, training=False)
    with pytest.raises(TypeError, match="training: expected a bool"):
        attention_bnsd(q, k, v, causal=True, scale=None, training="no")
    with pytest.raises(ValueError, match="scale: expected a finite number > 0"):
        attention_bnsd(q, k, v, causal=True, scale=float("nan"), training=False)
    with pytest.raises(ValueError, match="kv_lens: expected 2 lengths"):
        attention_bnsd(q, k, v, causal=True, scale=None, training=False, kv_lens=torch.tensor([3]))
    with pytest.raises(ValueError, match="kv_lens: expected values in \\[0, kv_len=9\\], got 10"):
        attention_bnsd(q, k, v, causal=True, scale=None, training=False, kv_lens=torch.tensor([3, 10]))


# The backend switch is a registry: unknown names list the known ones; env var and setter both work.
def test_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert npu_attention.backends() == ["ascendc", "fused"]
    assert npu_attention.get_backend() == "fused"
    with pytest.raises(ValueError, match="backend: expected one of ascendc, fused, got 'cuda'"):
        npu_attention.set_backend("cuda")
    npu_attention.set_backend("ascendc")
    assert npu_attention.get_backend() == "ascendc"
    npu_attention.set_backend(None)
    monkeypatch.setenv(npu_attention.ENV_VAR, "ascendc")
    assert npu_attention.get_backend() == "ascendc"
    monkeypatch.setenv(npu_attention.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="PANGU_NPU_ATTENTION: expected one of ascendc, fused"):
        npu_attention.get_backend()


# The Ascend C op is reported as built only when both the kernel and its operator library exist.
def test_ascendc_built_matches_build_info() -> None:
    import pangu_core

    built = pangu_core.build_info()["ascend"]
    assert npu_attention.ascendc_built() == (built and npu_attention._OP_LIBRARY.is_file())


# The mask encodes bottom-right causal alignment per sequence and the cache lengths.
def test_visible_key_mask_bottom_right() -> None:
    mask = visible_key_mask(3, 6, [6, 2, 0], True, 3)
    assert mask.shape == (3, 1, 3, 6)
    for b, length in enumerate([6, 2, 0]):
        for i in range(3):
            for j in range(6):
                assert bool(mask[b, 0, i, j]) == (j < length and j <= length - 3 + i)
    assert visible_key_mask(2, 4, None, False, 1).all()


# ---- npu tier: runs only where torch_npu and an NPU are present (skipped by conftest otherwise).


def _sdpa_cpu(q, k, v, causal, scale, kv_lens):
    group = q.shape[1] // k.shape[1]
    mask = reference_mask(q.shape[0], q.shape[2], k.shape[2], causal=causal, kv_lens=kv_lens)
    q, k, v = q.float(), k.float().repeat_interleave(group, 1), v.float().repeat_interleave(group, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.nan_to_num(0.0)


NPU_CASES = [
    # dtype, q_len, kv_len, causal, ragged
    (torch.float16, 97, 97, True, False),
    (torch.bfloat16, 7, 1025, True, False),
    (torch.bfloat16, 1, 1025, True, True),
    (torch.float16, 4, 97, True, True),
    (torch.float16, 97, 97, False, False),
]


@pytest.mark.npu
@pytest.mark.parametrize("backend", ["fused", "ascendc"])
@pytest.mark.parametrize("case", NPU_CASES)
def test_npu_inference_matches_sdpa(backend: str, case: tuple) -> None:
    if backend == "ascendc" and not npu_attention.ascendc_built():
        pytest.skip("this build has no Ascend C kernel (built without the CANN toolkit)")
    dtype, q_len, kv_len, causal, ragged = case
    q, k, v = _qkv(dtype, batch=3, heads=16, kv_heads=4, q_len=q_len, kv_len=kv_len, head_dim=128)
    kv_lens = torch.tensor([kv_len, max(1, kv_len // 3), 1]) if ragged else None
    scale = 1 / math.sqrt(128)
    npu_attention.set_backend(backend)
    out = attention_bnsd(q.npu(), k.npu(), v.npu(), causal=causal, scale=scale, training=False, kv_lens=kv_lens)
    ref = _sdpa_cpu(q, k, v, causal, scale, kv_lens)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.cpu().float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.npu
@pytest.mark.parametrize("ragged", [False, True])
def test_npu_training_forward_and_backward(ragged: bool) -> None:
    q, k, v = _qkv(torch.bfloat16, batch=2, heads=8, kv_heads=2, q_len=33, kv_len=97, head_dim=64)
    kv_lens = torch.tensor([97, 50]) if ragged else None
    scale = 0.125
    qn, kn, vn = (t.npu().requires_grad_(True) for t in (q, k, v))
    out = attention_bnsd(qn, kn, vn, causal=True, scale=scale, training=True, kv_lens=kv_lens)
    out.float().square().sum().backward()
    qc, kc, vc = (t.float().requires_grad_(True) for t in (q, k, v))
    ref = _sdpa_cpu(qc, kc, vc, True, scale, kv_lens)
    ref.square().sum().backward()
    torch.testing.assert_close(out.detach().cpu().float(), ref.detach(), atol=3e-2, rtol=3e-2)
    for npu_grad, cpu_grad in ((qn.grad, qc.grad), (kn.grad, kc.grad), (vn.grad, vc.grad)):
        torch.testing.assert_close(npu_grad.cpu().float(), cpu_grad, atol=1e-1, rtol=5e-2)


# On an NPU, the CPU simulation of the kernel schedule and the device agree (same maths).
@pytest.mark.npu
def test_npu_matches_simulation() -> None:
    if not npu_attention.ascendc_built():
        pytest.skip("this build has no Ascend C kernel (built without the CANN toolkit)")
    q, k, v = _qkv(torch.float16, batch=1, heads=8, kv_heads=2, q_len=97, kv_len=97, head_dim=80)
    npu_attention.set_backend("ascendc")
    out = attention_bnsd(q.npu(), k.npu(), v.npu(), causal=True, scale=None, training=False)
    sim = npu_attention.simulate(q, k, v, causal=True)
    torch.testing.assert_close(out.cpu(), sim, atol=2e-3, rtol=2e-3)
