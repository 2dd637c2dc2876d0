"""Generated arithmetic problems at difficulty levels 1-5, deterministic by seed, with disjoint splits.

Levels grow by number of operations, digit counts, parentheses and wording:

====  ============================================  =====================================
level  shape                                          example
====  ============================================  =====================================
1      one operation on single digits                 ``7+5``
2      one operation on two-digit numbers             ``47+38``
3      two operations on two-digit numbers            ``47+38-19``
4      three operations with parentheses              ``(47+38)-(19+26)``
5      three operations in a word problem             ``Ann has 47 pens, gets 38, ... now?``
====  ============================================  =====================================

Every operation is an addition or subtraction, every number has one or two digits and every
intermediate value stays in [0, 999], so each step is schoolbook column arithmetic a small model can
learn, and the harder levels differ from level 3 in what a step has to be found from (parentheses,
wording) rather than in new facts. The parser and the teacher also handle ``*`` and ``/``, for a
user's own problems. A problem belongs to the test split when a hash of its prompt falls below
``test_share``: the splits are disjoint by construction and stable across seeds, counts and library
versions (the hash is SHA-1 of the prompt text).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from pangu_core.tasks.dataset import Task

LEVELS = (1, 2, 3, 4, 5)
SPLITS = ("train", "test")
MAX_VALUE = 999


@dataclass(frozen=True)
class Step:
    """One binary operation of a worked solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int


_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def expression_tokens(expression: str) -> list[str]:
    """The numbers, operators and parentheses of ``expression``, spaces dropped; ValueError on anything else."""
    pos, out = 0, []
    text = expression.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"expression: unexpected character {text[pos]!r} at {pos} in {expression!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def postfix_tokens(expression: str) -> list[str]:
    """``expression`` (non-negative integers, + - * / and parentheses) in postfix order.

    Raises TypeError / ValueError on malformed input.
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression: expected str, got {type(expression).__name__}")
    output: list[str] = []
    stack: list[str] = []
    expect_operand = True
    for token in expression_tokens(expression):
        if token.isdigit():
            if not expect_operand:
                raise ValueError(f"expression: two numbers in a row in {expression!r}")
            output.append(token)
            expect_operand = False
        elif token == "(":
            if not expect_operand:
                raise ValueError(f"expression: '(' after a number in {expression!r}")
            stack.append(token)
        elif token == ")":
            while stack and stack[-1] != "(":
                output.append(stack.pop())
            if not stack or expect_operand:
                raise ValueError(f"expression: unbalanced ')' in {expression!r}")
            stack.pop()
        else:
            if expect_operand:
                raise ValueError(f"expression: operator {token!r} without a left operand in {expression!r}")
            while stack and stack[-1] != "(" and _PRECEDENCE[stack[-1]] >= _PRECEDENCE[token]:
                output.append(stack.pop())
            stack.append(token)
            expect_operand = True
    if expect_operand:
        raise ValueError(f"expression: ends without an operand: {expression!r}")
    while stack:
        if stack[-1] == "(":
            raise ValueError(f"expression: unbalanced '(' in {expression!r}")
        output.append(stack.pop())
    return output


def arithmetic_steps(expression: str, postfix: list[str] | None = None) -> list[Step]:
    """The steps of evaluating ``expression`` (non-negative integers, + - * / and parentheses).

    Steps come in postfix order: left to right, products before sums, parentheses first, which is
    the order a person works them. Division must be exact. Raises ValueError on malformed input.
    ``postfix`` is ``postfix_tokens(expression)`` when the caller has it already.
    """
    output = postfix_tokens(expression) if postfix is None else postfix
    values: list[int] = []
    steps: list[Step] = []
    for token in output:
        if token.isdigit():
            values.append(int(token))
            continue
        right, left = values.pop(), values.pop()
        if token == "+":
            result = left + right
        elif token == "-":
            result = left - right
        elif token == "*":
            result = left * right
        else:
            if right == 0 or left % right:
                raise ValueError(f"expression: {left}/{right} is not an exact division in {expression!r}")
            result = left // right
        steps.append(Step(left, token, right, result))
        values.append(result)
    return steps


def evaluate(expression: str) -> int:
    """The value of an arithmetic expression (see :func:`arithmetic_steps`)."""
    steps = arithmetic_steps(expression)
    return steps[-1].result if steps else int(expression_tokens(expression)[0].strip("()"))


_NAMES = ("Ann", "Bob", "Eva", "Tom", "Mia", "Sam")
_ITEMS = ("pens", "cards", "coins", "shells", "stamps", "beads")
# Verbs of a word problem's steps, by the sign they give the number after them.
_VERBS = {"+": ("gets", "finds", "buys"), "-": ("gives away", "loses", "sells")}
# Level 4 shapes: three operations on two-digit numbers with one or two parenthesised groups.
_PAREN_SHAPES = ("({a}{o1}{b}){o2}({c}{o3}{d})", "{a}{o1}({b}{o2}{c}){o3}{d}", "{a}{o1}{b}{o2}({c}{o3}{d})")


def _two_digit(rng: random.Random) -> int:
    return rng.randint(10, 99)


def _candidate(rng: random.Random, level: int) -> tuple[str, str]:
    """(prompt, expression) for one random problem of ``level``; may break the value bounds."""
    ops = "+-"
    if level == 1:
        expression = f"{rng.randint(0, 9)}{rng.choice(ops)}{rng.randint(0, 9)}"
        return expression, expression
    if level == 2:
        expression = f"{_two_digit(rng)}{rng.choice(ops)}{_two_digit(rng)}"
        return expression, expression
    if level == 3:
        a, b, c = (_two_digit(rng) for _ in range(3))
        expression = f"{a}{rng.choice(ops)}{b}{rng.choice(ops)}{c}"
        return expression, expression
    if level == 4:
        numbers = {name: _two_digit(rng) for name in "abcd"}
        signs = {name: rng.choice(ops) for name in ("o1", "o2", "o3")}
        expression = rng.choice(_PAREN_SHAPES).format(**numbers, **signs)
        return expression, expression
    start, signs = _two_digit(rng), [rng.choice(ops) for _ in range(3)]
    numbers = [_two_digit(rng) for _ in signs]
    clauses = ", ".join(f"{rng.choice(_VERBS[sign])} {number}" for sign, number in zip(signs, numbers))
    prompt = f"{rng.choice(_NAMES)} has {start} {rng.choice(_ITEMS)}, {clauses}. How many now?"
    expression = f"{start}" + "".join(f"{sign}{number}" for sign, number in zip(signs, numbers))
    return prompt, expression


def in_test_split(prompt: str, test_share: float) -> bool:
    """Whether ``prompt`` belongs to the test split (a stable hash of the text below ``test_share``)."""
    digest = hashlib.sha1(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_share


def check_generation_args(count: object, levels: object, split: object, test_share: object) -> tuple[int, ...]:
    """Validates the arguments every task generator takes; returns ``levels`` as a tuple.

    Raises one ValueError naming every bad argument.
    """
    problems = []
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        problems.append(f"count: expected an int >= 0, got {count!r}")
    levels = tuple(levels) if isinstance(levels, (tuple, list)) else levels
    if not isinstance(levels, tuple) or not levels or any(level not in LEVELS for level in levels):
        problems.append(f"levels: expected a non-empty list of values in {LEVELS}, got {levels!r}")
    if split not in SPLITS:
        problems.append(f"split: expected one of {SPLITS}, got {split!r}")
    if not isinstance(test_share, (int, float)) or not 0.0 < test_share < 1.0:
        problems.append(f"test_share: expected a float in (0, 1), got {test_share!r}")
    if problems:
        raise ValueError("; ".join(problems))
    return levels


def generate_math_tasks(
    count: int,
    levels: tuple[int, ...] | list[int] = LEVELS,
    split: str = "train",
    seed: int = 0,
    test_share: float = 0.2,
    unique: bool | None = None,
) -> list[Task]:
    """``count`` problems spread evenly (round robin) over ``levels`` from one split.

    Deterministic in (count, levels, split, seed, test_share). ``unique`` (default: True for the
    test split, False for train) drops repeated prompts; level 1 has only 155 distinct problems,
    so a unique request may return fewer than asked for that level.
    """
    levels = check_generation_args(count, levels, split, test_share)
    unique = split == "test" if unique is None else unique
    want_test = split == "test"
    per_level = [count // len(levels) + (1 if i < count % len(levels) else 0) for i in range(len(levels))]
    by_level: list[list[Task]] = []
    for level, wanted in zip(levels, per_level):
        rng = random.Random(f"pangu-math:{seed}:{level}:{split}")
        seen: set[str] = set()
        found: list[Task] = []
        misses = 0
        # A level whose split has run out of new problems shows as a long streak of misses.
        while len(found) < wanted and misses < 5000:
            misses += 1
            prompt, expression = _candidate(rng, level)
            if in_test_split(prompt, test_share) != want_test or (unique and prompt in seen):
                continue
            steps = arithmetic_steps(expression)
            if not all(0 <= step.result <= MAX_VALUE for step in steps):
                continue
            misses = 0
            seen.add(prompt)
            found.append(Task(prompt=prompt, reference=str(steps[-1].result), task_type="math",
                              difficulty=level, meta={"expression": expression}))
        by_level.append(found)
    # Interleave levels so any prefix of the list is balanced.
    out = []
    for i in range(max((len(f) for f in by_level), default=0)):
        out.extend(f[i] for f in by_level if i < len(f))
    return out
