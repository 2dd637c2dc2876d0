"""Reading a model response: the thinking block, the answer after it, and the final answer.

One format for teacher traces, student samples and rewards: the response starts with a thinking
block (``<think>`` ... ``</think>``, empty in fast mode) followed by the visible answer, whose final
result sits in ``\\boxed{...}``. Real checkpoints use other marker strings (openPangu writes its
own special tokens): pass them as :class:`ThinkingMarkers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tags at the end of the user turn that pick the mode, as openPangu-Embedded does.
FAST_TAG = "/no_think"
AUTO_TAG = "/auto_think"
MODES = ("slow", "fast", "auto")


@dataclass(frozen=True)
class ThinkingMarkers:
    """The strings that open and close the thinking block."""

    open: str = "<think>"
    close: str = "</think>"


DEFAULT_MARKERS = ThinkingMarkers()


@dataclass(frozen=True)
class ParsedResponse:
    """A response split into its parts.

    ``thinking`` is None when the response has no thinking block at all; ``closed`` is False when
    the block was opened but its close marker never came (the model ran out of tokens or forgot),
    in which case everything after the open marker counts as thinking and ``answer`` is empty.
    """

    thinking: str | None
    answer: str
    closed: bool


def split_thinking(response: str, markers: ThinkingMarkers = DEFAULT_MARKERS) -> ParsedResponse:
    """Splits ``response`` into (thinking, answer). Robust to a missing open or close marker.

    A close marker without an open one is treated as if the response began with the open marker
    (chat templates often put the open marker in the prompt).
    """
    if not isinstance(response, str):
        raise TypeError(f"response: expected str, got {type(response).__name__}")
    start = response.find(markers.open)
    end = response.find(markers.close, start + len(markers.open) if start >= 0 else 0)
    if start < 0 and end < 0:
        return ParsedResponse(None, response.strip(), True)
    if start < 0:
        return ParsedResponse(response[:end].strip(), response[end + len(markers.close):].strip(), True)
    if end < 0:
        return ParsedResponse(response[start + len(markers.open):].strip(), "", False)
    return ParsedResponse(
        response[start + len(markers.open):end].strip(), response[end + len(markers.close):].strip(), True
    )


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    best = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[match.end():i - 1].strip()
    return best


_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*[:=]?\s*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_final_answer(response: str, markers: ThinkingMarkers = DEFAULT_MARKERS) -> str | None:
    """The final answer of a response, or None when it has none.

    Looks only outside the thinking block (an unclosed block has no answer): the last ``\\boxed{}``,
    else the last "answer is ..." phrase, else the last number.
    """
    answer = split_thinking(response, markers).answer
    if not answer:
        return None
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed
    phrases = _ANSWER_IS.findall(answer)
    if phrases:
        return phrases[-1].strip()
    numbers = _NUMBER.findall(answer)
    if numbers:
        return numbers[-1].replace(",", "")
    return None
