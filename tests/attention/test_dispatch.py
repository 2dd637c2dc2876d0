"""Attention backend registry and choice, front-door errors and the package's import structure,
with CUDA and NPU absent."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pangu_core import _core
from pangu_core import attention as attn
from pangu_core.attention import registry


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
    # The npu backend imports pangu_core.attention.npu by its module name on each call.
    monkeypatch.setitem(sys.modules, "pangu_core.attention.npu", fake)


def test_npu_backend_reports_missing_torch_npu(monkeypatch):
    # Invariant: with tensors claimed to be on an NPU but no NPU stack, the backend says what is missing.
    import types

    fake = types.ModuleType("pangu_core.attention.npu")
    fake.is_available = lambda: False
    _install_fake_npu_module(monkeypatch, fake)
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="needs torch_npu"):
        attn.backends()["npu"].fn(q, k, v, causal=True, scale=0.125, window=0, kv_lens=None)


def test_npu_backend_passes_the_contract_arguments(monkeypatch):
    # Invariant: the npu backend calls attention_bnsd(q, k, v, causal=, scale=, training=, kv_lens=).
    import types

    seen = {}
    fake = types.ModuleType("pangu_core.attention.npu")
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


def test_varlen_offsets_are_checked_on_the_per_sequence_path():
    # Invariant: backends other than "cpu" (which the C++ kernel checks) refuse the same bad offsets
    # with the same messages instead of slicing garbage.
    q, k, v = torch.randn(9, 4, 64), torch.randn(9, 2, 64), torch.randn(9, 2, 64)
    good = torch.tensor([0, 4, 9], dtype=torch.int32)
    with attn.use_backend("sdpa"):
        with pytest.raises(ValueError, match="cu_seqlens_q: expected non-decreasing offsets, got 5 then 4 at index 2"):
            attn.attention_varlen(q, k, v, torch.tensor([0, 5, 4], dtype=torch.int32), good)
        with pytest.raises(ValueError, match="cu_seqlens_k: last offset 12 exceeds the 9 rows"):
            attn.attention_varlen(q, k, v, good, torch.tensor([0, 4, 12], dtype=torch.int32))
        with pytest.raises(ValueError, match="cu_seqlens_q: expected to start at 0, got 1"):
            attn.attention_varlen(q, k, v, torch.tensor([1, 4, 9], dtype=torch.int32), good)


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the backend registry for this test only, so added backends do not leak."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_registered_backend_is_listed_and_can_be_forced(private_registry):
    # Invariant: register_backend adds a name that backends(), set_backend and the device check see.
    calls = []

    def zeros(q, k, v, *, causal, scale, window, kv_lens):
        calls.append((causal, scale, window, kv_lens))
        return torch.zeros_like(q)

    attn.register_backend("zeros", ("cpu",), zeros, "test backend")
    assert attn.backends()["zeros"].description == "test backend"
    q, k, v = _qkv()
    with attn.use_backend("zeros"):
        assert torch.equal(attn.attention(q, k, v, causal=True, window=3), torch.zeros_like(q))
        with pytest.raises(ValueError, match="'zeros' runs on cpu, but the tensors are on cuda"):
            attn.backend_for("cuda")
    assert calls == [(True, 0.125, 3, None)]


@pytest.mark.parametrize("args, error, message", [
    (("", ("cpu",), lambda *a, **kw: None), ValueError, "name: expected a non-empty str"),
    (("x", ("tpu",), lambda *a, **kw: None), ValueError, "devices: expected a non-empty subset of cpu, cuda, npu"),
    (("x", (), lambda *a, **kw: None), ValueError, "devices: expected a non-empty subset"),
    (("x", ("cpu",), "not callable"), TypeError, "fn: expected a callable, got str"),
])
def test_register_backend_errors(private_registry, args, error, message):
    with pytest.raises(error, match=message):
        attn.register_backend(*args)
    assert "x" not in attn.backends()


def test_get_backend_names_the_source():
    with pytest.raises(ValueError, match=r"^cfg\.backend: unknown attention backend 'fa3'; known: cpu, npu, sdpa$"):
        attn.get_backend("fa3", "cfg.backend")


# Each submodule imported first in a fresh interpreter: an import cycle would fail here. (Full names
# as parameters: a bare "npu" id would read as the npu tier marker.)
SUBMODULES = ["registry", "mask", "ops", "builtin", "dispatch", "npu", "transformers_integration"]


@pytest.mark.parametrize("module", [f"pangu_core.attention.{name}" for name in SUBMODULES])
def test_submodule_imports_on_its_own(module):
    code = f"import {module} as m; print(m.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == module


def test_package_import_leaves_npu_and_transformers_unimported():
    # Invariant: `import pangu_core.attention` imports neither the NPU module nor transformers; they
    # load on first use (attribute access or register_transformers()).
    code = (
        "import sys\n"
        "from pangu_core import attention as attn\n"
        "assert attn.attention and attn.decode and attn.attention_varlen and attn.set_backend and attn.use_backend\n"
        "late = ('pangu_core.attention.npu', 'pangu_core.attention.transformers_integration', 'transformers',"
        " 'torch_npu')\n"
        "print(sorted(m for m in late if m in sys.modules))\n"
        "print(attn.npu.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "pangu_core.attention.npu"]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'flash'"):
        attn.flash  # noqa: B018
