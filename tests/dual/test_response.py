"""Splitting responses into thinking and answer, and finding the final answer outside thinking."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("text", [
    "it could be 10, 11, or 12", "10 or 12", "10,11,12", "between 10 and 12", "from 10 to 12", "x \\ge 12",
    "it is at least 12", "about 12 apples", "12 or more", "roughly 12", "12 \\pm 1", "12 ± 1", "x > 12", "12+",
])
def test_hedged_numbers_are_no_answer(text):
    # The last-number fallback must not turn a list of candidates or a bound into an answer.
    assert extract_final_answer(text) is None


@pytest.mark.parametrize("text, answer", [
    ("It is 12.", "12"), ("$12$", "12"), ("x = 12", "12"), ("1 + 2 = 3", "3"), ("we get about 3 apples, then 12", "12"),
    ("a total of 1,250,000 people", "1250000"), ("-7 degrees", "-7"), ("half is .5", ".5"), ("so 3/4", "3/4"),
])
def test_plain_numbers_are_still_answers(text, answer):
    assert extract_final_answer(text) == answer


# The "answer is" pattern this module used before (quadratic on long lines): on ordinary lines the
# linear scan must find the same phrase (these texts have no number to fall back on).
_OLD_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*[:=]?\s*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", re.IGNORECASE | re.MULTILINE)


@pytest.mark.parametrize("text", [
    "The answer is 42.", "answer: $x = 3$", "Answer = 7", "The final answer is: \\frac{1}{2}.", "ANSWER IS  5  .",
    "the answer is\n\n 9", "answer is 5$ .", "answer is 2. Then the answer is 3.", "so the answer: := 4",
    "first answer is 1\nsecond answer is 2\n", "answer is $a$ and $b$\nanswer is 6", "answer is 5..", "the answer is x. $",
    "answer is $a$ and the answer is 7", "answer is 1, answer is $2$", "answer: $", "answer =\t$ $",
])
def test_answer_phrase_matches_the_old_pattern(text):
    old = _OLD_ANSWER_IS.findall(text)
    # An empty phrase (the old pattern could capture a lone space) is no answer now.
    assert extract_final_answer(text) == (old[-1].strip() or None if old else None)


def test_a_phrase_of_nothing_is_no_answer():
    # The old pattern captured the full stop itself here; a phrase with nothing in it is none.
    assert extract_final_answer("The answer is .") is None
    assert extract_final_answer("The answer is $ $. We had 4") == "4"


def test_last_boxed_takes_the_last_closed_box():
    # Stack matching in one pass gives what the per-box scan gave: the last box that closes.
    assert last_boxed("\\boxed{1} \\boxed{2") == "1"
    assert last_boxed("{ \\boxed{a{b}c} } \\boxed{") == "a{b}c"
    assert last_boxed("} \\boxed {x} }") == "x"
    assert last_boxed("\\boxed{\\boxed{3}}") == "3"  # the box opened last
    assert last_boxed("no box") is None
