"""The JSONL task schema: round trips, GSM8K-style import, and clear errors."""

from __future__ import annotations

import json

import pytest

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
        Task(prompt="", reference="1", task_type="poem", difficulty=9, tests=({"in": "x"},))
    assert all(n in str(error.value) for n in ("prompt", "task_type", "difficulty", "tests[0]"))
    with pytest.raises(TypeError, match="tasks"):
        write_jsonl(["1+1"], tmp_path / "x.jsonl")
