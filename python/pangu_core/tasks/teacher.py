"""The programmatic teacher: slow answers that work every step, fast answers that give only the result.

Both use the one response format of :mod:`pangu_core.dual.response`: a thinking block, then the
final answer in ``\\boxed{}``. A slow answer's thinking writes the problem as an expression when it
was posed in words, then one line per operation in schoolbook column form, right to left, with carries and borrows::

    <think>47+38: 7+8=15 4+3+1=8 =85
    85-19: 15-9=6 8-1-1=6 =66
    </think>\\boxed{66}

Single-digit sums, differences and products are written directly (``3+5=8``, ``6*7=42``); other
products, divisions and negative results are written as one line (``x*y=z``). A fast answer is
``<think></think>\\boxed{66}``.
"""

from __future__ import annotations

from pangu_core.dual.response import DEFAULT_MARKERS, ThinkingMarkers
from pangu_core.tasks.dataset import Task
from pangu_core.tasks.math_tasks import Step, arithmetic_steps

TEACHER_MODES = ("slow", "fast")


def _digits(value: int, width: int) -> list[int]:
    """Digits of ``value`` from the units up, padded with zeros to ``width``."""
    return [(value // 10**i) % 10 for i in range(width)]


def _column_add(left: int, right: int) -> str:
    width = max(len(str(left)), len(str(right)))
    parts, carry = [], 0
    for a, b in zip(_digits(left, width), _digits(right, width)):
        total = a + b + carry
        parts.append(f"{a}+{b}+1={total}" if carry else f"{a}+{b}={total}")
        carry = total // 10
    return " ".join(parts)


def _column_subtract(left: int, right: int) -> str:
    width = len(str(left))
    parts, borrow = [], 0
    for a, b in zip(_digits(left, width), _digits(right, width)):
        minuend = a + 10 if a - b - borrow < 0 else a
        diff = minuend - b - borrow
        parts.append(f"{minuend}-{b}-1={diff}" if borrow else f"{minuend}-{b}={diff}")
        borrow = 1 if minuend > a else 0
    return " ".join(parts)


def render_step(step: Step) -> str:
    """One line of slow thinking for one operation."""
    head = f"{step.left}{step.op}{step.right}"
    if step.left < 10 and step.right < 10 and step.result >= 0:
        return f"{head}={step.result}"
    if step.op == "+":
        return f"{head}: {_column_add(step.left, step.right)} ={step.result}"
    if step.op == "-" and step.result >= 0:
        return f"{head}: {_column_subtract(step.left, step.right)} ={step.result}"
    return f"{head}={step.result}"


def slow_thinking(expression: str, restate: bool = False) -> str:
    """The thinking text (without markers) that works ``expression`` step by step.

    ``restate`` first writes the expression itself (used when the prompt is in words).
    """
    steps = arithmetic_steps(expression)
    lines = [render_step(step) for step in steps]
    if restate:
        lines.insert(0, expression.replace(" ", ""))
    return "\n".join(lines) + "\n"


def boxed(answer: str) -> str:
    """The visible answer part of a response."""
    return f"\\boxed{{{answer}}}"


def teacher_response(task: Task, mode: str = "slow", markers: ThinkingMarkers = DEFAULT_MARKERS) -> str:
    """The teacher's response to ``task`` in ``mode`` ("slow" or "fast").

    Slow mode needs an arithmetic expression: ``task.meta["expression"]``, else the prompt itself.
    Fast mode only needs the reference.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected Task, got {type(task).__name__}")
    if mode not in TEACHER_MODES:
        raise ValueError(f"mode: expected one of {TEACHER_MODES}, got {mode!r}")
    if task.task_type != "math":
        raise ValueError(f"task: the teacher writes math answers only, got task_type {task.task_type!r}")
    if mode == "fast":
        return f"{markers.open}{markers.close}{boxed(task.reference)}"
    expression = str(task.meta.get("expression", task.prompt))
    try:
        thinking = slow_thinking(expression, restate=expression.replace(" ", "") != task.prompt.replace(" ", ""))
    except ValueError as error:
        raise ValueError(f"task {task.id}: no arithmetic expression to work through ({error})") from error
    return f"{markers.open}{thinking}{markers.close}{boxed(task.reference)}"
