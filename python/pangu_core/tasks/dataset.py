"""Tasks as records, and their JSONL form: one schema for generated tasks and a user's own data.

Each JSONL line is one object with these fields:

``prompt`` (str, required)
    What the user asks, without any mode tag (the chat format adds " /no_think" etc.).
``reference`` (str, required)
    The reference answer: a number or expression for math, the reference solution source for code.
``task_type`` (str, required)
    ``"math"`` or ``"code"`` (:data:`TASK_TYPES`); rewards are routed by it.
``difficulty`` (int, required)
    1 (easiest) to 5 (hardest). Imported data without levels should use 3.
``id`` (str, optional)
    A stable identifier; derived from the content when missing.
``tests`` (list of objects, optional, code only)
    Each a :class:`pangu_core.rewards.CodeTest` mapping, the schema MARS's code source runs in its
    sandbox: ``{"stdin": str, "expected_stdout": str}`` (stdin/stdout style) and/or
    ``{"assert_code": str}`` (Python statements run after the solution). Files written before this
    schema, with ``{"input": str, "output": str}`` or ``{"assert": str}``, are still read.
``meta`` (object, optional)
    Anything else, kept as is (for generated math: the arithmetic ``expression``).

:meth:`Task.to_sample` turns a task and a model response into a :class:`pangu_core.rewards.Sample`,
so MARS scores generated and imported tasks alike.

A GSM8K-style file maps ``question`` -> ``prompt`` and the text after ``####`` -> ``reference``;
:func:`read_jsonl` does that mapping when asked with ``field_map``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pangu_core.config import ConfigError
from pangu_core.rewards.code import coerce_tests
from pangu_core.rewards.types import CodeTest, Sample

TASK_TYPES = ("math", "code")
MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 5


@dataclass(frozen=True)
class Task:
    """One problem with a checkable reference. Validates itself on construction."""

    prompt: str
    reference: str
    task_type: str = "math"
    difficulty: int = 3
    id: str = ""
    tests: tuple[CodeTest, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            problems.append(f"prompt: expected a non-empty str, got {self.prompt!r}")
        if not isinstance(self.reference, str):
            problems.append(f"reference: expected str, got {type(self.reference).__name__}")
        if self.task_type not in TASK_TYPES:
            problems.append(f"task_type: expected one of {TASK_TYPES}, got {self.task_type!r}")
        if isinstance(self.difficulty, bool) or not isinstance(self.difficulty, int) or not (
            MIN_DIFFICULTY <= self.difficulty <= MAX_DIFFICULTY
        ):
            problems.append(f"difficulty: expected an int in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], got {self.difficulty!r}")
        try:
            tests = coerce_tests(self.tests)
        except ConfigError as error:
            problems.extend(error.problems)
        except TypeError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("invalid Task: " + "; ".join(problems))
        if not self.id:
            digest = hashlib.sha1(f"{self.task_type}\0{self.prompt}".encode()).hexdigest()[:12]
            object.__setattr__(self, "id", f"{self.task_type}-{digest}")
        object.__setattr__(self, "tests", tests)
        object.__setattr__(self, "meta", dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record (optional fields only when set)."""
        record: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "reference": self.reference,
            "task_type": self.task_type,
            "difficulty": self.difficulty,
        }
        if self.tests:
            record["tests"] = [t.to_dict() for t in self.tests]
        if self.meta:
            record["meta"] = dict(self.meta)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Task:
        """Builds a task from a JSONL record; unknown fields are an error (they are likely typos)."""
        if not isinstance(record, Mapping):
            raise TypeError(f"record: expected a mapping, got {type(record).__name__}")
        known = {"id", "prompt", "reference", "task_type", "difficulty", "tests", "meta"}
        unknown = sorted(set(record) - known)
        missing = sorted({"prompt", "reference"} - set(record))
        if unknown or missing:
            raise ValueError(f"record: unknown fields {unknown}, missing fields {missing} (known: {sorted(known)})")
        reference = record["reference"]
        if isinstance(reference, (int, float)) and not isinstance(reference, bool):
            reference = str(reference)
        return cls(
            prompt=record["prompt"],
            reference=reference,
            task_type=record.get("task_type", "math"),
            difficulty=record.get("difficulty", 3),
            id=record.get("id", ""),
            tests=_read_tests(record.get("tests", ())),
            meta=record.get("meta", {}),
        )


    def to_sample(self, response: str, mode: str = "slow") -> Sample:
        """A MARS sample of ``response`` to this task: the reference answer (math) or the tests (code)."""
        if self.task_type == "code" and not self.tests:
            raise ValueError(f"task {self.id}: a code task needs tests to be scored")
        reference = self.tests if self.task_type == "code" else self.reference
        return Sample(self.task_type, self.prompt, response, reference, mode)


# Test fields of files written before tests were CodeTest mappings.
_OLD_TEST_FIELDS = {"input": "stdin", "output": "expected_stdout", "assert": "assert_code"}


def _read_tests(tests: Any) -> Any:
    """A record's tests, with tests in the old form ({"input", "output"} or {"assert"}) renamed."""
    if not isinstance(tests, list):
        return tests
    def renamed(test: Any) -> Any:
        if isinstance(test, Mapping) and test.keys() <= _OLD_TEST_FIELDS.keys():
            return {_OLD_TEST_FIELDS[key]: value for key, value in test.items()}
        return test
    return tuple(renamed(test) for test in tests)


def write_jsonl(tasks: Iterable[Task], path: str | Path) -> int:
    """Writes tasks one per line (UTF-8); returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"tasks: expected Task items, got {type(task).__name__}")
            handle.write(json.dumps(task.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


def _gsm8k_reference(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def read_jsonl(path: str | Path, field_map: Mapping[str, str] | None = None, gsm8k: bool = False) -> list[Task]:
    """Reads tasks from a JSONL file.

    ``field_map`` renames source fields to schema fields (e.g. ``{"question": "prompt"}``);
    ``gsm8k=True`` reads GSM8K-style ``question`` / ``answer`` records (the reference is the text
    after ``####``). Errors name the line.
    """
    mapping = dict(field_map or {})
    if gsm8k:
        mapping = {"question": "prompt", "answer": "reference", **mapping}
    tasks = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
                record = {mapping.get(k, k): v for k, v in raw.items()}
                if gsm8k:
                    record["reference"] = _gsm8k_reference(str(record.get("reference", "")))
                tasks.append(Task.from_dict(record))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: {error}") from error
    return tasks
