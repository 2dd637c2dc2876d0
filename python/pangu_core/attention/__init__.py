"""Fused attention for every device: our C++ kernels on CPU, torch SDPA on CUDA, torch_npu on NPU.

``from pangu_core import attention as attn`` then ``attn.attention(q, k, v, causal=True)``,
``attn.decode(q, k_cache, v_cache, kv_lens)`` and ``attn.attention_varlen(...)``; force a backend
with ``attn.set_backend(name)``, ``with attn.use_backend(name):`` or PANGU_ATTENTION_BACKEND.

Modules:
    registry                  the backend registry (Backend, register_backend, backends, get_backend)
    dispatch                  argument checks, backend choice, attention / decode / attention_varlen
    mask                      visibility_mask: the masking rules every backend follows
    builtin                   the "cpu", "sdpa" and "npu" backends (registered on import)
    ops                       torch.library custom ops around the C++ CPU kernels (autograd, fake)
    npu                       Ascend NPU path, tiling plan and CPU simulation (imported on first use)
    transformers_integration  attn_implementation="pangu" (imported on first use, or by
                              :func:`register_transformers`)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pangu_core.attention.dispatch import (
    DEFAULT_BACKEND_FOR_DEVICE,
    ENV_VAR,
    MAX_HEAD_DIM,
    attention,
    attention_varlen,
    backend_for,
    decode,
    set_backend,
    use_backend,
)
from pangu_core.attention.mask import visibility_mask
from pangu_core.attention.registry import Backend, BackendFn, backends, get_backend, register_backend

# Submodules that are imported only when first used (torch_npu / transformers stay unimported).
_LAZY_SUBMODULES = ("npu", "transformers_integration")


def register_transformers() -> None:
    """Makes ``attn_implementation="pangu"`` available in transformers (idempotent; imports transformers)."""
    importlib.import_module("pangu_core.attention.transformers_integration").register()


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"pangu_core.attention.{name}")
    raise AttributeError(f"module 'pangu_core.attention' has no attribute {name!r}")


__all__ = [
    "DEFAULT_BACKEND_FOR_DEVICE", "ENV_VAR", "MAX_HEAD_DIM", "Backend", "BackendFn", "attention", "attention_varlen",
    "backend_for", "backends", "decode", "get_backend", "register_backend", "register_transformers", "set_backend",
    "use_backend", "visibility_mask",
]
