"""The programmatic teacher: slow answers that work every step, fast answers that give only the result.

Both use the one response format of :mod:`pangu_core.dual.response`: a thinking block, then the
final answer in ``\\boxed{}``. A slow answer's thinking first restates the problem as an expression
in which every number carries a label (a Greek letter), then works one operation per line: the
operands with their labels, the schoolbook columns right to left with carries and borrows, and the
result under a new label::

    <think>α47 +β38 -γ19
    α47 +β38: 7+8=15 4+3+1=8 =δ85
    δ85 -γ19: 15-9=6 8-1-1=6 =ε66
    </think>\\boxed{66}

The labels are index hints: a small model finds the next operand by matching its label against
the earlier text instead of counting characters back to it, which it fails at without them. Two
choices make the match exact:

- Labels are symbols no generated prompt contains. With Latin letters, a word problem's own words
  ("cards", "finds") held the same tokens, so "the token after the label" had several answers.
- A label sits directly before the digits of its number (``-γ19``), so the first digit of a
  copied operand is the token right after the label. With the label before the operator
  (``c-19``) the first digit sat two tokens away, and that digit was where copies broke.

The operator comes before the label, with a space before it, as it stands in the expression.
Single-digit operations are written as one fact in the same form as a column
(``α7 +β5: 7+5=12 =γ12``); other products, divisions and negative results as one line
(``α12 *β3 =γ36``). A fast answer is ``<think></think>\\boxed{66}``.
"""

from __future__ import annotations

from pangu_core.dual.response import DEFAULT_MARKERS, ThinkingMarkers
from pangu_core.tasks.dataset import Task
from pangu_core.tasks.math_tasks import Step, arithmetic_steps, expression_tokens, postfix_tokens

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


# Greek lower and upper case: one character (and one token of the character-level tokenizer) each,
# and never part of a generated prompt.
LABELS = "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"


def labelled_expression(expression: str) -> str:
    """``expression`` without spaces, each number labelled in order (``α47 +β38 -γ19``).

    An operator directly before a number gets a space before it.
    """
    out, numbers = [], 0
    for token in expression_tokens(expression):
        if token.isdigit():
            if numbers >= len(LABELS):
                raise ValueError(f"expression: more than {len(LABELS)} numbers to label in {expression!r}")
            label = LABELS[numbers]
            numbers += 1
            if out and out[-1] in "+-*/":
                out[-1] = f" {out[-1]}"
            out.append(label + token)
        else:
            out.append(token)
    return "".join(out)


def _work(step: Step) -> str:
    """The working of one operation after its head: columns, one fact, or nothing."""
    if step.left < 10 and step.right < 10 and step.result >= 0:
        return f"{step.left}{step.op}{step.right}={step.result}"
    if step.op == "+":
        return _column_add(step.left, step.right)
    if step.op == "-" and step.result >= 0:
        return _column_subtract(step.left, step.right)
    return ""


def render_step(step: Step) -> str:
    """One operation worked without labels (``47+38: 7+8=15 4+3+1=8 =85``)."""
    head, work = f"{step.left}{step.op}{step.right}", _work(step)
    if work and not (step.left < 10 and step.right < 10):
        return f"{head}: {work} ={step.result}"
    return f"{head}={step.result}"


def slow_thinking(expression: str) -> str:
    """The thinking text (without markers) that works ``expression`` step by step (see the module doc)."""
    postfix = postfix_tokens(expression)
    steps = arithmetic_steps(expression, postfix)
    numbers = [int(t) for t in postfix if t.isdigit()]  # postfix keeps the operands' order
    if len(numbers) + len(steps) > len(LABELS):
        raise ValueError(f"expression: more than {len(LABELS)} numbers and results to label in {expression!r}")
    lines = [labelled_expression(expression)]
    # Operands in evaluation order: (label, value); results are pushed as they are made.
    stack: list[tuple[str, int]] = []
    leaves = iter(zip(LABELS, numbers))
    postfix_results = iter(steps)
    next_label = len(numbers)
    for token in postfix:
        if token.isdigit():
            stack.append(next(leaves))
            continue
        step = next(postfix_results)
        (right_label, _), (left_label, _) = stack.pop(), stack.pop()
        label = LABELS[next_label]
        next_label += 1
        head = f"{left_label}{step.left} {step.op}{right_label}{step.right}"
        work = _work(step)
        lines.append(f"{head}: {work} ={label}{step.result}" if work else f"{head} ={label}{step.result}")
        stack.append((label, step.result))
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
        thinking = slow_thinking(expression)
    except ValueError as error:
        raise ValueError(f"task {task.id}: no arithmetic expression to work through ({error})") from error
    return f"{markers.open}{thinking}{markers.close}{boxed(task.reference)}"
