"""Fused attention for every device: our C++ kernels on CPU, torch SDPA on CUDA, torch_npu on NPU.

Layouts follow torch SDPA: q (batch, heads, q_len, head_dim), k and v (batch, kv_heads, k_len,
head_dim) with heads a multiple of kv_heads (grouped-query / multi-query attention without copying
K/V). :func:`attention_varlen` takes packed sequences (total, heads, head_dim) with cu_seqlens
offsets. Causal masking aligns the last query with the last key (bottom-right), so decoding one
token against a KV cache is ``attention(q, k_cache, v_cache, causal=True, kv_lens=lens)``.

Backends sit in a registry keyed by name ("cpu", "sdpa", "npu"). The device picks one (cpu ->
"cpu", cuda -> "sdpa", npu -> "npu") unless forced with :func:`set_backend`, :func:`use_backend`
or the PANGU_ATTENTION_BACKEND environment variable; an unknown name lists the known ones.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from pangu_core.tensors import FLOAT_DTYPES, check_tensor

ENV_VAR = "PANGU_ATTENTION_BACKEND"
MAX_HEAD_DIM = 256
DEFAULT_BACKEND_FOR_DEVICE = {"cpu": "cpu", "cuda": "sdpa", "npu": "npu"}


class BackendFn(Protocol):
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
                 window: int, kv_lens: torch.Tensor | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Backend:
    """A named attention implementation and the device kinds it runs on."""

    name: str
    devices: tuple[str, ...]
    fn: BackendFn
    description: str = ""


_REGISTRY: dict[str, Backend] = {}
_forced: str | None = None


def register_backend(name: str, devices: tuple[str, ...], fn: BackendFn, description: str = "") -> None:
    """Adds (or replaces) the backend ``name`` that runs on ``devices`` ("cpu", "cuda", "npu")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")
    _REGISTRY[name] = Backend(name, tuple(devices), fn, description)


def backends() -> dict[str, Backend]:
    """Every registered backend by name."""
    return dict(_REGISTRY)


def _lookup(name: str, source: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"{source}: unknown attention backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def set_backend(name: str | None) -> None:
    """Forces every call to use backend ``name`` (None restores choice by device)."""
    global _forced
    if name is not None:
        _lookup(name, "name")
    _forced = name


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous choice on exit."""
    global _forced
    previous = _forced
    set_backend(name)
    try:
        yield
    finally:
        _forced = previous


def backend_for(device: torch.device | str) -> Backend:
    """The backend a call with tensors on ``device`` uses now (forced one, env var, or by device)."""
    # A plain string so "npu" works even where torch_npu has not registered the device type.
    kind = device.type if isinstance(device, torch.device) else str(device).partition(":")[0]
    if _forced is not None:
        backend = _lookup(_forced, "set_backend")
    elif os.environ.get(ENV_VAR):
        backend = _lookup(os.environ[ENV_VAR], ENV_VAR)
    elif kind in DEFAULT_BACKEND_FOR_DEVICE:
        backend = _lookup(DEFAULT_BACKEND_FOR_DEVICE[kind], "device")
    else:
        raise ValueError(f"q: no attention backend for device type {kind!r}; supported: cpu, cuda, npu")
    if kind not in backend.devices:
        raise ValueError(f"q: attention backend {backend.name!r} runs on {', '.join(backend.devices)}, "
                         f"but the tensors are on {kind}")
    return backend


# ---------------------------------------------------------------------------------------------
# Front-door checks


def _check_common(q, k, v, qkv_ndim: int) -> None:
    check_tensor(q, "q", dtypes=FLOAT_DTYPES, ndim=qkv_ndim, device=None)
    check_tensor(k, "k", ndim=qkv_ndim, device=None)
    check_tensor(v, "v", ndim=qkv_ndim, device=None)
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise TypeError(f"{name}: expected {str(q.dtype).removeprefix('torch.')} like q, "
                            f"got {str(x.dtype).removeprefix('torch.')}")
        if x.device != q.device:
            raise ValueError(f"{name}: expected a tensor on {q.device} like q, got one on {x.device}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected shape {tuple(k.shape)} like k, got {tuple(v.shape)}")
    head_dim = q.shape[-1]
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"q: expected head_dim in [1, {MAX_HEAD_DIM}], got {head_dim}")
    if k.shape[-1] != head_dim:
        raise ValueError(f"k: expected head_dim {head_dim} like q, got {k.shape[-1]}")
    heads, kv_heads = q.shape[-3 if qkv_ndim == 4 else 1], k.shape[-3 if qkv_ndim == 4 else 1]
    if heads < 1 or kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"k: expected a number of heads dividing q's {heads}, got {kv_heads}")


def _resolve_scale(scale, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a positive finite number or None, got {scale!r}")
    return float(scale)


def _resolve_window(window) -> int:
    if window is None:
        return 0
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window: expected a positive int or None, got {window!r}")
    return window


def _check_lengths(t, name: str, size: int, bound: int, device) -> torch.Tensor:
    check_tensor(t, name, dtypes=(torch.int32, torch.int64), ndim=1, device=None)
    if t.shape[0] != size:
        raise ValueError(f"{name}: expected {size} entries, got {t.shape[0]}")
    if t.device != torch.device(device):
        raise ValueError(f"{name}: expected a tensor on {device} like q, got one on {t.device}")
    return t


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None,
              window: int | None = None, kv_lens: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v for padded batches.

    Shapes: q (batch, heads, q_len, head_dim); k, v (batch, kv_heads, k_len, head_dim) with heads %
    kv_heads == 0; returns (batch, heads, q_len, head_dim) in q's dtype. ``kv_lens`` (batch,) int
    limits each sequence's keys to its first kv_lens[b] (ragged KV caches); ``causal`` aligns the
    last query with the last valid key; ``window`` keeps only the last ``window`` keys up to each
    query's position. Queries that see no key give zero rows. ``scale`` defaults to 1/sqrt(head_dim).
    Differentiable on the "cpu" and "sdpa" backends.
    """
    _check_common(q, k, v, 4)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k: expected batch {q.shape[0]} like q, got {k.shape[0]}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    scale = _resolve_scale(scale, q.shape[-1])
    window = _resolve_window(window)
    if kv_lens is not None:
        _check_lengths(kv_lens, "kv_lens", q.shape[0], k.shape[2], q.device)
        if kv_lens.device.type == "cpu" and (int(kv_lens.min()) < 0 or int(kv_lens.max()) > k.shape[2]):
            raise ValueError(f"kv_lens: expected values in [0, {k.shape[2]}], got {kv_lens.tolist()}")
    backend = backend_for(q.device)
    return backend.fn(q, k, v, causal=causal, scale=scale, window=window, kv_lens=kv_lens)


def decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor | None = None, *,
           scale: float | None = None, window: int | None = None) -> torch.Tensor:
    """One or a few new query tokens per sequence against a KV cache with per-sequence lengths.

    q (batch, heads, new_tokens, head_dim); caches (batch, kv_heads, capacity, head_dim); the new
    tokens are the last ``new_tokens`` of each sequence's kv_lens[b] cached keys. On CPU the kernel
    splits long caches across threads (flash-decoding).
    """
    return attention(q, k_cache, v_cache, causal=True, scale=scale, window=window, kv_lens=kv_lens)


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, *, causal: bool = False, scale: float | None = None,
                     window: int | None = None) -> torch.Tensor:
    """Attention over packed variable-length sequences.

    q (total_q, heads, head_dim), k and v (total_k, kv_heads, head_dim); sequence b owns query rows
    cu_seqlens_q[b]:cu_seqlens_q[b+1] and key rows cu_seqlens_k[b]:cu_seqlens_k[b+1] (int32/int64,
    batch + 1 entries starting at 0). Returns (total_q, heads, head_dim). Runs our kernel on CPU;
    other devices run the registered backend per sequence.
    """
    _check_common(q, k, v, 3)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    scale = _resolve_scale(scale, q.shape[-1])
    window = _resolve_window(window)
    check_tensor(cu_seqlens_q, "cu_seqlens_q", dtypes=(torch.int32, torch.int64), ndim=1, device=None)
    if cu_seqlens_q.shape[0] < 2:
        raise ValueError(f"cu_seqlens_q: expected batch + 1 >= 2 offsets, got {cu_seqlens_q.shape[0]}")
    _check_lengths(cu_seqlens_k, "cu_seqlens_k", cu_seqlens_q.shape[0], k.shape[0], cu_seqlens_q.device)
    backend = backend_for(q.device)
    if backend.name == "cpu":
        from pangu_core import attention_ops

        return attention_ops.attention_varlen_forward(q, k, v, cu_seqlens_q.cpu(), cu_seqlens_k.cpu(), causal, scale,
                                                      window)[0]
    out = torch.zeros_like(q)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        if cq[b + 1] == cq[b]:
            continue
        qs = q[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0)
        ks = k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        vs = v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        res = backend.fn(qs, ks, vs, causal=causal, scale=scale, window=window, kv_lens=None)
        out[cq[b]:cq[b + 1]] = res.squeeze(0).transpose(0, 1)
    return out


# ---------------------------------------------------------------------------------------------
# Backends


def _cpu_backend(q, k, v, *, causal, scale, window, kv_lens):
    from pangu_core import attention_ops

    if kv_lens is not None:
        kv_lens = kv_lens.to(torch.int64)
    return attention_ops.attention_forward(q, k, v, kv_lens, causal, scale, window)[0]


def visibility_mask(q_len: int, k_len: int, *, causal: bool, window: int = 0, kv_lens: torch.Tensor | None = None,
                    batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (batch, 1, q_len, k_len) mask, True where a key is visible (bottom-right causal)."""
    lens = (torch.full((batch,), k_len, dtype=torch.int64, device=device) if kv_lens is None
            else kv_lens.to(device=device, dtype=torch.int64))
    j = torch.arange(k_len, device=device).view(1, 1, k_len)
    pos = (lens.view(-1, 1, 1) - q_len) + torch.arange(q_len, device=device).view(1, q_len, 1)
    mask = j < lens.view(-1, 1, 1)
    if causal:
        mask = mask & (j <= pos)
    if window > 0:
        mask = mask & (j > pos - window)
    return mask.unsqueeze(1)


def _sdpa_backend(q, k, v, *, causal, scale, window, kv_lens):
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    q_len, k_len = q.shape[2], k.shape[2]
    if kv_lens is None and window == 0 and (not causal or q_len == k_len):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    mask = visibility_mask(q_len, k_len, causal=causal, window=window, kv_lens=kv_lens, batch=q.shape[0],
                           device=q.device)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    # SDPA gives NaN rows where a query sees nothing; our contract is zeros.
    return torch.where(mask.any(-1, keepdim=True), out, torch.zeros((), dtype=out.dtype, device=out.device))


def _npu_backend(q, k, v, *, causal, scale, window, kv_lens):
    from pangu_core import npu_attention

    if not npu_attention.is_available():
        raise RuntimeError("q: the npu attention backend needs torch_npu and an Ascend NPU, which are not available")
    if window:
        raise ValueError("window: sliding windows are not supported by the npu attention backend")
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return npu_attention.attention_bnsd(q, k, v, causal=causal, scale=scale, training=training, kv_lens=kv_lens)


register_backend("cpu", ("cpu",), _cpu_backend, "pangu_core C++ flash attention (scalar/AVX2/AVX-512 dispatch)")
register_backend("sdpa", ("cpu", "cuda", "npu"), _sdpa_backend, "torch.nn.functional.scaled_dot_product_attention")
register_backend("npu", ("npu",), _npu_backend, "torch_npu fused operators or our Ascend C kernels")

__all__ = [
    "Backend", "attention", "attention_varlen", "backend_for", "backends", "decode", "register_backend",
    "set_backend", "use_backend", "visibility_mask",
]
