"""Generated programming problems: references pass their tests in MARS's sandbox, wrong code fails,
MARS scores responses to them, splits are disjoint."""

from __future__ import annotations

import ast

import pytest

from pangu_core.rewards import CodeTest, RewardConfig, RewardScorer, RouterConfig, SandboxLimits
from pangu_core.tasks.code_tasks import FAMILIES, generate_code_tasks, run_tests

pytestmark = pytest.mark.usefixtures("own_sandbox_runs")


def _wrong_solution(task) -> str:
    """A plausible but wrong program: the function redefined to return None, or a stray print."""
    names = [node.name for node in ast.parse(task.reference).body if isinstance(node, ast.FunctionDef)]
    if names:
        return task.reference + f"\ndef {names[0]}(*args):\n    return None\n"
    return "print('wrong')\n" + task.reference


def test_every_family_reference_passes_and_a_wrong_answer_fails():
    # Each family's reference solution passes all its tests (MARS's schema, run in its sandbox);
    # an unrelated program fails them.
    tasks = generate_code_tasks(len(FAMILIES) * 2, seed=2)
    assert {t.difficulty for t in tasks} == set(FAMILIES)
    for task in tasks:
        assert task.task_type == "code" and task.tests and all(isinstance(t, CodeTest) for t in task.tests)
        assert all(run_tests(task.reference, task.tests)), task.prompt
    assert not any(run_tests("print('nope')\n", tasks[0].tests + tasks[1].tests))


def test_mars_scores_generated_tasks():
    # A correct solution to a generated task earns reward 1 from MARS's code source; a wrong one less.
    tasks = generate_code_tasks(6, seed=3)
    config = RewardConfig(workers=2, router=RouterConfig(routes={"code": ("code",)}, weights={"code": 1.0}))
    samples = []
    for task in tasks:
        for program in (task.reference, _wrong_solution(task)):
            samples.append(task.to_sample(f"<think>write it</think>```python\n{program}```", mode="slow"))
    with RewardScorer(config) as scorer:
        results = scorer.score(samples)
    right, wrong = results[0::2], results[1::2]
    assert [r.reward for r in right] == [1.0] * len(tasks), [r.reason for r in right]
    assert all(r.reward < 1.0 and r.reasons["code"] for r in wrong), [r.reason for r in wrong]


def test_deterministic_and_disjoint():
    train = generate_code_tasks(40, seed=1)
    assert [t.to_dict() for t in train] == [t.to_dict() for t in generate_code_tasks(40, seed=1)]
    test = generate_code_tasks(40, split="test", seed=1)
    assert test and not {t.prompt for t in train} & {t.prompt for t in test}


def test_timeouts_and_bad_arguments():
    limits = SandboxLimits(test_seconds=0.5, startup_seconds=2.0)
    assert run_tests("while True: pass\n", [CodeTest(assert_code="assert True")], limits) == [False]
    assert run_tests("def f(:\n", [{"assert_code": "assert True"}, {"stdin": "", "expected_stdout": ""}]) == [False] * 2
    with pytest.raises(ValueError) as error:
        generate_code_tasks(-2, levels=[7], split="x")
    assert all(n in str(error.value) for n in ("count", "levels", "split"))
    with pytest.raises(ValueError, match="at least one test"):
        run_tests("", [])
    with pytest.raises(TypeError, match="limits"):
        run_tests("", [CodeTest(assert_code="pass")], limits=0.5)
    with pytest.raises(ValueError, match=r"tests\[0\].input: unknown key"):
        run_tests("", [{"input": "1", "output": "1"}])
