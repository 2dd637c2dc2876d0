"""Code rewards: program extraction, syntax check, stdin/stdout and assert tests, partial credit."""

from __future__ import annotations

import re

import pytest

from pangu_core.rewards.code import CodeVerifier, check_syntax, extract_program
from pangu_core.rewards.config import CodeConfig, SandboxLimits
from pangu_core.rewards.types import CodeTest

VERIFIER = CodeVerifier(CodeConfig(workers=2, limits=SandboxLimits(test_seconds=2.0, memory_bytes=256 << 20)))
# No process or folder of this session's sandbox runs may outlive them (see conftest.own_sandbox_runs).
pytestmark = pytest.mark.usefixtures("own_sandbox_runs")


def test_extracts_the_last_python_block_outside_thinking():
    response = ("<think>```python\nprint('draft')\n```</think>First:\n```python\nprint(1)\n```\n"
                "Shell:\n```bash\necho hi\n```\nFinal:\n```py\nprint(2)\n```\nDone.")
    assert extract_program(response) == "print(2)\n"
    assert extract_program("<think>```python\nprint(1)\n```</think>no code") is None
    assert extract_program("```python\nprint(3)\n").strip() == "print(3)"  # unclosed final fence
    assert extract_program("<think>never closed ```python\nprint(1)\n```") is None


def test_syntax_check_names_the_line():
    assert check_syntax("x = 1\n") == ""
    assert check_syntax("x = (\n").startswith("syntax error: line 1")
    assert check_syntax("(" * 5000 + ")" * 5000).startswith("syntax error")


def test_stdin_tests_give_partial_credit():
    program = "n = int(input())\nprint(n * 2 if n < 10 else n)\n"
    tests = [CodeTest("1\n", "2"), CodeTest("4\n", "8\n"), CodeTest("20\n", "40"), CodeTest("7\n", "14  \n\n")]
    result = VERIFIER.score_program(program, tests)
    assert result.score == pytest.approx(0.75) and result.reason == "test 2: wrong answer"


def test_assert_tests_run_in_the_program_namespace():
    program = "def square(x):\n    return x * x\n"
    tests = [CodeTest(assert_code="assert square(3) == 9"), CodeTest(assert_code="assert square(-2) == 4"),
             CodeTest(assert_code="assert square(2) == 5")]
    result = VERIFIER.score(f"Here:\n```python\n{program}```", tests)
    assert result.score == pytest.approx(2 / 3) and result.reason == "test 2: assertion failed"


def test_failures_have_reasons():
    assert VERIFIER.score("no code", [CodeTest("", "1")]).reason == "no code block"
    bad = VERIFIER.score("```python\ndef f(:\n```", [CodeTest("", "1")])
    assert bad.score == 0.0 and bad.reason.startswith("syntax error")
    crash = VERIFIER.score_program("raise ValueError('boom')", [CodeTest("", "1")])
    assert crash.score == 0.0 and crash.reason == "test 0: runtime error: ValueError: boom"
    exits = VERIFIER.score_program("import sys\nprint(5)\nsys.exit(0)", [CodeTest("", "5")])
    assert exits.score == 1.0


def test_tests_are_isolated_from_each_other():
    # Each test runs in its own forked process: interpreter state set by one is not seen by the next.
    program = "import sys\nprint('marker' in sys.modules)\nsys.modules['marker'] = sys\n"
    result = VERIFIER.score_program(program, [CodeTest("", "False"), CodeTest("", "False")])
    assert result.score == 1.0


def test_front_door_errors():
    with pytest.raises(ValueError, match="assert_code: expected expected_stdout or assert_code to be set"):
        CodeTest(stdin="1")
    with pytest.raises(ValueError, match="stdin: expected a string, got 1"):
        CodeTest(stdin=1, expected_stdout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tests\[1\].output: unknown key; known: stdin, expected_stdout, assert_code"):
        VERIFIER.score_program("print(1)", [CodeTest("", "1"), {"output": "1"}])
    with pytest.raises(TypeError, match="tests: expected a sequence"):
        VERIFIER.score_program("print(1)", "1")
    with pytest.raises(ValueError, match="at least one test"):
        VERIFIER.score_program("print(1)", [])
    with pytest.raises(TypeError, match=r"tests\[0\]"):
        VERIFIER.score_program("print(1)", ["1"])
    with pytest.raises(TypeError, match="config"):
        CodeVerifier("fast")  # type: ignore[arg-type]


def test_concurrent_runs_keep_their_own_results():
    # Many threads through a 2-slot pool: each program's verdict belongs to that program only.
    from concurrent.futures import ThreadPoolExecutor

    def run(n):
        program = f"print(int(input()) + {n})\n"
        return VERIFIER.score_program(program, [CodeTest("1\n", str(1 + n)), CodeTest("2\n", str(2 + n + (n % 2)))]).score

    with ThreadPoolExecutor(6) as pool:
        scores = list(pool.map(run, range(8)))
    assert scores == [1.0 if n % 2 == 0 else 0.5 for n in range(8)]


def test_run_tests_gives_each_test_its_reason():
    # The one runner behind code rewards and generated code tasks: per test, why it failed ("" = passed).
    tests = [CodeTest("2\n", "4"), CodeTest("3\n", "7"), CodeTest("x\n", "0"), CodeTest("5\n", assert_code="assert False")]
    reasons = VERIFIER.run_tests("print(int(input()) * 2)\n", tests)
    assert reasons[:2] == ["", "wrong answer"] and reasons[3] == "assertion failed"
    assert reasons[2].startswith("runtime error: ValueError"), reasons
    syntax = VERIFIER.run_tests("def f(:\n", tests[:2])
    assert syntax[0] == syntax[1] and syntax[0].startswith("syntax error: line 1")


# The fence pattern this module used before (quadratic on a long fence line): on ordinary answers
# the linear scan must take the same program.
_OLD_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)


def _old_extract(text: str) -> str | None:
    blocks = [(tag.lower(), body) for tag, body in _OLD_FENCE.findall(text)]
    if not blocks:
        tail = text.rsplit("```", 1)
        if len(tail) == 2 and text.count("```") % 2 == 1:
            header, _, body = tail[1].partition("\n")
            blocks = [(header.strip().lower(), body)]
    return next((body for tag, body in reversed(blocks) if tag in ("", "python", "py", "python3") and body.strip()),
                None)


@pytest.mark.parametrize("text", [
    "```python\nprint(1)\n```", "```py title\nx = 1\n```\n```bash\nls\n```", "```\na\n``` and ```Python\nb\n```",
    "```python\nunclosed", "```python\n```", "```python\n   \n```\n```\nprint(2)\n```", "no fence", "```python",
    "``` python3 # note\nprint(3)\n```", "````python\nprint(4)\n````", "```c++\nint x;\n```", "```python``` x\n",
])
def test_extraction_matches_the_old_pattern(text):
    assert extract_program(text) == _old_extract(text)


def test_too_many_fences_is_no_program():
    from pangu_core.rewards.code import MAX_FENCES

    assert extract_program("```\n```\n" * (MAX_FENCES // 2) + "```python\nprint(1)\n```") is None
    assert extract_program("```\n```\n" * (MAX_FENCES // 2 - 1) + "```python\nprint(1)\n```") == "print(1)\n"
