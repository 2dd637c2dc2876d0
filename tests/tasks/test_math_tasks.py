"""Tests of the arithmetic task generator: determinism, disjoint splits, levels, parser."""

from __future__ import annotations

import re

import pytest

from pangu_core.tasks.math_tasks import (
    LEVELS,
    MAX_VALUE,
    arithmetic_steps,
    evaluate,
    generate_math_tasks,
    in_test_split,
)


def test_same_seed_same_tasks_other_seed_other_tasks():
    # Determinism: a seed fixes the whole list; another seed gives a different one.
    first = generate_math_tasks(200, seed=3)
    again = generate_math_tasks(200, seed=3)
    other = generate_math_tasks(200, seed=4)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in again]
    assert [t.prompt for t in first] != [t.prompt for t in other]


def test_train_and_test_are_disjoint_and_follow_the_hash():
    # Disjointness: no prompt is in both splits, whatever the seeds.
    train = generate_math_tasks(1500, split="train", seed=0)
    test = generate_math_tasks(300, split="test", seed=1)
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    assert all(in_test_split(t.prompt, 0.2) for t in test)
    assert not any(in_test_split(t.prompt, 0.2) for t in train)
    assert len({t.prompt for t in test}) == len(test)  # test problems are unique


def test_levels_are_balanced_and_grow_in_steps_and_digits():
    # Difficulty: each level has its documented shape; harder levels need more operations.
    tasks = generate_math_tasks(1000, seed=5)
    by_level = {level: [t for t in tasks if t.difficulty == level] for level in LEVELS}
    assert all(len(group) == 200 for group in by_level.values())
    steps = {level: [len(arithmetic_steps(t.meta["expression"])) for t in group] for level, group in by_level.items()}
    assert set(steps[1]) == {1} and set(steps[2]) == {1} and set(steps[3]) == {2}
    assert set(steps[4]) == {3} and set(steps[5]) == {3}
    assert all(re.fullmatch(r"\d[+-]\d", t.prompt) for t in by_level[1])
    assert all(re.fullmatch(r"\d\d[+-]\d\d", t.prompt) for t in by_level[2])
    assert all(re.fullmatch(r"\d\d[+-]\d\d[+-]\d\d", t.prompt) for t in by_level[3])
    assert all("(" in t.prompt and len(re.findall(r"\d+", t.prompt)) == 4 for t in by_level[4])
    assert all(t.prompt.endswith("How many now?") for t in by_level[5])
    for task in tasks:
        assert all(0 <= s.result <= MAX_VALUE for s in arithmetic_steps(task.meta["expression"]))
        # The reference agrees with Python's own evaluation of the expression.
        assert int(task.reference) == eval(task.meta["expression"])  # noqa: S307 - digits and operators only


def test_word_problems_say_the_expression_in_words():
    # Each clause's verb gives the sign of its number; the numbers come in the expression's order.
    gives = {"gets": "+", "finds": "+", "buys": "+", "gives away": "-", "loses": "-", "sells": "-"}
    for task in generate_math_tasks(300, levels=[5], seed=6):
        start, *clauses = task.prompt.removesuffix(". How many now?").split(", ")
        said = re.fullmatch(r"[A-Z][a-z]+ has (\d+) [a-z]+", start).group(1)
        for clause in clauses:
            verb, number = clause.rsplit(" ", 1)
            said += gives[verb] + number
        assert said == task.meta["expression"]


def test_level_one_runs_out_of_unique_test_problems():
    # Level 1 has 155 problems; the unique test split holds about a fifth of them.
    test = generate_math_tasks(100, levels=[1], split="test")
    assert 15 < len(test) < 60


@pytest.mark.parametrize("expression, value", [("2+3*4", 14), ("(2+3)*4", 20), ("20-3-4", 13), ("84/4-1", 20), ("7", 7)])
def test_evaluate_follows_precedence_and_associativity(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", ["2+", "(2+3", "2+3)", "2 3", "2^3", "5/2", "*4"])
def test_malformed_expressions_are_rejected(expression):
    with pytest.raises(ValueError, match="expression"):
        arithmetic_steps(expression)


def test_bad_arguments_are_reported_together():
    with pytest.raises(ValueError) as error:
        generate_math_tasks(-1, levels=[0], split="dev", test_share=2.0)
    for name in ("count", "levels", "split", "test_share"):
        assert name in str(error.value)
