"""`pangu-core bench rewards`: MARS throughput against the usual ways of calling the same checks.

* math_verify_1k: 1,000 verifications, ours (worker processes, no signals) vs math-verify in the
  main thread with its default signal timeouts; same inputs, verdict cache cleared between runs.
* math_verify_1k_safe: ours vs a process-per-call timeout wrapper around math-verify (a forked
  process per comparison, killed on overrun), on a subset of the same inputs.
* code_exec_200: 200 short programs with 5 stdin/stdout tests each (``CodeTest``), ours (the code
  reward's runner: sandboxed, pooled) vs a fresh interpreter subprocess per test, no pooling and no
  sandbox.
Each case adds p50/p99 latency (seconds) per call of our source.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pangu_core.bench.common import make_case, median_seconds, percentiles
from pangu_core.rewards.types import CodeTest

NAME = "rewards"
DESCRIPTION = "MARS: math-verify in killable workers, sandboxed code execution"


def math_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (reference, answer) pairs in the forms models write; about half equivalent."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        kind = i % 8
        if kind == 0:
            out.append((f"\\frac{{{a}}}{{{b}}}", f"{a / b:.6f}" if rng.random() < 0.5 else f"{a}/{b + 1}"))
        elif kind == 1:
            out.append((str(a), f"{a}.0" if rng.random() < 0.5 else str(-a)))
        elif kind == 2:
            out.append((f"{a}\\%", f"{a / 100}" if rng.random() < 0.5 else f"{a / 10}"))
        elif kind == 3:
            out.append((f"\\{{{a},{b}\\}}", f"\\{{{b},{a}\\}}" if rng.random() < 0.5 else f"\\{{{a},{b + 1}\\}}"))
        elif kind == 4:
            out.append((f"[{a}, {a + b})", f"[{a},{a + b})" if rng.random() < 0.5 else f"({a},{a + b}]"))
        elif kind == 5:
            out.append((f"\\sqrt{{{a}}}", f"{a}^{{1/2}}" if rng.random() < 0.5 else f"\\sqrt{{{a + 1}}}"))
        elif kind == 6:
            out.append((f"{a}x+{b}", f"{b}+{a}x" if rng.random() < 0.5 else f"{a}x-{b}"))
        else:
            out.append((f"{a}\\text{{ cm}}", str(a) if rng.random() < 0.5 else str(a + 1)))
    return out


def _latex(text: str) -> str:
    return text if text.startswith("$") else f"${text}$"


def _verify_main_thread(pairs: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(_latex(g)), parse(_latex(a)))) for g, a in pairs]


def _one_in_child(conn: Any, gold: str, answer: str) -> None:
    from math_verify import parse, verify

    conn.send(bool(verify(parse(_latex(gold)), parse(_latex(answer)))))
    conn.close()


def _verify_process_per_call(pairs: list[tuple[str, str]], timeout: float = 5.0) -> list[bool]:
    """The common "safe" wrapper: a forked process per comparison, killed when it overruns."""
    context = multiprocessing.get_context("fork")
    out = []
    for gold, answer in pairs:
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_one_in_child, args=(sender, gold, answer))
        proc.start()
        sender.close()
        ok = receiver.poll(timeout)
        out.append(bool(receiver.recv()) if ok else False)
        if proc.is_alive() and not ok:
            proc.kill()
        proc.join()
        receiver.close()
    return out


def code_programs(n: int, tests: int = 5, seed: int = 0) -> list[tuple[str, tuple[CodeTest, ...]]]:
    """``n`` short stdin/stdout programs with ``tests`` cases each (MARS's CodeTest schema); every
    fourth one is wrong."""
    rng = random.Random(seed)
    templates = [
        ("a, b = map(int, input().split())\nprint(a + b{bug})\n", lambda x, y: f"{x} {y}\n", lambda x, y: str(x + y)),
        ("s = input().strip()\nprint(s[::-1]{bug})\n", lambda x, y: f"w{x}q{y}\n", lambda x, y: f"w{x}q{y}"[::-1]),
        ("n = int(input())\nprint(sum(range(n + 1)){bug})\n", lambda x, y: f"{x}\n", lambda x, y: str(x * (x + 1) // 2)),
        ("xs = list(map(int, input().split()))\nprint(max(xs){bug})\n", lambda x, y: f"{x} {y} 7\n", lambda x, y: str(max(x, y, 7))),
    ]
    out = []
    for i in range(n):
        source, make_in, make_out = templates[i % len(templates)]
        bug = " if False else 0" if i % 4 == 3 else ""
        cases = []
        for _ in range(tests):
            x, y = rng.randint(1, 500), rng.randint(1, 500)
            cases.append(CodeTest(make_in(x, y), make_out(x, y)))
        out.append((source.format(bug=bug), tuple(cases)))
    return out


def _run_unpooled(programs: list[tuple[str, tuple[CodeTest, ...]]]) -> float:
    """Baseline: one fresh interpreter per test, sequential. Returns the share of tests passed."""
    folder = tempfile.mkdtemp(prefix="pangu-bench-")
    passed = total = 0
    try:
        for index, (source, cases) in enumerate(programs):
            path = os.path.join(folder, f"p{index}.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
            for case in cases:
                try:
                    run = subprocess.run([sys.executable, path], input=case.stdin, capture_output=True, text=True,
                                         timeout=5)
                    passed += run.returncode == 0 and run.stdout.strip() == case.expected_stdout
                except subprocess.TimeoutExpired:
                    pass
                total += 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return passed / max(1, total)


def _math_cases(quick: bool) -> list[dict[str, Any]]:
    """Every repetition draws fresh pairs (a new seed, the same seeds for ours and the baselines), so
    neither side is helped by caches: ours, math-verify's small LRU caches, or sympy's."""
    from pangu_core.rewards.config import MathConfig
    from pangu_core.rewards.math import MathVerifier

    n, n_safe = (40, 10) if quick else (1000, 100)
    cases = []
    with MathVerifier(MathConfig(workers=2, timeout_seconds=5.0)) as verifier:
        verifier.compare(math_pairs(4, seed=-1))  # start the workers outside the timed region
        verdicts: dict[str, dict[int, list[bool]]] = {"ours": {}, "main": {}}

        def timed(label: str, size: int, check: Any) -> float:
            seeds = iter(range(1_000_000))

            def once() -> None:
                seed = next(seeds)
                verdicts.setdefault(label, {})[seed] = check(math_pairs(size, seed=seed * 7919 + size))
            return median_seconds(once)

        def ours(pairs: list[tuple[str, str]]) -> list[bool]:
            verifier.clear_cache()
            return [s.score == 1.0 for s in verifier.compare(pairs)]

        ours_s = timed("ours", n, ours)
        base_s = timed("main", n, _verify_main_thread)
        shared = set(verdicts["ours"]) & set(verdicts["main"])
        agree = [a == b for seed in shared for a, b in zip(verdicts["ours"][seed], verdicts["main"][seed])]
        latencies = []
        for pair in math_pairs(20 if quick else 100, seed=-2):
            verifier.clear_cache()
            start = time.perf_counter()
            verifier.compare([pair])
            latencies.append(time.perf_counter() - start)
        lat = percentiles(latencies)
        cases.append(make_case(
            "math_verify_1k", "verifications/s", n / ours_s,
            "math-verify in the main thread, signal timeouts", n / base_s,
            verifications=n, agreement=sum(agree) / max(1, len(agree)), p50_s=lat["p50"], p99_s=lat["p99"],
        ))
        ours_safe_s = timed("ours_safe", n_safe, ours)
        safe_s = timed("safe", n_safe, _verify_process_per_call)
        cases.append(make_case(
            "math_verify_1k_safe", "verifications/s", n_safe / ours_safe_s,
            "math-verify in a forked process per call", n_safe / safe_s,
            verifications=n_safe, p50_s=lat["p50"], p99_s=lat["p99"],
        ))
    return cases


def _code_case(quick: bool) -> dict[str, Any]:
    from pangu_core.rewards.code import CodeVerifier
    from pangu_core.rewards.config import CodeConfig

    programs = code_programs(8 if quick else 200)
    workers = 2
    verifier = CodeVerifier(CodeConfig(workers=workers))
    latencies: list[float] = []

    def one(index: int) -> float:
        start = time.perf_counter()
        source, tests = programs[index]
        score = verifier.score_program(source, tests).score
        latencies.append(time.perf_counter() - start)
        return score

    def ours() -> None:
        latencies.clear()
        with ThreadPoolExecutor(workers) as pool:
            ours.scores = list(pool.map(one, range(len(programs))))  # type: ignore[attr-defined]

    ours_s = median_seconds(ours)
    base_s = median_seconds(lambda: _run_unpooled(programs))
    lat = percentiles(latencies)
    return make_case(
        "code_exec_200", "programs/s", len(programs) / ours_s,
        "fresh subprocess per test, no pooling", len(programs) / base_s,
        programs=len(programs), tests_per_program=5, pool=workers,
        mean_score=sum(ours.scores) / len(programs),  # type: ignore[attr-defined]
        p50_s=lat["p50"], p99_s=lat["p99"],
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    return _math_cases(quick) + [_code_case(quick)]
