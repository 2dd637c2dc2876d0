"""visibility_mask (the rule every backend follows) against hand-written masks and the reference's."""

from __future__ import annotations

import itertools

import pytest
import torch
from attention_reference import reference_mask

from pangu_core.attention import visibility_mask


def _rows(mask: torch.Tensor) -> list[str]:
    """A (q_len, k_len) bool mask as strings of 1 (visible) and . (hidden), one per query."""
    return ["".join("1" if x else "." for x in row) for row in mask.tolist()]


# Hand-written masks anchor both visibility_mask and the test reference to the stated rules.
HAND_WRITTEN = [
    # q_len 2 < k_len 5, causal: the last query is the last key (bottom-right), not top-left.
    (dict(q_len=2, k_len=5, causal=True), ["1111.", "11111"]),
    # More queries than keys: the first queries see nothing.
    (dict(q_len=4, k_len=2, causal=True), ["..", "..", "1.", "11"]),
    # Causal window 2: the query's own key and the one before.
    (dict(q_len=3, k_len=4, causal=True, window=2), ["11..", ".11.", "..11"]),
    # Window without causal: one-sided, only keys before pos - 1 are hidden; later keys stay visible.
    (dict(q_len=3, k_len=4, causal=False, window=2), ["1111", ".111", "..11"]),
    # kv_lens 3 of a 5-key buffer: keys 3, 4 are padding; causal aligns to the 3rd key.
    (dict(q_len=2, k_len=5, causal=True, kv_lens=[3]), ["11...", "111.."]),
    (dict(q_len=1, k_len=4, causal=True, kv_lens=[0]), ["...."]),
]


@pytest.mark.parametrize("case, expected", HAND_WRITTEN, ids=[str(i) for i in range(len(HAND_WRITTEN))])
def test_hand_written_masks(case, expected):
    kv_lens = case.get("kv_lens")
    ours = visibility_mask(case["q_len"], case["k_len"], causal=case["causal"], window=case.get("window", 0),
                           kv_lens=None if kv_lens is None else torch.tensor(kv_lens))
    theirs = reference_mask(1, case["q_len"], case["k_len"], causal=case["causal"], window=case.get("window", 0),
                            kv_lens=kv_lens)
    assert ours.shape == (1, 1, case["q_len"], case["k_len"]) and ours.dtype == torch.bool
    assert _rows(ours[0, 0]) == expected
    assert _rows(theirs[0, 0]) == expected


@pytest.mark.parametrize("q_len, k_len", [(1, 1), (1, 97), (7, 7), (33, 97), (97, 33), (13, 0)])
def test_matches_reference_on_a_grid(q_len, k_len):
    # Invariant: for every combination of causal, window and ragged lengths, the mask equals the one
    # the reference builds row by row from the rules.
    lens_options = [None, [k_len, k_len // 2, 0]]
    for causal, window, lens in itertools.product([False, True], [0, 1, 5, 200], lens_options):
        batch = 1 if lens is None else 3
        ours = visibility_mask(q_len, k_len, causal=causal, window=window, batch=batch,
                               kv_lens=None if lens is None else torch.tensor(lens, dtype=torch.int32))
        theirs = reference_mask(batch, q_len, k_len, causal=causal, window=window, kv_lens=lens)
        assert torch.equal(ours, theirs), (causal, window, lens)


def test_window_without_causal_is_one_sided():
    # Invariant (documented in dispatch): without causal the window bounds only the keys before the
    # query, so every key after the query's position stays visible; it is not symmetric.
    mask = visibility_mask(10, 10, causal=False, window=3)[0, 0]
    for i in range(10):
        assert mask[i, i + 1:].all()                 # every later key
        assert mask[i, max(0, i - 2):i + 1].all()    # the window up to and including i
        assert not mask[i, :max(0, i - 2)].any()     # nothing earlier
