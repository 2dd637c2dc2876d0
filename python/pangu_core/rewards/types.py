"""The data MARS scores: a sample (task, prompt, response, mode, reference) and its reward result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

TASK_TYPES = ("math", "code", "general")
SAMPLE_MODES = ("slow", "fast")


@dataclass(frozen=True)
class CodeTest:
    """One code test: feed ``stdin`` and compare stdout with ``expected_stdout``, and/or run
    ``assert_code`` after the program in its namespace (an assert-style test)."""

    stdin: str = ""
    expected_stdout: str | None = None
    assert_code: str | None = None

    def __post_init__(self) -> None:
        if self.expected_stdout is None and self.assert_code is None:
            raise ValueError("CodeTest: expected expected_stdout or assert_code (a test must check something)")
        for name in ("stdin", "expected_stdout", "assert_code"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"CodeTest.{name}: expected str, got {type(value).__name__}")


@dataclass(frozen=True)
class Sample:
    """One response to score.

    ``reference``: the gold answer (math), a tuple of :class:`CodeTest` (code), or a reference answer
    or rubric text (general). ``task_type`` is any routed name; "math", "code" and "general" are built in.
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
