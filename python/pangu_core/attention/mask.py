"""Which keys each query sees: the boolean mask every backend's semantics are defined by.

For sequence b with L = kv_lens[b] valid keys (k_len without kv_lens) and q_len queries, query i sits
at key position pos = L - q_len + i (bottom-right alignment: the last query is the last key). Key j
is visible when

    j < L                      (always)
    j <= pos                   (causal)
    j > pos - window           (window > 0)

The window only bounds keys before the query: without ``causal`` every key after pos (up to L - 1)
stays visible, so a non-causal window is one-sided, not symmetric.
"""

from __future__ import annotations

import torch


def visibility_mask(q_len: int, k_len: int, *, causal: bool, window: int = 0, kv_lens: torch.Tensor | None = None,
                    batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (batch, 1, q_len, k_len) mask, True where a key is visible (rules in the module docstring).

    ``window`` 0 means no window; ``kv_lens`` (batch,) int gives each sequence's valid key count
    (k_len for all when None).
    """
    lens = (torch.full((batch,), k_len, dtype=torch.int64, device=device) if kv_lens is None
            else kv_lens.to(device=device, dtype=torch.int64))
    j = torch.arange(k_len, device=device).view(1, 1, k_len)
    pos = (lens.view(-1, 1, 1) - q_len) + torch.arange(q_len, device=device).view(1, q_len, 1)
    # Expanded so that the shape is (batch, 1, q_len, k_len) even when no rule depends on the query.
    mask = (j < lens.view(-1, 1, 1)).expand(lens.shape[0], q_len, k_len)
    if causal:
        mask = mask & (j <= pos)
    if window > 0:
        mask = mask & (j > pos - window)
    return mask.unsqueeze(1)


__all__ = ["visibility_mask"]
