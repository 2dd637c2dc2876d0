"""The data MARS scores: a sample (task, prompt, response, mode, reference) and its reward result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pangu_core.config import Config, expect

TASK_TYPES = ("math", "code", "general")
# "auto": the model chose; a fast answer (empty thinking block) and a slow one are both valid.
SAMPLE_MODES = ("slow", "fast", "auto")


@dataclass(frozen=True)
class CodeTest(Config):
    """One code test, the one schema for rewards, generated code tasks and task files.

    Feeds ``stdin`` to the program and compares its stdout with ``expected_stdout`` (trailing
    spaces per line and trailing blank lines ignored), and/or runs ``assert_code`` after the program
    in its namespace (an assert-style test; a failed assert is "assertion failed"). At least one of
    the two must be set. In JSON/YAML a test is the mapping of its fields, unset ones omitted:
    ``{"stdin": "1 2\n", "expected_stdout": "3"}`` or ``{"assert_code": "assert f(2) == 4"}``.
    """

    # Text fed to the program's standard input.
    stdin: str = ""
    # What the program must print (None: stdout is not checked).
    expected_stdout: str | None = None
    # Python statements run after the program in its namespace (None: no assert test).
    assert_code: str | None = None

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.expected_stdout is not None or self.assert_code is not None, "assert_code",
               "expected_stdout or assert_code to be set (a test must check something)", self.assert_code)
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The test as a JSON/YAML mapping: only the fields that are set (stdin when not empty)."""
        return {name: value for name, value in super().to_dict().items()
                if value is not None and not (name == "stdin" and value == "")}


@dataclass(frozen=True)
class Sample:
    """One response to score.

    ``reference``: the gold answer (math), a tuple of :class:`CodeTest` (code), or a reference answer
    or rubric text (general). ``task_type`` is any routed name; "math", "code" and "general" are built in.
    ``mode`` is the mode the prompt asked for: "slow", "fast" or "auto" (the model chose; the format
    and length terms then judge the response by the mode it took).
    """

    task_type: str
    prompt: str
    response: str
    reference: Any = None
    mode: str = "slow"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.task_type, str) or not self.task_type:
            problems.append(f"Sample.task_type: expected a non-empty str, got {self.task_type!r}")
        for name in ("prompt", "response"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"Sample.{name}: expected str, got {type(getattr(self, name)).__name__}")
        if self.mode not in SAMPLE_MODES:
            problems.append(f"Sample.mode: expected one of {list(SAMPLE_MODES)}, got {self.mode!r}")
        if self.task_type == "code" and self.reference is not None:
            if not isinstance(self.reference, (tuple, list)) or not all(isinstance(t, CodeTest) for t in self.reference):
                problems.append("Sample.reference: expected a sequence of CodeTest for a code task")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SourceScore:
    """One source's verdict: ``score`` in [0, 1] (before weighting) and why, when not plain.

    ``decided`` is False when the source could not judge (timeout, unparsable evaluator output);
    adaptive weighting counts it against the source's reliability.
    """

    score: float
    reason: str = ""
    decided: bool = True


@dataclass(frozen=True)
class RewardResult:
    """A sample's total reward, each source's raw score, and the reasons behind them."""

    reward: float
    scores: Mapping[str, float]
    reasons: Mapping[str, str]

    @property
    def reason(self) -> str:
        """All non-empty reasons, "source: reason" joined by "; " (empty when nothing to say)."""
        return "; ".join(f"{name}: {why}" for name, why in self.reasons.items() if why)
