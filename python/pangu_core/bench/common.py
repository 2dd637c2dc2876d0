"""Shared measurement helpers for `pangu-core bench`: timing medians, machine info, ceilings.

Every benchmark measures ours and its baseline in the same process run, repeats each at least five
times, and reports medians and the range of the per-repetition ratios. Nothing here asserts on speed.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Iterator, TextIO

MIN_REPEATS = 5


def interleaved_times(
    fns: list[Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    after: Callable[[int], None] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """Seconds of each of ``fns`` in every one of ``repeats`` rounds, the fns called in turn within a
    round (ours, baseline, ours, ...) so that a change of machine load hits every side alike.

    ``warmup`` untimed rounds come first. ``sync()`` runs inside each timing (waits for a device);
    ``after(i)`` runs untimed after fn i (e.g. checks and clears its output); ``on_round(r)`` runs
    before round r (negative during the warm-up).
    """
    times: list[list[float]] = [[] for _ in fns]
    for r in range(-warmup, repeats):
        if on_round is not None:
            on_round(r)
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            elapsed = time.perf_counter() - start
            if r >= 0:
                times[i].append(elapsed)
            if after is not None:
                after(i)
    return times


def ratio_range(ours: Sequence[float], baseline: Sequence[float], *,
                higher_is_better: bool = False) -> list[float] | None:
    """[lowest, highest] per-repetition ratio of paired repetitions (repetition i of ours against
    repetition i of the baseline), each ratio "how many times better ours is" as in :func:`make_case`.

    ``ours`` and ``baseline`` are seconds by default (ratio baseline_i / ours_i); with
    ``higher_is_better`` they are rates (ratio ours_i / baseline_i, the same figure for rates of
    equal work). None when there is nothing to pair: no repetitions, unequal counts, or a value that
    is not a usable measurement (missing, NaN, infinite, zero or negative).
    """
    if not ours or len(ours) != len(baseline):
        return None
    if any(_measurement_problem("repetition", v) for v in (*ours, *baseline)):
        return None
    pairs = zip(ours, baseline)
    ratios = [o / b for o, b in pairs] if higher_is_better else [b / o for o, b in pairs]
    return [min(ratios), max(ratios)]


def interleaved_medians(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int = MIN_REPEATS,
                        warmup: int = 1, between: Callable[[str], None] | None = None
                        ) -> tuple[float, float, list[float] | None]:
    """Median seconds of ``ours()`` and ``theirs()`` from :func:`interleaved_times`, and the
    :func:`ratio_range` of their paired repetitions; ``between(side)`` ("ours" or "theirs") runs
    untimed after each call."""
    sides = ("ours", "theirs")
    times = interleaved_times([ours, theirs], repeats, warmup=warmup,
                              after=None if between is None else lambda i: between(sides[i]))
    return statistics.median(times[0]), statistics.median(times[1]), ratio_range(times[0], times[1])


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Runs the block with torch at ``n`` threads (default: pangu_core's pool count, so both sides of a
    case use the same threads); yields that count and restores torch's previous one afterwards."""
    import torch

    import pangu_core

    n = pangu_core.get_num_threads() if n is None else n
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def median_seconds(fn: Callable[[], Any], repeats: int = MIN_REPEATS, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    repeats = max(repeats, MIN_REPEATS)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentiles(values: list[float], points: tuple[float, ...] = (50, 99)) -> dict[str, float]:
    """{"p50": ..., "p99": ...} of ``values`` (nearest-rank)."""
    ordered = sorted(values)
    out = {}
    for p in points:
        if not ordered:
            out[f"p{p:g}"] = float("nan")
            continue
        rank = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
        out[f"p{p:g}"] = ordered[rank]
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The "machine" block of the benchmark JSON."""
    from pangu_core import build_info

    info = build_info()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": info["threads"],
        "isa": info["isa_selected"],
        "threads_backend": info["threads_backend"],
        "compiler": info["compiler"],
        "version": info["version"],
        "python": platform.python_version(),
    }


CEILING_TOLERANCE = 1.05  # ceiling_fraction above this: the ceiling is wrong, flagged in the table

#: Where make_case and progress() write one line per case; None silences them.
progress_stream: TextIO | None = sys.stderr


def progress(message: str) -> None:
    """Writes one progress line (e.g. "case X: measuring ...") to stderr for long benchmark work."""
    if progress_stream is not None:
        print(f"[bench] {message}", file=progress_stream, flush=True)


def _measurement_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not a usable measurement (None when it is): missing, NaN, infinite or <= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} is not a number ({value!r})"
    if math.isnan(value) or math.isinf(value):
        return f"{name} is {value}"
    if value <= 0:
        return f"{name} is {value:g} (zero or negative)"
    return None


def _checked_range(value: Any) -> list[float]:
    """``value`` as [lo, hi] floats; ValueError naming ratio_range unless it is two finite numbers, lo <= hi."""
    def finite(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2 \
            or not all(finite(v) for v in value) or value[0] > value[1]:
        raise ValueError(f"ratio_range: expected [lo, hi], two finite numbers with lo <= hi, got {value!r}")
    return [float(value[0]), float(value[1])]


def make_case(
    case: str,
    metric: str,
    ours: float,
    baseline: str,
    baseline_value: float,
    *,
    repeats: int,
    child_process: bool,
    higher_is_better: bool = True,
    ceiling: str | None = None,
    ceiling_value: float | None = None,
    ratio_range: Sequence[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One case of the benchmark JSON.

    ``ratio`` is how many times better ours is: ours / baseline for rates, baseline / ours when
    lower is better (times). ``ceiling_fraction`` = ours / ceiling_value when a ceiling applies.
    ``repeats`` is how many repetitions per side were measured (medians reported) and
    ``child_process`` whether ours or the baseline ran in a child process; both are recorded.
    ``ratio_range`` is [lowest, highest] ratio of single repetitions (from :func:`ratio_range` of
    the paired repetitions), the spread behind the median ``ratio``; recorded as two floats unless
    the case failed. Anything but two finite numbers with lo <= hi raises ValueError.

    A failed or zero measurement (ours, baseline_value or a given ceiling_value missing, NaN,
    infinite, zero or negative) makes ``ratio`` (and ``ceiling_fraction``) NaN, sets
    ``failed: True`` and says why in ``failure``; `pangu-core bench` then exits non-zero.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    if not isinstance(child_process, bool):
        raise ValueError(f"child_process: expected a bool, got {child_process!r}")
    spread = None if ratio_range is None else _checked_range(ratio_range)
    problems = [p for p in (_measurement_problem("ours", ours),
                            _measurement_problem("baseline_value", baseline_value)) if p]
    nan = float("nan")
    if problems:
        ratio = nan
    elif higher_is_better:
        ratio = ours / baseline_value
    else:
        ratio = baseline_value / ours
    out: dict[str, Any] = {
        "case": case, "metric": metric, "ours": ours, "baseline": baseline,
        "baseline_value": baseline_value, "ratio": ratio, "repeats": repeats, "child_process": child_process,
    }
    if ceiling is not None:
        ceiling_problem = _measurement_problem("ceiling_value", ceiling_value)
        out["ceiling"] = ceiling
        out["ceiling_value"] = ceiling_value
        out["ceiling_fraction"] = nan if ceiling_problem or problems else ours / ceiling_value
        if ceiling_problem:
            problems.append(ceiling_problem)
    if problems:
        out["failed"] = True
        out["failure"] = "; ".join(problems)
    elif spread is not None:
        out["ratio_range"] = spread
    out.update(extra)
    _report(out)
    return out


def skipped_case(case: str, metric: str, baseline: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A case that could not run here (e.g. no device): NaN values, ``skipped`` = the reason.

    Skipped cases are shown in the table with their reason and do not make the command fail.
    ``extra`` fields (the device asked for, ...) are recorded too.
    """
    nan = float("nan")
    out = {"case": case, "metric": metric, "ours": nan, "baseline": baseline, "baseline_value": nan,
           "ratio": nan, "repeats": 0, "child_process": False, "skipped": reason, **extra}
    _report(out)
    return out


def case_status(case: dict[str, Any]) -> str:
    """"skipped: why", "FAILED: why", "ceiling exceeded" or "" (fine) for one case."""
    if case.get("skipped"):
        return f"skipped: {case['skipped']}"
    if case.get("failed"):
        return f"FAILED: {case.get('failure', 'failed measurement')}"
    frac = case.get("ceiling_fraction")
    if isinstance(frac, (int, float)) and frac > CEILING_TOLERANCE:
        return "ceiling exceeded"
    return ""


def _report(case: dict[str, Any]) -> None:
    def num(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, (int, float)) else repr(v)

    status = case_status(case)
    progress(f"{case['case']}: ours {num(case['ours'])} {case['metric']}, baseline "
             f"{num(case['baseline_value'])}, ratio {num(case['ratio'])}x" + (f"  [{status}]" if status else ""))


def memcpy_gbps(nbytes: int = 256 << 20, repeats: int = MIN_REPEATS) -> float:
    """Memory-copy bandwidth in GB/s (bytes read + bytes written) with torch's multi-threaded copy.

    A ceiling, so the fastest repetition counts (a median would put it below what the machine did
    at its best, and a case's own median could then exceed it)."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds = min(interleaved_times([lambda: dst.copy_(src)], repeats)[0])
    return 2 * nbytes / seconds / 1e9


def gemm_gflops(n: int = 1024, dtype: str = "float32", repeats: int = MIN_REPEATS) -> float:
    """Dense matrix-multiply GFLOP/s of torch (MKL/oneDNN) for an n x n x n product."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    seconds = median_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9
