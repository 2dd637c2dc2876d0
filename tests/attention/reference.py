"""Float64 reference attention for the attention tests, written from the masking rules alone.

It imports nothing from pangu_core, so a wrong mask in the code under test cannot leak into it.
The rules (DESIGN.md, bottom-right causal): in a sequence with L valid keys and q_len queries, query
i sits at key position pos = L - q_len + i and sees key j when
    0 <= j < L, and j <= pos if causal, and j >= pos - window + 1 if window > 0.
Without causal the window bounds only keys before pos. A query that sees no key gives a zero row.
"""

from __future__ import annotations

import math

import torch


def visible_range(q_len: int, length: int, i: int, *, causal: bool, window: int) -> range:
    """The keys query ``i`` of a sequence with ``length`` valid keys sees, as a range of key indices."""
    pos = length - q_len + i
    end = min(length, pos + 1) if causal else length
    start = max(0, pos - window + 1) if window > 0 else 0
    return range(start, max(start, end))


def reference_mask(batch: int, q_len: int, k_len: int, *, causal: bool, window: int = 0,
                   kv_lens=None) -> torch.Tensor:
    """Boolean (batch, 1, q_len, k_len): True where query i of sequence b sees key j."""
    lens = [k_len] * batch if kv_lens is None else [int(x) for x in kv_lens]
    mask = torch.zeros(batch, 1, q_len, k_len, dtype=torch.bool)
    for b in range(batch):
        for i in range(q_len):
            keys = visible_range(q_len, lens[b], i, causal=causal, window=window)
            mask[b, 0, i, keys.start:keys.stop] = True
    return mask


def reference(q, k, v, *, causal=False, scale=None, window=0, kv_lens=None, dtype=torch.float64):
    """softmax(scale q k^T + mask) v in ``dtype``; q (b, h, sq, d), k and v (b, hk, sk, d), GQA by h // hk.

    Inputs on any device are computed on the CPU; returns a CPU tensor. Differentiable.
    """
    q, k, v = (x.cpu() for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qd, kd, vd = (x.to(dtype) for x in (q, k, v))
    # Query head h reads kv head h // group.
    kd, vd = kd.repeat_interleave(group, 1), vd.repeat_interleave(group, 1)
    lens = None if kv_lens is None else kv_lens.tolist()
    mask = reference_mask(q.shape[0], q.shape[2], k.shape[2], causal=causal, window=window or 0, kv_lens=lens)
    scores = (qd @ kd.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ vd


def reference_varlen(q, k, v, cu_q, cu_k, *, causal=False, scale=None, window=0, dtype=torch.float64):
    """Per-sequence :func:`reference` over packed (total, heads, dim) tensors; a CPU tensor."""
    q, k, v = (x.cpu() for x in (q, k, v))
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

