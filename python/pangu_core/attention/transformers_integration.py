"""Registers pangu_core attention with transformers as ``attn_implementation="pangu"``.

Importing this module registers it, as does :func:`pangu_core.attention.register_transformers`.
Then Llama/Qwen2-family models (grouped-query attention, q/k/v/o bias as in openPangu-Embedded) load
with ``AutoModelForCausalLM.from_config(config, attn_implementation="pangu")``. Masks are prepared
the way transformers does for flash attention: None for plain causal batches, or the 2-D padding
mask, which is turned into packed variable-length sequences. Generation with a KV cache therefore
calls the same bottom-right-causal kernel with one query per sequence, which on CPU splits long
caches across threads (the decode path). Other devices go through the same dispatch
(:mod:`pangu_core.attention.dispatch`): SDPA on CUDA, torch_npu on NPU.
"""

from __future__ import annotations

import torch

from pangu_core.attention.dispatch import attention, attention_varlen

NAME = "pangu"


def _unpad(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, heads, seq, dim) + bool (batch, seq) -> packed (total, heads, dim), row indices, cu_seqlens."""
    batch, heads, seq, dim = x.shape
    flat = mask.reshape(-1)
    index = flat.nonzero(as_tuple=True)[0]
    packed = x.transpose(1, 2).reshape(batch * seq, heads, dim).index_select(0, index)
    lens = mask.sum(dim=1, dtype=torch.int64)
    cu = torch.zeros(batch + 1, dtype=torch.int64, device=x.device)
    cu[1:] = torch.cumsum(lens, 0)
    return packed, index, cu


def pangu_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: query (batch, heads, q_len, dim), key/value (batch,
    kv_heads, k_len, dim), attention_mask None or bool (batch, k_len) padding; returns
    ((batch, q_len, heads, dim), None)."""
    if dropout and module.training:
        raise ValueError(f"dropout: the pangu attention does not implement attention dropout, got {dropout}")
    if kwargs.get("softcap") is not None:
        raise ValueError("softcap: not supported by the pangu attention")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    batch, heads, q_len, dim = query.shape
    if attention_mask is None:
        out = attention(query, key, value, causal=causal, scale=scaling, window=sliding_window)
        return out.transpose(1, 2).contiguous(), None
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask: expected None or a 2-D padding mask (the pangu mask interface makes one), got shape "
            f"{tuple(attention_mask.shape)}")
    mask = attention_mask.to(torch.bool)
    if mask.shape[1] < key.shape[2]:  # a static cache longer than the tokens seen so far
        key, value = key[:, :, :mask.shape[1]], value[:, :, :mask.shape[1]]
    q_mask = mask[:, -q_len:]
    q_packed, q_index, cu_q = _unpad(query, q_mask)
    k_packed, _, cu_k = _unpad(key, mask)
    v_packed, _, _ = _unpad(value, mask)
    packed = attention_varlen(q_packed, k_packed, v_packed, cu_q, cu_k, causal=causal, scale=scaling,
                              window=sliding_window)
    out = torch.zeros(batch * q_len, heads, dim, dtype=packed.dtype, device=packed.device)
    out = out.index_copy(0, q_index, packed)
    return out.view(batch, q_len, heads, dim), None


def register() -> None:
    """Makes ``attn_implementation="pangu"`` available in transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(NAME, pangu_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)


register()

__all__ = ["NAME", "pangu_attention_forward", "register"]
