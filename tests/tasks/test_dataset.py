"""The JSONL task schema: round trips, GSM8K-style import, and clear errors."""

from __future__ import annotations

import json

import pytest

from pangu_core.rewards import CodeTest, Sample
from pangu_core.tasks.code_tasks import generate_code_tasks
from pangu_core.tasks.dataset import Task, read_jsonl, write_jsonl
from pangu_core.tasks.math_tasks import generate_math_tasks


def test_generated_tasks_round_trip_through_jsonl(tmp_path):
    tasks = generate_math_tasks(20) + generate_code_tasks(5)
    path = tmp_path / "tasks.jsonl"
    assert write_jsonl(tasks, path) == 25
    assert read_jsonl(path) == tasks
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) >= {"prompt", "reference", "task_type", "difficulty", "id"}


def test_gsm8k_style_records_import(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 1,007"}) + "\n\n")
    (task,) = read_jsonl(path, gsm8k=True)
    assert task.prompt.startswith("Tom") and task.reference == "1007" and task.difficulty == 3
    assert task.id.startswith("math-")


def test_bad_records_name_the_line_and_the_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "1+1", "reference": "2"}) + "\n" + json.dumps({"prompt": "x", "answr": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*unknown fields \['answr'\].*missing fields \['reference'\]"):
        read_jsonl(path)
    with pytest.raises(ValueError) as error:
        Task(prompt="", reference="1", task_type="poem", difficulty=9, tests=({"in": "x"}, {"stdin": "1"}))
    assert all(n in str(error.value) for n in ("prompt", "task_type", "difficulty", "tests[0].in: unknown key",
                                               "tests[1].assert_code: expected expected_stdout or assert_code"))
    with pytest.raises(TypeError, match="tasks"):
        write_jsonl(["1+1"], tmp_path / "x.jsonl")


def test_code_tests_use_the_reward_schema_and_old_files_still_read(tmp_path):
    # Tests are written as CodeTest mappings (unset fields left out); files in the earlier
    # {"input", "output"} / {"assert"} form read into the same tasks.
    task = Task(prompt="Add one", reference="print(int(input()) + 1)\n", task_type="code",
                tests=(CodeTest("1\n", "2\n"), {"assert_code": "assert True"}))
    assert task.tests == (CodeTest("1\n", "2\n"), CodeTest(assert_code="assert True"))
    assert task.to_dict()["tests"] == [{"stdin": "1\n", "expected_stdout": "2\n"}, {"assert_code": "assert True"}]
    old = {**task.to_dict(), "tests": [{"input": "1\n", "output": "2\n"}, {"assert": "assert True"}]}
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    assert read_jsonl(path) == [task]
    path.write_text(json.dumps({**old, "tests": [{"input": "1", "expected_stdout": "2"}]}) + "\n")
    with pytest.raises(ValueError, match=r"old.jsonl:1: .*tests\[0\].input: unknown key"):
        read_jsonl(path)


def test_tasks_become_reward_samples():
    math_task = generate_math_tasks(1)[0]
    sample = math_task.to_sample("<think></think>\\boxed{1}", mode="fast")
    assert sample == Sample("math", math_task.prompt, "<think></think>\\boxed{1}", math_task.reference, "fast")
    code_task = generate_code_tasks(1)[0]
    assert code_task.to_sample("x", mode="auto").reference == code_task.tests
    with pytest.raises(ValueError, match="needs tests"):
        Task(prompt="p", reference="pass", task_type="code").to_sample("x")
