"""The built-in attention backends: "cpu" (our C++ kernels), "sdpa" (torch) and "npu" (torch_npu).

Importing this module registers the three in :mod:`pangu_core.attention.registry`. The NPU module
(:mod:`pangu_core.attention.npu`) is imported only when the "npu" backend is called.
"""

from __future__ import annotations

import importlib

import torch

from pangu_core.attention import ops
from pangu_core.attention.mask import visibility_mask
from pangu_core.attention.registry import register_backend

NPU_MODULE = "pangu_core.attention.npu"


def cpu_backend(q, k, v, *, causal, scale, window, kv_lens):
    """Our C++ flash attention (torch.library custom op, differentiable) on CPU tensors."""
    if kv_lens is not None:
        kv_lens = kv_lens.to(torch.int64)
    return ops.attention_forward(q, k, v, kv_lens, causal, scale, window)[0]


def sdpa_backend(q, k, v, *, causal, scale, window, kv_lens):
    """torch's scaled_dot_product_attention, with an explicit mask wherever is_causal would differ.

    SDPA's is_causal aligns top-left, so it is used only for q_len == k_len with no window and no
    kv_lens; every other case passes :func:`visibility_mask`. Rows that see no key come out as zeros.
    """
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


def npu_backend(q, k, v, *, causal, scale, window, kv_lens):
    """torch_npu's fused operators or our Ascend C kernel, through :mod:`pangu_core.attention.npu`."""
    npu = importlib.import_module(NPU_MODULE)
    if not npu.is_available():
        raise RuntimeError("q: the npu attention backend needs torch_npu and an Ascend NPU, which are not available")
    if window:
        raise ValueError("window: sliding windows are not supported by the npu attention backend")
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return npu.attention_bnsd(q, k, v, causal=causal, scale=scale, training=training, kv_lens=kv_lens)


register_backend("cpu", ("cpu",), cpu_backend, "pangu_core C++ flash attention (scalar/AVX2/AVX-512 dispatch)")
register_backend("sdpa", ("cpu", "cuda", "npu"), sdpa_backend, "torch.nn.functional.scaled_dot_product_attention")
register_backend("npu", ("npu",), npu_backend, "torch_npu fused operators or our Ascend C kernels")

__all__ = ["cpu_backend", "npu_backend", "sdpa_backend"]
