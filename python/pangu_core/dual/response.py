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


# Final answers are looked for only in the last ANSWER_WINDOW characters of the answer part: a final
# answer sits at the end, and the cap bounds the work on a runaway response (10 MB of braces, of
# "answer is", of numbers) before any parsing. A \boxed{} opened before the window does not count.
ANSWER_WINDOW = 1 << 16

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    One pass over the braces with a stack (linear time): an opening that is never closed, however
    many there are, costs nothing beyond the pass.
    """
    box_braces = {m.end() - 1 for m in _BOX_OPEN.finditer(text)}
    if not box_braces:
        return None
    best: tuple[int, int] | None = None
    stack: list[int] = []
    for brace in _BRACE.finditer(text, min(box_braces)):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            start = stack.pop()
            if start in box_braces and (best is None or start > best[0]):
                best = (start, brace.start())
    return None if best is None else text[best[0] + 1:best[1]].strip()


# "answer is", "answer:", "answer =" and what follows on that line (no backtracking over the line).
_ANSWER_PREFIX = re.compile(r"answer\s*(?:is|:|=)\s*[:=]?\s*", re.IGNORECASE)
_NONSPACE = re.compile(r"\S")


def _phrase_end(text: str, start: int, line_end: int) -> int:
    """Where a phrase from ``start`` to ``line_end`` stops: before trailing spaces, then one final
    full stop (and spaces before it), then a closing $, as in "$x = 3$ ."; never before ``start``."""
    end = line_end
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start and text[end - 1] == ".":
        end -= 1
        while end > start and text[end - 1].isspace():
            end -= 1
    if end > start and text[end - 1] == "$":
        end -= 1
    return end


def _answer_phrase(text: str) -> str | None:
    """The last "answer is ..." phrase: the rest of its line without surrounding $ and a final full
    stop; a line with $ inside the phrase (several formulas) gives none. Linear in ``len(text)``:
    each line's end, phrase end and last $ are found once, whatever the number of "answer"s on it."""
    last, pos = None, 0
    line_end = phrase_end = last_dollar = -1
    while True:
        match = _ANSWER_PREFIX.search(text, pos)
        if match is None:
            return last
        start = match.end()
        if start > line_end:  # the first phrase on a new line: measure the line once
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
            phrase_end = _phrase_end(text, start, line_end)
            last_dollar = text.rfind("$", start, phrase_end)
        begin = start + 1 if start < line_end and text[start] == "$" else start
        first = _NONSPACE.search(text, begin, phrase_end) if begin < phrase_end else None
        if first is not None and last_dollar < begin:
            last, pos = text[first.start():phrase_end].strip(), line_end
        else:
            pos = match.start() + 1


# A number; commas only as thousands separators (1,250), so "9, 10" is two numbers.
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?![\d])(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# Relations and qualifiers that make a value a bound or a guess, not an answer ("\ge 12", "about 12").
RELATION = re.compile(r"\\(?:geqslant|leqslant|geq|leq|ge|le|gt|lt|neq|ne|approx|simeq|sim|pm|mp|gtrsim|lesssim)"
                      r"(?![A-Za-z])|[<>≤≥≠≈±∓≲≳∼≃]")
QUALIFIER = re.compile(r"\b(?:at\s+least|at\s+most|more\s+than|less\s+than|fewer\s+than|greater\s+than|"
                       r"approximately|approx|about|around|roughly|nearly|almost|maybe|perhaps|possibly|"
                       r"probably|either|or\s+more|or\s+less|or\s+fewer|or\s+so)\b", re.IGNORECASE)
# Words and marks that join the numbers of a list ("10, 11, or 12", "between 10 and 12").
_LIST_JOINERS = {",", ";", "/", "or", "and", "nor", "to", "either", "&"}
_CONTEXT = 40  # characters either side of the last number searched for a qualifier


def _last_number(text: str) -> str | None:
    """The last number of ``text``, or None when there is none or it is hedged: one of a list of
    candidates ("10, 11, or 12", "10 or 12"), or qualified ("about 12", "\\ge 12", "12 or more")."""
    last = previous = None
    for match in _NUMBER.finditer(text):
        previous, last = last, match
    if last is None:
        return None
    if previous is not None:
        gap = text[previous.end():last.start()].replace(",", " , ").replace(";", " ; ").lower().split()
        if gap and all(word in _LIST_JOINERS for word in gap):
            return None
    before = text[max(0, last.start() - _CONTEXT):last.start()].rstrip()
    after = text[last.end():last.end() + _CONTEXT].lstrip()
    near = " ".join(before.split()[-2:] + ["#"] + after.split()[:2])  # the two words either side
    if RELATION.search(before[-12:]) or QUALIFIER.search(near) or after.startswith("+"):
        return None
    return last.group().replace(",", "")


def extract_final_answer(response: str, markers: ThinkingMarkers = DEFAULT_MARKERS) -> str | None:
    """The final answer of a response, or None when it has none.

    Looks only outside the thinking block (an unclosed block has no answer), and there only in the
    last :data:`ANSWER_WINDOW` characters: the last ``\\boxed{}``, else the last "answer is ..."
    phrase, else the last number unless it is hedged (one of a list "10, 11, or 12", or qualified
    "about 12", "\\ge 12"). Linear time in the length of ``response``.
    """
    answer = split_thinking(response, markers).answer
    if not answer:
        return None
    answer = answer[-ANSWER_WINDOW:]
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed
    phrase = _answer_phrase(answer)
    if phrase is not None:
        return phrase
    return _last_number(answer)
