"""Shaping rewards on form, each a pure function returning a score in [0, 1] and a reason.

* format: slow mode wants a closed, non-empty thinking block followed by a non-empty answer; fast
  mode wants no thinking (an empty block is allowed, as released checkpoints emit one) and an answer;
  auto mode lets the model choose, so the response is held to the rules of the mode it took
  (:func:`chosen_mode`: thinking text or an unclosed block means slow, else fast).
* repetition: 1 - share of repeated word n-grams (a looping response scores near 0).
* length: 1 within the mode's token budget (in auto mode, the chosen mode's), falling linearly to 0
  at ``length_hard_factor`` times it.
"""

from __future__ import annotations

from pangu_core.dual.response import split_thinking
from pangu_core.rewards.config import ShapingConfig
from pangu_core.rewards.types import SAMPLE_MODES, SourceScore


def _check_mode(mode: str) -> None:
    if mode not in SAMPLE_MODES:
        raise ValueError(f"mode: expected one of {', '.join(SAMPLE_MODES)}, got {mode!r}")


def chosen_mode(response: str, mode: str) -> str:
    """The mode ``response`` is judged by: ``mode`` itself for "slow" and "fast"; for "auto", "slow"
    when the model started thinking (thinking text, or a block it never closed), else "fast"."""
    _check_mode(mode)
    if mode != "auto":
        return mode
    parsed = split_thinking(response)
    return "slow" if parsed.thinking or not parsed.closed else "fast"


def format_score(response: str, mode: str) -> SourceScore:
    """Whether ``response`` has the layout its mode asks for (in auto mode, the mode it took)."""
    mode = chosen_mode(response, mode)
    parsed = split_thinking(response)
    if mode == "slow":
        if parsed.thinking is None:
            return SourceScore(0.0, "no thinking block")
        if not parsed.closed:
            return SourceScore(0.0, "thinking block not closed")
        if not parsed.thinking:
            return SourceScore(0.0, "empty thinking block")
    elif parsed.thinking:
        return SourceScore(0.0, "thinking in fast mode")
    if not parsed.answer:
        return SourceScore(0.0, "no answer after thinking")
    return SourceScore(1.0)


def repeated_ngram_share(text: str, n: int) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier one (0 when fewer than n words)."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / total


def repetition_score(response: str, config: ShapingConfig) -> SourceScore:
    """1 - the share of repeated ``config.ngram``-grams; a reason once a fifth or more repeat."""
    share = repeated_ngram_share(response, config.ngram)
    return SourceScore(1.0 - share, f"{share:.0%} repeated {config.ngram}-grams" if share >= 0.2 else "")


def length_score(response: str, mode: str, config: ShapingConfig) -> SourceScore:
    """1 within the budget of the mode (in auto mode, the mode the response took), falling to 0 at
    ``length_hard_factor`` times the budget; tokens are whitespace-separated words."""
    mode = chosen_mode(response, mode)
    budget = config.slow_budget if mode == "slow" else config.fast_budget
    tokens = len(response.split())
    if tokens <= budget:
        return SourceScore(1.0)
    hard = budget * config.length_hard_factor
    score = max(0.0, (hard - tokens) / (hard - budget))
    return SourceScore(score, f"{tokens} tokens over the {mode} budget of {budget}")
