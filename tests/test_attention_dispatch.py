"""Attention backend choice and front-door errors, with CUDA and NPU absent."""

from __future__ import annotations

import sys

import pytest
import torch

from pangu_core import _core
from pangu_core import attention as attn


def _qkv(q_len=5, k_len=5, dtype=torch.float32):
    return (torch.randn(1, 4, q_len, 64, dtype=dtype), torch.randn(1, 2, k_len, 64, dtype=dtype),
            torch.randn(1, 2, k_len, 64, dtype=dtype))


def test_device_picks_backend():
    # Invariant: cpu -> our kernels, cuda -> SDPA, npu -> the npu module, without touching the devices.
    assert attn.backend_for("cpu").name == "cpu"
    assert attn.backend_for("cuda").name == "sdpa"
    assert attn.backend_for("npu").name == "npu"
    assert set(attn.backends()) >= {"cpu", "sdpa", "npu"}


def test_forced_backend_and_context_manager():
    # Invariant: the forced choice wins and is restored on exit, and results agree across backends.
    q, k, v = _qkv()
    with attn.use_backend("sdpa"):
        assert attn.backend_for("cpu").name == "sdpa"
        theirs = attn.attention(q, k, v, causal=True)
    assert attn.backend_for("cpu").name == "cpu"
    assert torch.allclose(attn.attention(q, k, v, causal=True), theirs, atol=1e-5)


def test_environment_variable_forces_backend(monkeypatch):
    monkeypatch.setenv(attn.ENV_VAR, "sdpa")
    assert attn.backend_for("cpu").name == "sdpa"
    monkeypatch.setenv(attn.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="unknown attention backend 'nope'; known: cpu, npu, sdpa"):
        attn.backend_for("cpu")


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match="known: cpu, npu, sdpa"):
        attn.set_backend("flash")


def test_cpu_backend_refuses_other_devices():
    with attn.use_backend("cpu"):
        with pytest.raises(ValueError, match="runs on cpu, but the tensors are on cuda"):
            attn.backend_for("cuda")


def test_npu_backend_without_npu_is_a_clear_error():
    # Invariant: forcing the npu backend on CPU tensors names the device mismatch; the npu module
    # is never imported on a machine without torch_npu.
    q, k, v = _qkv()
    with attn.use_backend("npu"):
        with pytest.raises(ValueError, match="runs on npu"):
            attn.attention(q, k, v)
    assert "torch_npu" not in sys.modules


def _install_fake_npu_module(monkeypatch, fake):
    # `from pangu_core import npu_attention` reads the package attribute first, so patch both.
    import pangu_core

    monkeypatch.setitem(sys.modules, "pangu_core.npu_attention", fake)
    monkeypatch.setattr(pangu_core, "npu_attention", fake, raising=False)


def test_npu_backend_reports_missing_torch_npu(monkeypatch):
    # Invariant: with tensors claimed to be on an NPU but no NPU stack, the backend says what is missing.
    import types

    fake = types.ModuleType("pangu_core.npu_attention")
    fake.is_available = lambda: False
    _install_fake_npu_module(monkeypatch, fake)
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="needs torch_npu"):
        attn.backends()["npu"].fn(q, k, v, causal=True, scale=0.125, window=0, kv_lens=None)


def test_npu_backend_passes_the_contract_arguments(monkeypatch):
    # Invariant: the npu backend calls attention_bnsd(q, k, v, causal=, scale=, training=, kv_lens=).
    import types

    seen = {}
    fake = types.ModuleType("pangu_core.npu_attention")
    fake.is_available = lambda: True

    def attention_bnsd(q, k, v, *, causal, scale, training, kv_lens=None):
        seen.update(causal=causal, scale=scale, training=training, kv_lens=kv_lens)
        return torch.zeros_like(q)

    fake.attention_bnsd = attention_bnsd
    _install_fake_npu_module(monkeypatch, fake)
    q, k, v = _qkv()
    q.requires_grad_()
    attn.backends()["npu"].fn(q, k, v, causal=True, scale=0.5, window=0, kv_lens=None)
    assert seen == dict(causal=True, scale=0.5, training=True, kv_lens=None)
    with pytest.raises(ValueError, match="window"):
        attn.backends()["npu"].fn(q, k, v, causal=True, scale=0.5, window=4, kv_lens=None)


@pytest.mark.parametrize("call, error, message", [
    (lambda q, k, v: attn.attention(q.numpy(), k, v), TypeError, "q: expected a torch.Tensor"),
    (lambda q, k, v: attn.attention(q.double(), k.double(), v.double()), TypeError, "q: expected float32"),
    (lambda q, k, v: attn.attention(q, k.half(), v), TypeError, "k: expected float32 like q, got float16"),
    (lambda q, k, v: attn.attention(q[0], k, v), ValueError, "q: expected 4 dimensions"),
    (lambda q, k, v: attn.attention(q, k[:, :, :3], v), ValueError, "v: expected shape"),
    (lambda q, k, v: attn.attention(q[:, :3], k, v), ValueError, "k: expected a number of heads dividing q's 3"),
    (lambda q, k, v: attn.attention(q[..., :32], k, v), ValueError, "k: expected head_dim 32 like q"),
    (lambda q, k, v: attn.attention(q, k, v, scale=-1.0), ValueError, "scale: expected a positive"),
    (lambda q, k, v: attn.attention(q, k, v, window=0), ValueError, "window: expected a positive int"),
    (lambda q, k, v: attn.attention(q, k, v, causal=1), TypeError, "causal: expected a bool"),
    (lambda q, k, v: attn.attention(q, k, v, kv_lens=torch.tensor([9])), ValueError, r"kv_lens: expected values in \[0, 5\]"),
    (lambda q, k, v: attn.attention(q, k, v, kv_lens=torch.tensor([1.0])), TypeError, "kv_lens: expected int32 or int64"),
    (lambda q, k, v: attn.attention(q, k, v, kv_lens=torch.tensor([1, 2])), ValueError, "kv_lens: expected 1 entries"),
    (lambda q, k, v: attn.attention(torch.randn(1, 4, 5, 300), torch.randn(1, 2, 5, 300), torch.randn(1, 2, 5, 300)),
     ValueError, r"q: expected head_dim in \[1, 256\]"),
    (lambda q, k, v: attn.attention(q.to("meta"), k, v), ValueError, "k: expected a tensor on meta like q"),
])
def test_bad_arguments_raise_clear_errors(call, error, message):
    q, k, v = _qkv()
    with pytest.raises(error, match=message):
        call(q, k, v)


def test_varlen_bad_offsets_raise_clear_errors():
    q, k, v = torch.randn(9, 4, 64), torch.randn(9, 2, 64), torch.randn(9, 2, 64)
    good = torch.tensor([0, 4, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seqlens_q: expected non-decreasing offsets"):
        attn.attention_varlen(q, k, v, torch.tensor([0, 5, 4], dtype=torch.int32), good)
    with pytest.raises(ValueError, match="cu_seqlens_k: last offset 12 exceeds the 9 rows"):
        attn.attention_varlen(q, k, v, good, torch.tensor([0, 4, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens_k: expected 3 entries"):
        attn.attention_varlen(q, k, v, good, torch.tensor([0, 9], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens_q: expected to start at 0"):
        attn.attention_varlen(q, k, v, torch.tensor([1, 4, 9], dtype=torch.int32), good)


def test_core_checks_name_the_argument():
    # Invariant: the C++ entry validates too (for callers that bypass the Python front door).
    q, k, v = _qkv()
    out = torch.empty(1, 4, 5, 32)
    with pytest.raises(ValueError, match="out: expected shape"):
        _core.attention.forward(q, k, v, out, None, None, None, None, False, 0.125, 0)
    with pytest.raises(TypeError, match="k: expected float32 like q"):
        _core.attention.forward(q, k.bfloat16(), v, torch.empty_like(q), None, None, None, None, False, 0.125, 0)
    with pytest.raises(ValueError, match="q: expected the last"):
        _core.attention.forward(q.transpose(2, 3), k, v, torch.empty_like(q), None, None, None, None, False, 0.125, 0)
