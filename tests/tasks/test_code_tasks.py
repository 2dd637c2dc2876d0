"""Generated programming problems: references pass their tests, wrong code fails, splits are disjoint."""

from __future__ import annotations

import pytest

from pangu_core.tasks.code_tasks import FAMILIES, generate_code_tasks, run_tests


def test_every_family_reference_passes_and_a_wrong_answer_fails():
    # Each family's reference solution passes all its tests; an empty program fails them.
    tasks = generate_code_tasks(len(FAMILIES) * 2, seed=2)
    assert {t.difficulty for t in tasks} == set(FAMILIES)
    for task in tasks:
        assert task.task_type == "code" and task.tests
        assert all(run_tests(task.reference, task.tests)), task.prompt
    assert not any(run_tests("print('nope')\n", tasks[0].tests + tasks[1].tests))


def test_deterministic_and_disjoint():
    train = generate_code_tasks(40, seed=1)
    assert [t.to_dict() for t in train] == [t.to_dict() for t in generate_code_tasks(40, seed=1)]
    test = generate_code_tasks(40, split="test", seed=1)
    assert test and not {t.prompt for t in train} & {t.prompt for t in test}


def test_timeouts_and_bad_arguments():
    assert run_tests("while True: pass\n", [{"assert": "assert True"}], timeout=0.5) == [False]
    with pytest.raises(ValueError) as error:
        generate_code_tasks(-2, levels=[7], split="x")
    assert all(n in str(error.value) for n in ("count", "levels", "split"))
    with pytest.raises(ValueError, match="timeout"):
        run_tests("", [], timeout=0)
