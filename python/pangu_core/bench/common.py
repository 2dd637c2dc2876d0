"""Shared measurement helpers for `pangu-core bench`: timing medians, machine info, ceilings.

Every benchmark measures ours and its baseline in the same process run, repeats each at least five
times, and reports medians. Nothing here asserts on speed.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any, Callable

MIN_REPEATS = 5


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


def make_case(
    case: str,
    metric: str,
    ours: float,
    baseline: str,
    baseline_value: float,
    *,
    higher_is_better: bool = True,
    ceiling: str | None = None,
    ceiling_value: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One case of the benchmark JSON.

    ``ratio`` is how many times better ours is: ours / baseline for rates, baseline / ours when
    lower is better (times). ``ceiling_fraction`` = ours / ceiling_value when a ceiling applies.
    """
    if higher_is_better:
        ratio = ours / baseline_value if baseline_value else float("inf")
    else:
        ratio = baseline_value / ours if ours else float("inf")
    out: dict[str, Any] = {
        "case": case, "metric": metric, "ours": ours, "baseline": baseline,
        "baseline_value": baseline_value, "ratio": ratio,
    }
    if ceiling is not None and ceiling_value:
        out["ceiling"] = ceiling
        out["ceiling_value"] = ceiling_value
        out["ceiling_fraction"] = ours / ceiling_value
    out.update(extra)
    return out


def memcpy_gbps(nbytes: int = 256 << 20, repeats: int = MIN_REPEATS) -> float:
    """Memory-copy bandwidth in GB/s (bytes read + bytes written) with torch's multi-threaded copy."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats)
    return 2 * nbytes / seconds / 1e9


def gemm_gflops(n: int = 1024, dtype: str = "float32", repeats: int = MIN_REPEATS) -> float:
    """Dense matrix-multiply GFLOP/s of torch (MKL/oneDNN) for an n x n x n product."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    seconds = median_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9
