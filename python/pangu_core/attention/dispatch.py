"""Attention dispatch: checks the arguments once, picks a backend for the tensors' device, runs it.

Layouts follow torch SDPA: q (batch, heads, q_len, head_dim), k and v (batch, kv_heads, k_len,
head_dim) with heads a multiple of kv_heads (grouped-query / multi-query attention without copying
K/V). :func:`attention_varlen` takes packed sequences (total, heads, head_dim) with cu_seqlens
offsets. Inputs are float32, float16 or bfloat16; head_dim 1-256.

Masking (the same on every backend; :func:`pangu_core.attention.visibility_mask` builds it). In a
sequence with L valid keys (k_len, or kv_lens[b]) and q_len queries, query i sits at key position
pos = L - q_len + i, so causal masking aligns the last query with the last key (bottom-right, as
flash-attention and a KV cache do) and decoding one token against a cache is
``attention(q, k_cache, v_cache, causal=True, kv_lens=lens)``. Key j is visible to query i when
j < L, and j <= pos if ``causal``, and j > pos - window if ``window`` is given. The window only
bounds keys *before* the query: with ``causal=False`` every key after pos stays visible (the window
is one-sided, not symmetric). A query that sees no key gets a zero output row.

Backends sit in :mod:`pangu_core.attention.registry` ("cpu", "sdpa", "npu", and any registered
later). The choice for a call is, in order: the name forced with :func:`set_backend` or
:func:`use_backend`; the PANGU_ATTENTION_BACKEND environment variable; by device (cpu -> "cpu",
cuda -> "sdpa", npu -> "npu"). An unknown name lists the known ones; a backend that does not run on
the tensors' device is refused.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import torch

from pangu_core.attention import builtin as _builtin  # noqa: F401  (registers "cpu", "sdpa", "npu")
from pangu_core.attention.ops import attention_varlen_forward
from pangu_core.attention.registry import Backend, get_backend
from pangu_core.tensors import FLOAT_DTYPES, check_tensor, dtype_name

ENV_VAR = "PANGU_ATTENTION_BACKEND"
MAX_HEAD_DIM = 256
DEFAULT_BACKEND_FOR_DEVICE = {"cpu": "cpu", "cuda": "sdpa", "npu": "npu"}

_forced: str | None = None


def set_backend(name: str | None) -> None:
    """Forces every call to use backend ``name`` (None restores the choice by env var or device)."""
    global _forced
    if name is not None:
        get_backend(name, "name")
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
        backend = get_backend(_forced, "set_backend")
    elif os.environ.get(ENV_VAR):
        backend = get_backend(os.environ[ENV_VAR], ENV_VAR)
    elif kind in DEFAULT_BACKEND_FOR_DEVICE:
        backend = get_backend(DEFAULT_BACKEND_FOR_DEVICE[kind], "device")
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
            raise TypeError(f"{name}: expected {dtype_name(q.dtype)} like q, got {dtype_name(x.dtype)}")
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


def _check_offsets(cu: torch.Tensor, name: str, rows: int) -> list[int]:
    """The offsets as ints after the checks the C++ kernel makes on its own path (same messages)."""
    offsets = [int(x) for x in cu.tolist()]
    if offsets[0] != 0:
        raise ValueError(f"{name}: expected to start at 0, got {offsets[0]}")
    for index in range(1, len(offsets)):
        if offsets[index] < offsets[index - 1]:
            raise ValueError(f"{name}: expected non-decreasing offsets, got {offsets[index - 1]} then "
                             f"{offsets[index]} at index {index}")
    if offsets[-1] > rows:
        raise ValueError(f"{name}: last offset {offsets[-1]} exceeds the {rows} rows available")
    return offsets


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None,
              window: int | None = None, kv_lens: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v for padded batches.

    Shapes: q (batch, heads, q_len, head_dim); k, v (batch, kv_heads, k_len, head_dim) with heads %
    kv_heads == 0; returns (batch, heads, q_len, head_dim) in q's dtype. ``kv_lens`` (batch,) int
    limits each sequence's keys to its first kv_lens[b] (ragged KV caches); ``causal`` aligns the
    last query with the last valid key (query i at position pos = L - q_len + i sees keys j <= pos);
    ``window`` (an int >= 1) hides keys j <= pos - window, i.e. keeps the last ``window`` keys up to
    pos when causal; without ``causal`` the keys after pos stay visible (one-sided, not symmetric).
    Queries that see no key give zero rows. ``scale`` defaults to 1/sqrt(head_dim). Differentiable
    on the "cpu" and "sdpa" backends.
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
    other devices run the chosen backend per sequence. Masking as in :func:`attention`, per sequence.
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
        return attention_varlen_forward(q, k, v, cu_seqlens_q.cpu(), cu_seqlens_k.cpu(), causal, scale, window)[0]
    cq = _check_offsets(cu_seqlens_q, "cu_seqlens_q", q.shape[0])
    ck = _check_offsets(cu_seqlens_k, "cu_seqlens_k", k.shape[0])
    out = torch.zeros_like(q)
    for b in range(len(cq) - 1):
        if cq[b + 1] == cq[b]:
            continue
        qs = q[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0)
        ks = k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        vs = v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        res = backend.fn(qs, ks, vs, causal=causal, scale=scale, window=window, kv_lens=None)
        out[cq[b]:cq[b + 1]] = res.squeeze(0).transpose(0, 1)
    return out




__all__ = ["DEFAULT_BACKEND_FOR_DEVICE", "ENV_VAR", "MAX_HEAD_DIM", "attention", "attention_varlen", "backend_for",
           "decode", "set_backend", "use_backend"]
