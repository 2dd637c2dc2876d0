"""Code rewards: take the last fenced program, check its syntax, run its tests in the sandbox.

The reward is the fraction of tests passed (partial credit); a run that is cut (timeout, output
limit, killed) scores 0 for the tests it did not finish. Concurrent runs are bounded by a
semaphore of ``CodeConfig.workers`` slots, so a thread pool may call :meth:`CodeVerifier.score`
freely.
"""

from __future__ import annotations

import ast
import re
import threading
from typing import Any, Mapping, Sequence

from pangu_core.config import ConfigError
from pangu_core.dual.response import split_thinking
from pangu_core.rewards.config import CodeConfig
from pangu_core.rewards.sandbox import run_sandboxed, signal_reason
from pangu_core.rewards.types import CodeTest, SourceScore

_FENCE_TAG = re.compile(r"[ \t]*([\w+#.-]*)")
_PYTHON_TAGS = {"", "python", "py", "python3"}
_MAX_PROGRAM_CHARS = 200_000
# An answer with more fences than this has no program (no answer needs thousands of code blocks);
# counting them is one C-speed pass, so the cap holds before any parsing of a runaway response.
MAX_FENCES = 4096
_NONSPACE = re.compile(r"\S")


def _fenced_blocks(text: str) -> list[tuple[str, int, int]]:
    """(tag, body start, body end) of each closed fenced block: "```tag ...\n body ```", left to
    right, the same blocks a regex would find; a lone unclosed fence gives (tag, start, len(text)).
    Linear time: each fence and newline is found once with str.find."""
    blocks: list[tuple[str, int, int]] = []
    pos = 0
    while True:
        open_at = text.find("```", pos)
        if open_at < 0:
            return blocks
        header_end = text.find("\n", open_at + 3)
        if header_end < 0:
            return blocks  # a fence line without a body
        tag = _FENCE_TAG.match(text, open_at + 3, header_end).group(1).lower()
        close_at = text.find("```", header_end + 1)
        if close_at < 0:
            # Unclosed: the rest is its body when it is the only fence (the model ran out of tokens).
            if not blocks and text.find("```", open_at + 3, header_end) < 0:
                blocks.append((tag, header_end + 1, len(text)))
            return blocks
        blocks.append((tag, header_end + 1, close_at))
        pos = close_at + 3


def extract_program(response: str) -> str | None:
    """The last fenced Python block in the answer part of ``response`` (outside thinking), or None.

    Blocks tagged with another language are skipped; an unclosed final fence takes the rest when
    no block is closed. An answer with more than :data:`MAX_FENCES` fences has no program. Linear time.
    """
    if not isinstance(response, str):
        raise TypeError(f"response: expected str, got {type(response).__name__}")
    parsed = split_thinking(response)
    text = parsed.answer if parsed.closed else ""
    if text.count("```") > MAX_FENCES:
        return None
    for tag, start, end in reversed(_fenced_blocks(text)):
        if tag in _PYTHON_TAGS and _NONSPACE.search(text, start, end):
            return text[start:end]
    return None


def check_syntax(program: str) -> str:
    """Empty string when ``program`` parses as Python, else a short "syntax error: ..." reason."""
    if len(program) > _MAX_PROGRAM_CHARS:
        return f"program too long ({len(program)} chars > {_MAX_PROGRAM_CHARS})"
    try:
        ast.parse(program)
    except SyntaxError as error:
        return f"syntax error: line {error.lineno}: {error.msg}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"syntax error: {type(error).__name__}"
    return ""


def _same_output(got: str, expected: str) -> bool:
    """Output match, forgiving trailing spaces per line and trailing blank lines."""
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().splitlines()]
    return norm(got) == norm(expected)


def coerce_tests(tests: Sequence[CodeTest | Mapping[str, Any]]) -> tuple[CodeTest, ...]:
    """The tests as CodeTest objects; mappings of CodeTest fields (as in task files) are converted."""
    if isinstance(tests, (str, bytes, Mapping)):
        raise TypeError(f"tests: expected a sequence of CodeTest, got {type(tests).__name__}")
    out = []
    problems: list[str] = []
    for i, test in enumerate(tests):
        if isinstance(test, CodeTest):
            out.append(test)
        elif isinstance(test, Mapping):
            try:
                out.append(CodeTest.from_dict(test))
            except ConfigError as error:
                problems += [f"tests[{i}].{p}" for p in error.problems]
        else:
            raise TypeError(f"tests[{i}]: expected CodeTest or a mapping of its fields, got {type(test).__name__}")
    if problems:
        raise ConfigError("CodeTest", problems)
    return tuple(out)


class CodeVerifier:
    """Runs programs against tests in the sandbox, at most ``config.workers`` at a time; thread-safe."""

    def __init__(self, config: CodeConfig | None = None) -> None:
        self.config = config or CodeConfig()
        if not isinstance(self.config, CodeConfig):
            raise TypeError(f"config: expected CodeConfig, got {type(self.config).__name__}")
        self._slots = threading.BoundedSemaphore(self.config.workers)

    def run_tests(self, program: str, tests: Sequence[CodeTest | Mapping[str, Any]]) -> list[str]:
        """Why each test failed, "" where it passed; all tests run in one sandboxed run.

        A program that does not parse fails every test with its syntax reason; tests a cut run never
        reached fail with the run's reason (e.g. "timeout").
        """
        failures, run_reason = self._execute(program, tests)
        return [why if why != "not run" or not run_reason else run_reason for why in failures]

    def score_program(self, program: str, tests: Sequence[CodeTest | Mapping[str, Any]]) -> SourceScore:
        """Fraction of ``tests`` the program passes, with the first failure's reason."""
        failures, run_reason = self._execute(program, tests)
        reasons = [f"test {i}: {why}" for i, why in enumerate(failures) if why]
        if run_reason:
            reasons.insert(0, run_reason)
        passed = sum(1 for why in failures if not why)
        return SourceScore(passed / len(failures), reasons[0] if reasons else "")

    def score(self, response: str, tests: Sequence[CodeTest | Mapping[str, Any]]) -> SourceScore:
        """Extracts the program from ``response`` and scores it."""
        program = extract_program(response)
        if program is None:
            return SourceScore(0.0, "no code block")
        return self.score_program(program, tests)

    def _execute(self, program: str, tests: Sequence[CodeTest | Mapping[str, Any]]) -> tuple[list[str], str]:
        """(per-test failure reasons, the run's own reason when not every test ran: the program does
        not parse, or the run was cut)."""
        if not isinstance(program, str):
            raise TypeError(f"program: expected str, got {type(program).__name__}")
        tests = coerce_tests(tests)
        if not tests:
            raise ValueError("tests: expected at least one test")
        syntax = check_syntax(program)
        if syntax:
            return ["not run"] * len(tests), syntax
        payload = [{"stdin": t.stdin, **({"assert": t.assert_code} if t.assert_code else {})} for t in tests]
        with self._slots:
            run = run_sandboxed(self.config.limits, program=program, tests=payload)
        by_index = {record["test"]: record for record in run.tests}
        failures = [_test_failure(by_index.get(i), test) for i, test in enumerate(tests)]
        return failures, run.reason if run.reason and len(by_index) < len(tests) else ""


def _test_failure(record: dict | None, test: CodeTest) -> str:
    if record is None:
        return "not run"
    if record.get("timeout"):
        return "timeout"
    if "signal" in record:
        return signal_reason(record["signal"])
    if record.get("stdout_truncated"):
        return "output limit exceeded"
    code = record.get("exit", 1)
    if code == 3 and test.assert_code:
        return "assertion failed"
    if code != 0:
        last = record.get("stderr", "").strip().splitlines()
        return "runtime error" + (f": {last[-1][:200]}" if last else f" (exit {code})")
    if test.expected_stdout is not None and not _same_output(record.get("stdout", ""), test.expected_stdout):
        return "wrong answer"
    return ""
