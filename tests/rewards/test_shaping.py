"""Shaping terms: format per mode, repeated n-grams, length against the mode's budget."""

from __future__ import annotations

import pytest

from pangu_core.rewards.config import ShapingConfig
from pangu_core.rewards.shaping import chosen_mode, format_score, length_score, repeated_ngram_share, repetition_score


@pytest.mark.parametrize("response, mode, score, reason", [
    ("<think>steps</think>42", "slow", 1.0, ""),
    ("42", "slow", 0.0, "no thinking block"),
    ("<think></think>42", "slow", 0.0, "empty thinking block"),
    ("<think>steps and more", "slow", 0.0, "thinking block not closed"),
    ("<think>steps</think>", "slow", 0.0, "no answer after thinking"),
    ("<think></think>42", "fast", 1.0, ""),
    ("42", "fast", 1.0, ""),
    ("<think>long thoughts</think>42", "fast", 0.0, "thinking in fast mode"),
    ("<think></think>", "fast", 0.0, "no answer after thinking"),
    # auto: the model chose; a fast answer and a slow one are both well formed, each by its own rules.
    ("<think></think>42", "auto", 1.0, ""),
    ("42", "auto", 1.0, ""),
    ("<think>steps</think>42", "auto", 1.0, ""),
    ("<think>steps and more", "auto", 0.0, "thinking block not closed"),
    ("<think>", "auto", 0.0, "thinking block not closed"),
    ("<think>steps</think>", "auto", 0.0, "no answer after thinking"),
    ("<think></think>", "auto", 0.0, "no answer after thinking"),
])
def test_format_by_mode(response, mode, score, reason):
    got = format_score(response, mode)
    assert (got.score, got.reason) == (score, reason)


def test_repetition_share():
    assert repeated_ngram_share("a b c d e f", 2) == 0.0
    loop = "we try again " * 20
    assert repeated_ngram_share(loop, 3) > 0.9
    assert repetition_score(loop, ShapingConfig(ngram=3)).score < 0.1
    assert repeated_ngram_share("short", 4) == 0.0
    with pytest.raises(ValueError, match="n:"):
        repeated_ngram_share("x", 0)


def test_length_against_budget():
    cfg = ShapingConfig(fast_budget=10, slow_budget=100, length_hard_factor=2.0)
    assert length_score("w " * 10, "fast", cfg).score == 1.0
    assert length_score("w " * 15, "fast", cfg).score == pytest.approx(0.5)
    assert length_score("w " * 25, "fast", cfg).score == 0.0
    assert length_score("w " * 25, "slow", cfg).score == 1.0
    with pytest.raises(ValueError, match="mode"):
        length_score("x", "medium", cfg)
    with pytest.raises(ValueError, match="mode"):
        format_score("x", "think")


def test_auto_mode_uses_the_budget_of_the_mode_taken():
    cfg = ShapingConfig(fast_budget=10, slow_budget=100, length_hard_factor=2.0)
    fast, slow = "<think></think>" + " w" * 15, "<think>" + " w" * 15 + "</think>done"
    assert chosen_mode(fast, "auto") == "fast" and chosen_mode(slow, "auto") == "slow"
    assert chosen_mode(slow, "fast") == "fast"  # a requested mode is never second-guessed
    assert length_score(fast, "auto", cfg).score == length_score(fast, "fast", cfg).score < 1.0
    assert length_score(slow, "auto", cfg).score == 1.0
