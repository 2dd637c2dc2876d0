"""Small generated programming problems with tests, so code rewards have real work to check.

Each problem comes from a family with random parameters and carries a reference solution (Python
source, in ``Task.reference``) and tests in MARS's one schema, :class:`pangu_core.rewards.CodeTest`:
``assert_code`` statements for function problems, ``stdin`` / ``expected_stdout`` pairs for
stdin/stdout programs. Deterministic by seed; the train/test split is the same prompt hash as for
math (:func:`math_tasks.in_test_split`). :func:`run_tests` runs a solution against its tests in
MARS's sandbox (:mod:`pangu_core.rewards.sandbox`), and ``RewardScorer`` scores responses to these
tasks through :meth:`Task.to_sample`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig, SandboxLimits
from pangu_core.rewards.types import CodeTest
from pangu_core.tasks.dataset import Task
from pangu_core.tasks.math_tasks import LEVELS, check_generation_args, in_test_split


def _add_k(rng: random.Random) -> Task:
    k = rng.randint(2, 99)
    xs = [rng.randint(-50, 500) for _ in range(4)]
    return Task(
        prompt=f"Write a Python function add_k(x) that returns x plus {k}.",
        reference=f"def add_k(x):\n    return x + {k}\n",
        task_type="code", difficulty=1,
        tests=tuple(CodeTest(assert_code=f"assert add_k({x}) == {x + k}") for x in xs),
    )


def _count_char(rng: random.Random) -> Task:
    c = rng.choice("aeiosxz")
    words = ["".join(rng.choice("abcdeiosxz") for _ in range(rng.randint(0, 12))) for _ in range(4)]
    return Task(
        prompt=f"Write a Python function count_char(s) that returns how many times the letter '{c}' occurs in the string s.",
        reference=f"def count_char(s):\n    return s.count('{c}')\n",
        task_type="code", difficulty=2,
        tests=tuple(CodeTest(assert_code=f"assert count_char({w!r}) == {w.count(c)}") for w in words),
    )


def _sum_divisible(rng: random.Random) -> Task:
    k = rng.randint(2, 9)
    cases = [[rng.randint(-30, 100) for _ in range(rng.randint(1, 8))] for _ in range(4)]
    return Task(
        prompt=(f"Write a Python program that reads one line of space-separated integers from standard input "
                f"and prints the sum of those divisible by {k}."),
        reference=f"nums = [int(t) for t in input().split()]\nprint(sum(n for n in nums if n % {k} == 0))\n",
        task_type="code", difficulty=2,
        tests=tuple(CodeTest(" ".join(map(str, xs)) + "\n", f"{sum(n for n in xs if n % k == 0)}\n")
                    for xs in cases),
    )


def _rotate(rng: random.Random) -> Task:
    k = rng.randint(1, 5)
    cases = [[rng.randint(0, 9) for _ in range(rng.randint(1, 7))] for _ in range(4)]

    def rotate(xs: list[int]) -> list[int]:
        shift = k % len(xs)
        return xs[-shift:] + xs[:-shift] if shift else list(xs)

    return Task(
        prompt=f"Write a Python function rotate(xs) that returns a new list: the list xs rotated right by {k} places (wrapping around).",
        reference=f"def rotate(xs):\n    if not xs:\n        return []\n    s = {k} % len(xs)\n    return xs[-s:] + xs[:-s] if s else list(xs)\n",
        task_type="code", difficulty=3,
        tests=tuple(CodeTest(assert_code=f"assert rotate({xs}) == {rotate(xs)}") for xs in cases),
    )


def _reverse_words(rng: random.Random) -> Task:
    sep = rng.choice([",", ";", " "])
    pool = ["red", "blue", "cat", "sun", "tree", "moon", "fish", "gold"]
    cases = [[rng.choice(pool) for _ in range(rng.randint(1, 5))] for _ in range(4)]
    shown = "a space" if sep == " " else f"'{sep}'"
    return Task(
        prompt=(f"Write a Python program that reads one line of words separated by {shown} from standard input "
                f"and prints the words in reverse order, separated by {shown}."),
        reference=f"words = input().split({sep!r})\nprint({sep!r}.join(reversed(words)))\n",
        task_type="code", difficulty=3,
        tests=tuple(CodeTest(sep.join(ws) + "\n", sep.join(reversed(ws)) + "\n") for ws in cases),
    )


def _fizz(rng: random.Random) -> Task:
    a, b = rng.sample(range(2, 8), 2)
    ns = [rng.randint(1, 20) for _ in range(3)]

    def fizz(n: int) -> list[str]:
        return ["FizzBuzz" if i % a == 0 and i % b == 0 else "Fizz" if i % a == 0 else "Buzz" if i % b == 0 else str(i)
                for i in range(1, n + 1)]

    return Task(
        prompt=(f"Write a Python function fizz(n) that returns a list of strings for 1..n: 'FizzBuzz' for multiples "
                f"of both {a} and {b}, 'Fizz' for multiples of {a}, 'Buzz' for multiples of {b}, else the number."),
        reference=(f"def fizz(n):\n    out = []\n    for i in range(1, n + 1):\n"
                   f"        if i % {a} == 0 and i % {b} == 0:\n            out.append('FizzBuzz')\n"
                   f"        elif i % {a} == 0:\n            out.append('Fizz')\n"
                   f"        elif i % {b} == 0:\n            out.append('Buzz')\n"
                   f"        else:\n            out.append(str(i))\n    return out\n"),
        task_type="code", difficulty=4,
        tests=tuple(CodeTest(assert_code=f"assert fizz({n}) == {fizz(n)}") for n in ns),
    )


def _longest_run(rng: random.Random) -> Task:
    gap = rng.randint(1, 4)
    rising = rng.random() < 0.5
    word, sign = ("increasing", "") if rising else ("decreasing", "-")
    cases = [[rng.randint(0, 20) for _ in range(rng.randint(1, 10))] for _ in range(4)]

    def longest(xs: list[int]) -> int:
        best = run = 1
        for prev, cur in zip(xs, xs[1:]):
            run = run + 1 if (cur - prev if rising else prev - cur) >= gap else 1
            best = max(best, run)
        return best

    diff = "xs[i] - xs[i - 1]" if rising else "xs[i - 1] - xs[i]"
    return Task(
        prompt=(f"Write a Python program that reads n on the first line and n integers on the second line from "
                f"standard input, and prints the length of the longest run of consecutive numbers that is {word} "
                f"with each step at least {gap}."),
        reference=("n = int(input())\nxs = [int(t) for t in input().split()]\nbest = run = 1\n"
                   f"for i in range(1, n):\n    run = run + 1 if {diff} >= {gap} else 1\n    best = max(best, run)\n"
                   "print(best)\n"),
        task_type="code", difficulty=5,
        tests=tuple(CodeTest(f"{len(xs)}\n{' '.join(map(str, xs))}\n", f"{longest(xs)}\n") for xs in cases),
    )


FAMILIES: dict[int, tuple[Callable[[random.Random], Task], ...]] = {
    1: (_add_k,),
    2: (_count_char, _sum_divisible),
    3: (_rotate, _reverse_words),
    4: (_fizz,),
    5: (_longest_run,),
}


def generate_code_tasks(count: int, levels: Sequence[int] = LEVELS, split: str = "train", seed: int = 0,
                        test_share: float = 0.2) -> list[Task]:
    """``count`` unique problems, round robin over ``levels``, from one split (fewer if a level runs out)."""
    levels = check_generation_args(count, levels, split, test_share)
    out: list[Task] = []
    seen: set[str] = set()
    rngs = {level: random.Random(f"pangu-code:{seed}:{level}:{split}") for level in levels}
    exhausted: set[int] = set()
    index = 0
    while len(out) < count and len(exhausted) < len(levels):
        level = levels[index % len(levels)]
        index += 1
        if level in exhausted:
            continue
        for _ in range(500):
            rng = rngs[level]
            task = rng.choice(FAMILIES[level])(rng)
            if task.prompt not in seen and in_test_split(task.prompt, test_share) == (split == "test"):
                seen.add(task.prompt)
                out.append(task)
                break
        else:
            exhausted.add(level)
    return out


def run_tests(source: str, tests: Sequence[CodeTest | Mapping[str, Any]],
              limits: SandboxLimits | None = None) -> list[bool]:
    """Runs ``source`` against each test in one run of MARS's sandbox; True where the test passed.

    The same runner and verdicts as the code reward (:meth:`CodeVerifier.run_tests`): assert tests
    run the statements after the source, stdin/stdout tests compare the output (trailing spaces
    ignored); ``limits`` (default :class:`SandboxLimits`) bound the run, ``test_seconds`` per test.
    """
    if limits is not None and not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits: expected SandboxLimits, got {type(limits).__name__}")
    verifier = CodeVerifier(CodeConfig(workers=1, limits=limits or SandboxLimits()))
    return [not failure for failure in verifier.run_tests(source, tests)]
