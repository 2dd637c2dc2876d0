"""Hostile model outputs up to 10 MB: extraction and scoring return the right verdict, in linear time.

Each call runs in a child process under a generous wall limit. Linear code does every case here in
well under a second; the quadratic extraction this replaces needed 49 s for 40,000 characters of
unclosed ``\\boxed{`` and would never finish 10 MB, so a hang fails the test instead of stalling the
suite. Nothing asserts a timing: the limit only tells "finishes" from "does not".
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

MB10 = 10_000_000
# Wall limit of one child (interpreter start, imports, building a 10 MB string, the call itself).
CHILD_SECONDS = 30

_CHILD = textwrap.dedent("""
    import json, sys
    from pangu_core.dual.response import extract_final_answer
    from pangu_core.rewards.code import extract_program
    from pangu_core.rewards.math import extract_answer

    call, head, fill, tail, size = json.loads(sys.argv[1])
    text = head + fill * max(0, (size - len(head) - len(tail)) // len(fill)) + tail
    result = {"extract_final_answer": extract_final_answer, "extract_program": extract_program,
              "extract_answer": extract_answer}[call](text)
    print(json.dumps(result if result is None or len(result) < 200 else {"length": len(result)}))
""")


def run_guarded(code: str, args: list, seconds: float = CHILD_SECONDS):
    """Runs ``code`` in a fresh interpreter and returns the JSON it prints; fails on a hang."""
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                              timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no result within {seconds} s: the work is not linear in the input size")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# (call, head, fill, tail, expected result): fill is repeated up to the size of the case.
CASES = {
    # Unclosed openings cost one pass, and a closed box after them is still found.
    "unclosed boxed": ("extract_final_answer", "", "\\boxed{", "", None),
    "unclosed boxed, then an answer": ("extract_answer", "", "\\boxed{", "\\boxed{12}", "12"),
    "open braces, then an answer": ("extract_answer", "", "{", " so \\boxed{12}", "12"),
    "close braces, then an answer": ("extract_answer", "", "}", " so \\boxed{12}", "12"),
    "answer phrase, trailing spaces": ("extract_answer", "The answer is 1", " ", "", "1"),
    "many answer words": ("extract_answer", "", "answer ", "", None),
    "answer phrase with dollars": ("extract_answer", "The answer is ", "$", "", None),
    # The last phrase is "$ answer is $" between the last two prefixes, as the old pattern read it.
    "answer phrases on one line": ("extract_answer", "", "answer is $ ", "", "answer is"),
    "answer phrases, then one": ("extract_answer", "", "answer is $x$, ", "\nThe answer is 12.", "12"),
    "a hedged list": ("extract_answer", "", "9, ", "12", None),
    "long thinking": ("extract_answer", "<think>", "x", "</think>\\boxed{3}", "3"),
    "backticks without a newline": ("extract_program", "", "`", "", None),
    "fence without a close": ("extract_program", "```python\n", "print(1)\n", "", {"length": None}),
    "empty fenced blocks": ("extract_program", "", "```\n```\n", "", None),
}


@pytest.mark.parametrize("size", [40_000, MB10], ids=["40k", "10MB"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_extraction_is_right_and_linear(case, size):
    # Every extraction returns the right answer (or none) for hostile text of any size up to 10 MB.
    call, head, fill, tail, expected = CASES[case]
    got = run_guarded(_CHILD, [call, head, fill, tail, size])
    if isinstance(expected, dict):  # an unclosed fence: the rest of the text is the program
        assert isinstance(got, dict) and got["length"] > size - 100
    else:
        assert got == expected


def test_quoted_sizes_give_the_quoted_answers():
    # The inputs as reported: 16,000 spaces after "The answer is 1" and then more text on the line.
    got = run_guarded(_CHILD, ["extract_answer", "The answer is 1", " ", "x", 16_000 + 16])
    assert got == {"length": 16_002} or (isinstance(got, str) and got.split() == ["1", "x"])
    # At 10 MB the phrase lies before the answer window: no answer at all.
    assert run_guarded(_CHILD, ["extract_answer", "The answer is 1", " ", "x", MB10]) is None


_SCORER_CHILD = textwrap.dedent("""
    import json, sys
    from pangu_core.rewards import CodeTest, RewardConfig, RewardScorer, Sample

    size = json.loads(sys.argv[1])
    responses = {
        "boxed": "\\\\boxed{" * (size // 7),
        "phrase": "The answer is 1" + " " * 16_000 + "x",
        "ticks": "`" * size,
        "words": "ab cd " * (size // 6),
    }
    samples = [Sample("math", "q", responses["boxed"], reference="1", mode="fast"),
               Sample("math", "q", responses["phrase"], reference="1", mode="fast"),
               Sample("math", "q", responses["words"], reference="1", mode="fast"),
               Sample("code", "q", responses["ticks"], reference=(CodeTest("", "1"),), mode="fast"),
               Sample("general", "q", responses["words"], reference="Paris", mode="fast")]
    with RewardScorer(RewardConfig()) as scorer:
        results = scorer.score(samples)
    print(json.dumps([[r.scores, r.reasons] for r in results]))
""")


def test_the_scorer_returns_for_10_mb_responses():
    # The whole scoring path (routing, math, code, judge rules and metrics, shaping) on 10 MB
    # responses: every sample gets its verdict, and no math-verify worker or sandbox is needed.
    results = run_guarded(_SCORER_CHILD, MB10, seconds=90)
    (boxed, _), (phrase, phrase_why), (words, _), (code, code_why), (general, _) = results
    assert boxed["math"] == 0.0
    assert phrase["math"] == 0.0 and phrase_why["math"].startswith("answer too long")
    assert words["math"] == 0.0
    assert code["code"] == 0.0 and code_why["code"] == "no code block"
    assert general["judge"] < 0.01 and general["repetition"] < 0.01 and general["length"] == 0.0
