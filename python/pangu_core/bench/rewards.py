"""`pangu-core bench rewards`: MARS throughput against the usual ways of running the same checks.

Both sides do the same work with the same number of processes, repetitions interleaved (ours,
baseline, ours, ...), medians reported; every case runs its work in child processes on both sides.

* math_verify_1k: 1,000 verifications. Ours: ``MathVerifier`` with its verdict cache off
  (``cache_size=0``) and its identical-text/integer shortcut off (``fast_verdicts=False``), so every
  pair goes to math-verify. Baseline: math-verify (default signal timeouts) in a
  ``concurrent.futures.ProcessPoolExecutor`` with as many processes as our workers. Each repetition
  draws fresh pairs in which no string repeats, so no parse cache on either side can help; the
  figure with our shortcut on is reported beside it (``ours_fast_verdicts``).
* math_verify_1k_safe: verifications one call at a time, as many calls in flight as we have workers.
  Ours: ``MathVerifier.compare([pair])`` from that many threads (killable workers). Baseline: one
  fresh forked process per call running math-verify, killed on overrun. Each side reports the
  p50/p99 latency of its own calls in the timed runs.
* code_exec_200: 200 programs x 5 stdin/stdout tests. Ours: ``CodeVerifier`` (sandboxed, one run per
  program). Baseline: a fresh ``python -I -S`` per test, no sandbox, the same parallelism.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any, Callable

from pangu_core.bench.common import MIN_REPEATS, interleaved_times, make_case, percentiles, ratio_range
from pangu_core.rewards.types import CodeTest

NAME = "rewards"
DESCRIPTION = "MARS: math-verify in killable workers, sandboxed code execution"
TIMEOUT_SECONDS = 5.0  # per verification / per test, on both sides


def _progress(message: str) -> None:
    print(f"[rewards] {message}", file=sys.stderr, flush=True)


def interleaved(sides: list[Callable[[int], Any]], repeats: int, warmup: int = 1) -> list[list[float]]:
    """:func:`common.interleaved_times` for sides that take the round number (negative in warm-up), so
    that each round draws fresh inputs and records its own verdicts."""
    current = {"round": 0}

    def bind(side: Callable[[int], Any]) -> Callable[[], Any]:
        return lambda: side(current["round"])

    return interleaved_times([bind(side) for side in sides], repeats, warmup=warmup,
                             on_round=lambda r: current.__setitem__("round", r))


def math_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (reference, answer) pairs in the forms models write, about half equivalent; no string
    occurs twice among them (so parse caches never hit within one batch)."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        a, b = rng.randint(1, 9999), rng.randint(2, 9999)
        same = rng.random() < 0.5
        kind = len(out) % 8
        if kind == 0:
            pair = (f"\\frac{{{a}}}{{{b}}}", f"{a / b:.6f}" if same else f"{a}/{b + 1}")
        elif kind == 1:
            pair = (str(a), f"{a}.0" if same else str(-a))
        elif kind == 2:
            pair = (f"{a}\\%", f"{a / 100}" if same else f"{a / 10}")
        elif kind == 3:
            pair = (f"\\{{{a},{b}\\}}", f"\\{{{b},{a}\\}}" if same else f"\\{{{a},{b + 1}\\}}")
        elif kind == 4:
            pair = (f"[{a}, {a + b})", f"[{a},{a + b})" if same else f"({a},{a + b}]")
        elif kind == 5:
            pair = (f"\\sqrt{{{a}}}", f"{a}^{{1/2}}" if same else f"\\sqrt{{{a + 1}}}")
        elif kind == 6:
            pair = (f"{a}x+{b}", f"{b}+{a}x" if same else f"{a}x-{b}")
        else:
            pair = (f"{a}\\text{{ cm}}", str(a) if same else str(a + 1))
        if pair[0] in seen or pair[1] in seen or pair[0] == pair[1]:
            continue
        seen.update(pair)
        out.append(pair)
    return out


def _as_latex(text: str) -> str:
    """The same wrapping our worker applies before math-verify parses."""
    text = text.strip()
    return text if text.startswith("$") or "\\boxed" in text else f"${text}$"


def _quiet_math_verify() -> None:
    """Silences math-verify's logging (as our worker does) and imports it; the pool's initializer."""
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    import math_verify  # noqa: F401


def verify_one(pair: tuple[str, str]) -> bool:
    """math-verify's usual call with its default (signal) timeouts; an exception is a False verdict."""
    from math_verify import parse, verify

    try:
        gold = parse(_as_latex(pair[0]))
        return bool(gold) and bool(verify(gold, parse(_as_latex(pair[1]))))
    except Exception:
        return False


def verify_in_pool(pool: ProcessPoolExecutor, pairs: list[tuple[str, str]], workers: int) -> list[bool]:
    """Baseline of math_verify_1k: the pairs through ``pool.map`` in about four chunks per process."""
    chunk = max(1, -(-len(pairs) // (workers * 4)))
    return list(pool.map(verify_one, pairs, chunksize=chunk))


_WARM: list[bool] = []


def _warm_parent() -> None:
    """Runs math-verify here once per kind of input (once per process), so every fork inherits its
    lazily built parser, compiled patterns and warm sympy caches instead of building them per call."""
    if not _WARM:
        _quiet_math_verify()
        for pair in math_pairs(8, seed=-1):
            verify_one(pair)
        _WARM.append(True)


def _child(conn: Any, pair: tuple[str, str]) -> None:
    conn.send(verify_one(pair))
    conn.close()


def verify_process_per_call(pairs: list[tuple[str, str]], workers: int,
                            latencies: list[float] | None = None) -> list[bool]:
    """Baseline of math_verify_1k_safe: a fresh forked process per pair, ``workers`` at once, each
    killed after TIMEOUT_SECONDS (verdict False); appends each call's seconds to ``latencies``."""
    context = multiprocessing.get_context("fork")
    _warm_parent()

    out: list[bool] = [False] * len(pairs)
    running: dict[Any, tuple[int, Any, float]] = {}  # receiver -> (index, process, start)
    todo = iter(range(len(pairs)))
    while True:
        while len(running) < workers:
            index = next(todo, None)
            if index is None:
                break
            receiver, sender = context.Pipe(duplex=False)
            start = time.perf_counter()
            proc = context.Process(target=_child, args=(sender, pairs[index]))
            proc.start()
            sender.close()
            running[receiver] = (index, proc, start)
        if not running:
            return out
        now = time.perf_counter()
        deadline = min(start + TIMEOUT_SECONDS for _, _, start in running.values())
        for receiver in wait(list(running), timeout=max(0.0, deadline - now)):
            index, proc, start = running.pop(receiver)
            try:
                out[index] = bool(receiver.recv())
            except EOFError:
                out[index] = False
            if latencies is not None:
                latencies.append(time.perf_counter() - start)
            proc.join()
            receiver.close()
        now = time.perf_counter()
        for receiver, (index, proc, start) in list(running.items()):
            if now - start >= TIMEOUT_SECONDS:
                proc.kill()
                proc.join()
                receiver.close()
                del running[receiver]
                if latencies is not None:
                    latencies.append(now - start)


def verify_ours_per_call(verifier: Any, pairs: list[tuple[str, str]], workers: int,
                         latencies: list[float] | None = None) -> list[bool]:
    """Ours in math_verify_1k_safe: one ``compare([pair])`` per call from ``workers`` threads."""
    def one(pair: tuple[str, str]) -> bool:
        start = time.perf_counter()
        verdict = verifier.compare([pair])[0].score == 1.0
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        return verdict

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, pairs))


def math_cases(n: int, n_safe: int, repeats: int = MIN_REPEATS) -> list[dict[str, Any]]:
    """The two math cases with ``n`` and ``n_safe`` verifications per repetition."""
    from pangu_core.rewards.config import MathConfig
    from pangu_core.rewards.math import MathVerifier

    fair = MathConfig(timeout_seconds=TIMEOUT_SECONDS, cache_size=0, fast_verdicts=False)
    workers = fair.workers
    verdicts: dict[str, dict[int, list[bool]]] = {"ours": {}, "pool": {}, "safe_ours": {}, "safe": {}}
    cases = []
    _progress(f"math_verify_1k: {n} verifications x {repeats} repeats per side, {workers} processes")
    with MathVerifier(fair) as ours, MathVerifier(fair.replace(fast_verdicts=True)) as fast, \
            ProcessPoolExecutor(workers, initializer=_quiet_math_verify) as pool:
        def pairs(r: int, size: int) -> list[tuple[str, str]]:
            return math_pairs(size, seed=1000 + r * 7919 + size)

        def run_ours(r: int) -> None:
            ours.clear_cache()  # the workers drop parsed expressions too
            verdicts["ours"][r] = [s.score == 1.0 for s in ours.compare(pairs(r, n))]

        def run_fast(r: int) -> None:
            fast.clear_cache()
            fast.compare(pairs(r, n))

        def run_pool(r: int) -> None:
            verdicts["pool"][r] = verify_in_pool(pool, pairs(r, n), workers)

        t_ours, t_pool, t_fast = interleaved([run_ours, run_pool, run_fast], repeats)
        agree = [a == b for r in range(repeats) for a, b in zip(verdicts["ours"][r], verdicts["pool"][r])]
        cases.append(make_case(
            "math_verify_1k", "verifications/s", n / statistics.median(t_ours),
            f"math-verify parse+verify (default signal timeouts) in concurrent.futures.ProcessPoolExecutor, "
            f"{workers} processes, pool.map chunks", n / statistics.median(t_pool),
            repeats=repeats, child_process=True, ratio_range=ratio_range(t_ours, t_pool), verifications=n,
            workers=workers,
            caches="off on both sides (our verdict cache 0, fast verdicts off; no string repeats in a batch)",
            agreement=sum(agree) / max(1, len(agree)),
            ours_fast_verdicts=n / statistics.median(t_fast),
        ))
        _progress(f"math_verify_1k: done (ours {cases[-1]['ours']:.0f}/s, baseline {cases[-1]['baseline_value']:.0f}/s)")

        _progress(f"math_verify_1k_safe: {n_safe} calls x {repeats} repeats per side, {workers} in flight")
        lat_ours: list[float] = []
        lat_safe: list[float] = []

        def safe_ours(r: int) -> None:
            ours.clear_cache()
            verdicts["safe_ours"][r] = verify_ours_per_call(ours, pairs(r, n_safe), workers,
                                                            lat_ours if r >= 0 else None)

        def safe_base(r: int) -> None:
            verdicts["safe"][r] = verify_process_per_call(pairs(r, n_safe), workers, lat_safe if r >= 0 else None)

        pool.shutdown()  # no pool threads while forking
        t_ours, t_safe = interleaved([safe_ours, safe_base], repeats)
    agree = [a == b for r in range(repeats) for a, b in zip(verdicts["safe_ours"][r], verdicts["safe"][r])]
    # The latency percentiles pool every call and pair nothing: the spread comes from the repetitions.
    ours_p, safe_p = percentiles(lat_ours), percentiles(lat_safe)
    cases.append(make_case(
        "math_verify_1k_safe", "verifications/s", n_safe / statistics.median(t_ours),
        f"math-verify in a fresh forked multiprocessing.Process per call (killed after {TIMEOUT_SECONDS:g} s), "
        f"{workers} at once", n_safe / statistics.median(t_safe),
        repeats=repeats, child_process=True, ratio_range=ratio_range(t_ours, t_safe), verifications=n_safe,
        in_flight=workers,
        caches="off on both sides", agreement=sum(agree) / max(1, len(agree)),
        p50_s=ours_p["p50"], p99_s=ours_p["p99"], baseline_p50_s=safe_p["p50"], baseline_p99_s=safe_p["p99"],
    ))
    _progress(f"math_verify_1k_safe: done (ours {cases[-1]['ours']:.1f}/s, baseline {cases[-1]['baseline_value']:.1f}/s)")
    return cases


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


def _same_output(got: str, expected: str) -> bool:
    """Output match as our code reward judges it: trailing spaces per line and trailing blank lines ignored."""
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().splitlines()]
    return norm(got) == norm(expected)


def run_fresh_interpreters(programs: list[tuple[str, tuple[CodeTest, ...]]], workers: int) -> list[int]:
    """Baseline of code_exec_200: each program written once, each test a fresh ``python -I -S``
    (TIMEOUT_SECONDS wall clock), ``workers`` tests at once. Returns tests passed per program."""
    folder = tempfile.mkdtemp(prefix="pangu-bench-")
    try:
        paths = []
        for index, (source, _) in enumerate(programs):
            paths.append(os.path.join(folder, f"p{index}.py"))
            with open(paths[-1], "w", encoding="utf-8") as f:
                f.write(source)

        def one(job: tuple[int, CodeTest]) -> bool:
            index, test = job
            try:
                run = subprocess.run([sys.executable, "-I", "-S", paths[index]], input=test.stdin,
                                     capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=folder)
            except subprocess.TimeoutExpired:
                return False
            return run.returncode == 0 and _same_output(run.stdout, test.expected_stdout or "")

        jobs = [(index, test) for index, (_, tests) in enumerate(programs) for test in tests]
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, jobs))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    passed = [0] * len(programs)
    for (index, _), ok in zip(jobs, results):
        passed[index] += ok
    return passed


def run_ours_code(verifier: Any, programs: list[tuple[str, tuple[CodeTest, ...]]], workers: int,
                  latencies: list[float] | None = None) -> list[int]:
    """Ours in code_exec_200: ``CodeVerifier.score_program`` per program from ``workers`` threads.
    Returns tests passed per program."""
    def one(program: tuple[str, tuple[CodeTest, ...]]) -> int:
        start = time.perf_counter()
        failures = verifier.run_tests(*program)
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        return sum(1 for why in failures if not why)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def code_case(n: int, repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """code_exec_200 with ``n`` programs of 5 tests each."""
    from pangu_core.rewards.code import CodeVerifier
    from pangu_core.rewards.config import CodeConfig

    programs = code_programs(n)
    config = CodeConfig()
    workers = config.workers
    verifier = CodeVerifier(config)
    latencies: list[float] = []
    passed: dict[str, list[int]] = {}
    _progress(f"code_exec_200: {n} programs x 5 tests x {repeats} repeats per side, {workers} at once")

    def ours(r: int) -> None:
        passed["ours"] = run_ours_code(verifier, programs, workers, latencies if r >= 0 else None)

    def base(r: int) -> None:
        passed["baseline"] = run_fresh_interpreters(programs, workers)

    t_ours, t_base = interleaved([ours, base], repeats)
    lat = percentiles(latencies)
    case = make_case(
        "code_exec_200", "programs/s", n / statistics.median(t_ours),
        f"subprocess.run(python -I -S) per test, no sandbox, {workers} threads", n / statistics.median(t_base),
        repeats=repeats, child_process=True, ratio_range=ratio_range(t_ours, t_base), programs=n,
        tests_per_program=5, workers=workers,
        tests_passed=sum(passed["ours"]), baseline_tests_passed=sum(passed["baseline"]),
        p50_s=lat["p50"], p99_s=lat["p99"],
    )
    _progress(f"code_exec_200: done (ours {case['ours']:.1f}/s, baseline {case['baseline_value']:.1f}/s)")
    return case


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, n_safe, programs = (40, 10, 8) if quick else (1000, 100, 200)
    return math_cases(n, n_safe) + [code_case(programs)]
