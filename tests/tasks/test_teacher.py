"""The programmatic teacher: every answer correct, every written step true, one response format."""

from __future__ import annotations

import re

import pytest
from math_verify import parse, verify

from pangu_core.dual.response import extract_final_answer, split_thinking
from pangu_core.tasks.dataset import Task
from pangu_core.tasks.math_tasks import generate_math_tasks
from pangu_core.tasks.teacher import LABELS, labelled_expression, render_step, slow_thinking, teacher_response
from pangu_core.tasks.math_tasks import Step

_FACT = re.compile(r"(\d+)([-+*])(\d+)(?:([-+])1)?=(\d+)")


def test_ten_thousand_teacher_answers_are_correct():
    # Teacher correctness: 10,000 answers (both modes, all levels) give the reference through the
    # shared extractor; a sample is also confirmed by math-verify.
    tasks = generate_math_tasks(5000, seed=11)
    responses = [(task, teacher_response(task, mode)) for task in tasks for mode in ("slow", "fast")]
    assert len(responses) == 10_000
    for task, response in responses:
        assert extract_final_answer(response) == task.reference, response
    for task, response in responses[::100]:
        gold = parse(f"${task.reference}$", parsing_timeout=None)
        guess = parse(extract_final_answer(response), parsing_timeout=None)
        assert verify(gold, guess, timeout_seconds=None)


def test_every_written_fact_in_slow_thinking_is_true():
    # Trace honesty: each column fact ("7+8=15", "15-9-1=5", "6*7=42") is arithmetic truth.
    for task in generate_math_tasks(1000, seed=12):
        thinking = split_thinking(teacher_response(task, "slow")).thinking
        for a, op, b, extra, c in _FACT.findall(thinking):
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            value += {"+": 1, "-": -1, "": 0}[extra]
            assert value == int(c), (thinking, a, op, b, extra, c)


def test_slow_and_fast_share_one_format():
    # Fast answers have an empty thinking block; slow ones a closed, non-empty block; both box the answer.
    task = Task(prompt="47+38-19", reference="66", meta={"expression": "47+38-19"})
    slow = teacher_response(task, "slow")
    assert slow == ("<think>α47 +β38 -γ19\nα47 +β38: 7+8=15 4+3+1=8 =δ85\nδ85 -γ19: 15-9=6 8-1-1=6 =ε66\n"
                    "</think>\\boxed{66}")
    fast = teacher_response(task, "fast")
    assert fast == "<think></think>\\boxed{66}"
    assert split_thinking(fast).thinking == "" and split_thinking(slow).closed


def test_word_problems_restate_the_expression_first():
    task = next(t for t in generate_math_tasks(5, levels=[5]))
    thinking = split_thinking(teacher_response(task)).thinking
    assert re.sub(f"[{LABELS} ]", "", thinking.splitlines()[0]) == task.meta["expression"]


_LABEL = f"([{LABELS}])"
_LABELLED = re.compile(_LABEL + r"(\d+)")
_LINE = re.compile(_LABEL + r"(\d+) ([-+*/])" + _LABEL + r"(\d+)(?:: .*)? =" + _LABEL + r"(\d+)")


def test_labels_name_each_value_once_and_operands_keep_theirs():
    # The first line labels every number; each later line uses only labels defined before it with
    # their values, and defines a new label for its result; the last result is the reference.
    for task in generate_math_tasks(500, seed=13):
        lines = split_thinking(teacher_response(task, "slow")).thinking.splitlines()
        values = {label: int(number) for label, number in _LABELLED.findall(lines[0])}
        assert len(values) == len(_LABELLED.findall(lines[0]))
        for line in lines[1:]:
            match = _LINE.fullmatch(line)
            assert match, line
            left_label, left, op, right_label, right, label, result = match.groups()
            assert values[left_label] == int(left) and values[right_label] == int(right), line
            assert label not in values
            values[label] = int(result)
        assert str(values[label]) == task.reference


def test_labelled_expression_puts_each_label_right_before_its_digits():
    assert labelled_expression("47+38-19") == "α47 +β38 -γ19"
    assert labelled_expression("(47 + 38)-(19+6)") == "(α47 +β38)-(γ19 +δ6)"
    assert labelled_expression("3*4+47") == "α3 *β4 +γ47"


def test_labels_never_occur_in_generated_prompts():
    # A label is found by matching it against the earlier text, so no prompt may contain one.
    prompts = "".join(task.prompt for task in generate_math_tasks(2000, seed=14))
    assert not set(prompts) & set(LABELS)


def test_too_many_numbers_to_label_is_named():
    with pytest.raises(ValueError, match="more than 48 numbers to label"):
        labelled_expression("+".join(["1"] * 49))
    with pytest.raises(ValueError, match="numbers and results"):
        slow_thinking("+".join(["1"] * 30))


def test_steps_outside_column_forms_are_written_directly():
    assert render_step(Step(12, "*", 3, 36)) == "12*3=36"
    assert render_step(Step(5, "-", 9, -4)) == "5-9=-4"
    assert render_step(Step(47, "+", 38, 85)) == "47+38: 7+8=15 4+3+1=8 =85"
    assert slow_thinking("100-1") == "α100 -β1\nα100 -β1: 10-1=9 10-0-1=9 1-0-1=0 =γ99\n"
    assert slow_thinking("12*3") == "α12 *β3\nα12 *β3 =γ36\n"
    assert slow_thinking("7+5") == "α7 +β5\nα7 +β5: 7+5=12 =γ12\n"


def test_teacher_rejects_what_it_cannot_answer():
    with pytest.raises(ValueError, match="mode"):
        teacher_response(Task(prompt="1+1", reference="2"), "auto")
    with pytest.raises(ValueError, match="no arithmetic expression"):
        teacher_response(Task(prompt="How tall is a tree?", reference="3"), "slow")
    with pytest.raises(ValueError, match="math"):
        teacher_response(Task(prompt="code", reference="pass", task_type="code"), "fast")
    with pytest.raises(TypeError, match="task"):
        teacher_response("1+1")
