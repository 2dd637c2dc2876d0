"""Float64 reference attention for the attention tests (bottom-right causal, GQA, ragged lengths)."""

from __future__ import annotations

import math

import torch

from pangu_core.attention import visibility_mask


def reference(q, k, v, *, causal=False, scale=None, window=0, kv_lens=None, dtype=torch.float64):
    """softmax(scale q k^T + mask) v in ``dtype`` with zero rows where a query sees no key."""
    group = q.shape[1] // k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qd, kd, vd = (x.to(dtype) for x in (q, k, v))
    kd, vd = kd.repeat_interleave(group, 1), vd.repeat_interleave(group, 1)
    mask = visibility_mask(q.shape[2], k.shape[2], causal=causal, window=window or 0, kv_lens=kv_lens,
                           batch=q.shape[0])
    scores = (qd @ kd.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ vd


def reference_varlen(q, k, v, cu_q, cu_k, *, causal=False, scale=None, window=0, dtype=torch.float64):
    """Per-sequence :func:`reference` over packed (total, heads, dim) tensors."""
    out = torch.zeros(q.shape, dtype=dtype)
    cq, ck = cu_q.tolist(), cu_k.tolist()
    for b in range(len(cq) - 1):
        qs = q[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0)
        ks = k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        vs = v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        if qs.shape[2] == 0:
            continue
        res = reference(qs, ks, vs, causal=causal, scale=scale, window=window, dtype=dtype)
        out[cq[b]:cq[b + 1]] = res.squeeze(0).transpose(0, 1)
    return out
