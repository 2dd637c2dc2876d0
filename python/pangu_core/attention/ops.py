"""torch.library custom ops around the C++ CPU attention kernels: fake kernels and autograd.

``pangu::attention_forward`` / ``pangu::attention_backward`` take the padded layout
(batch, heads, seq, head_dim); ``pangu::attention_varlen_forward`` / ``..._backward`` the packed
layout (total, heads, head_dim) with cu_seqlens offsets. The forward ops return the output and the
natural-log log-sum-exp (float32) that the backward recomputes from. Because the ops have fake
(meta) kernels they trace under torch.compile; because autograd is registered they train.
Arguments are validated by :mod:`pangu_core.attention.dispatch` before they reach these ops.
"""

from __future__ import annotations

from typing import Optional

import torch

from pangu_core import _core


def _dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # The kernels read any strides but need each head_dim row to be dense.
    return x if x.stride(-1) == 1 or x.shape[-1] == 1 else x.contiguous()


@torch.library.custom_op("pangu::attention_forward", mutates_args=(), device_types="cpu")
def attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lens: Optional[torch.Tensor], causal: bool, scale: float,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _dim_contiguous(q), _dim_contiguous(k), _dim_contiguous(v)
    out = torch.empty(q.shape, dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32)
    _core.attention.forward(q, k, v, out, lse, None, None, kv_lens, causal, scale, window)
    return out, lse


@attention_forward.register_fake
def _attention_forward_fake(q, k, v, kv_lens, causal, scale, window):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("pangu::attention_backward", mutates_args=(), device_types="cpu")
def attention_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
    kv_lens: Optional[torch.Tensor], causal: bool, scale: float, window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, out, dout = (_dim_contiguous(x) for x in (q, k, v, out, dout))
    dq = torch.empty(q.shape, dtype=q.dtype)
    # Keys past a sequence's kv_len get no gradient rows written, so they start at zero.
    dk = torch.zeros(k.shape, dtype=k.dtype)
    dv = torch.zeros(v.shape, dtype=v.dtype)
    _core.attention.backward(q, k, v, out, dout, lse, dq, dk, dv, None, None, kv_lens, causal, scale, window)
    return dq, dk, dv


@attention_backward.register_fake
def _attention_backward_fake(q, k, v, out, dout, lse, kv_lens, causal, scale, window):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_padded(ctx, inputs, output):
    q, k, v, kv_lens, causal, scale, window = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, kv_lens)
    ctx.options = (causal, scale, window)


def _backward_padded(ctx, dout, dlse):
    q, k, v, out, lse, kv_lens = ctx.saved_tensors
    causal, scale, window = ctx.options
    dq, dk, dv = attention_backward(q, k, v, out, dout.contiguous(), lse, kv_lens, causal, scale, window)
    return dq, dk, dv, None, None, None, None


attention_forward.register_autograd(_backward_padded, setup_context=_setup_padded)


@torch.library.custom_op("pangu::attention_varlen_forward", mutates_args=(), device_types="cpu")
def attention_varlen_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
    causal: bool, scale: float, window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _dim_contiguous(q), _dim_contiguous(k), _dim_contiguous(v)
    out = torch.zeros(q.shape, dtype=q.dtype)  # rows past cu_seqlens_q[-1] belong to no sequence
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32)
    _core.attention.forward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, None, causal, scale, window)
    return out, lse


@attention_varlen_forward.register_fake
def _attention_varlen_forward_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, window):
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("pangu::attention_varlen_backward", mutates_args=(), device_types="cpu")
def attention_varlen_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
    cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, causal: bool, scale: float, window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, out, dout = (_dim_contiguous(x) for x in (q, k, v, out, dout))
    dq = torch.zeros(q.shape, dtype=q.dtype)
    dk = torch.zeros(k.shape, dtype=k.dtype)
    dv = torch.zeros(v.shape, dtype=v.dtype)
    _core.attention.backward(q, k, v, out, dout, lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k, None, causal, scale,
                             window)
    return dq, dk, dv


@attention_varlen_backward.register_fake
def _attention_varlen_backward_fake(q, k, v, out, dout, lse, cu_seqlens_q, cu_seqlens_k, causal, scale, window):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_varlen(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, window = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
    ctx.options = (causal, scale, window)


def _backward_varlen(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    causal, scale, window = ctx.options
    dq, dk, dv = attention_varlen_backward(q, k, v, out, dout.contiguous(), lse, cu_seqlens_q, cu_seqlens_k, causal,
                                           scale, window)
    return dq, dk, dv, None, None, None, None, None


attention_varlen_forward.register_autograd(_backward_varlen, setup_context=_setup_varlen)
