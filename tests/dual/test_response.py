"""Splitting responses into thinking and answer, and finding the final answer outside thinking."""

from __future__ import annotations

import pytest

from pangu_core.dual.response import (
    AUTO_TAG, FAST_TAG, ThinkingMarkers, extract_final_answer, last_boxed, split_thinking,
)


def _parts(parsed):
    return parsed.thinking, parsed.answer, parsed.closed


def test_split_variants():
    assert _parts(split_thinking("<think> a </think> b ")) == ("a", "b", True)
    assert _parts(split_thinking("plain")) == (None, "plain", True)
    assert _parts(split_thinking("<think>cut off")) == ("cut off", "", False)
    # The open marker is often in the prompt: a lone close marker still splits.
    assert _parts(split_thinking("reasoning</think>answer")) == ("reasoning", "answer", True)
    assert _parts(split_thinking("<think></think>fast")) == ("", "fast", True)


def test_custom_markers():
    markers = ThinkingMarkers("[unused16]", "[unused17]")
    assert _parts(split_thinking("[unused16]r[unused17]a", markers)) == ("r", "a", True)


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{1} and \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize("response, answer", [
    ("<think>\\boxed{1}</think>\\boxed{2}", "2"),
    ("<think>x</think>The final answer is: 17.", "17"),
    ("<think>x</think>Answer: $x = 3$", "x = 3"),
    ("<think>x</think>we get 2 then 1,024", "1024"),
    ("<think>the answer is 5</think>nothing numeric", None),
    ("<think>unfinished \\boxed{4}", None),
    ("", None),
])
def test_final_answer(response, answer):
    assert extract_final_answer(response) == answer


def test_tags_and_errors():
    assert FAST_TAG == "/no_think" and AUTO_TAG == "/auto_think"
    with pytest.raises(TypeError, match="response"):
        split_thinking(None)  # type: ignore[arg-type]
