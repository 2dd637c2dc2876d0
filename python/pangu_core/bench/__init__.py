"""Microbenchmarks behind `pangu-core bench`: one module per part, ours against a baseline.

A benchmark module in this package defines ``NAME`` (the CLI name), ``DESCRIPTION`` and
``run(quick: bool) -> list[dict]`` returning cases built with :func:`common.make_case`, and may set
``IN_ALL = False`` to stay out of `pangu-core bench all`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pangu_core.bench.common import case_status, machine_info

_NOT_BENCHMARKS = {"common", "cli"}


def registry() -> dict[str, str]:
    """Benchmark name -> module path, found by scanning this package (nothing imported yet)."""
    names = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_BENCHMARKS:
            continue
        names[info.name] = f"{__name__}.{info.name}"
    return dict(sorted(names.items()))


def in_all(name: str) -> bool:
    """Whether `pangu-core bench all` (and so `make bench`) runs benchmark ``name``: every one except
    those whose module sets ``IN_ALL = False`` (long end-to-end comparisons run by name)."""
    module = importlib.import_module(registry()[name])
    return bool(getattr(module, "IN_ALL", True))


def supports_device(name: str) -> bool:
    """Whether benchmark ``name`` can run on a device other than the CPU (its run takes ``device``)."""
    module = importlib.import_module(registry()[name])
    return "device" in inspect.signature(module.run).parameters


def run(name: str, quick: bool = False, log: TextIO | None = sys.stderr, device: str = "cpu") -> dict[str, Any]:
    """Runs one benchmark; returns its JSON document ({"bench", "device", "machine", "cases", "seconds"}).

    ``device`` other than "cpu" is accepted by the benchmarks whose ``run`` takes a ``device``
    argument (their cases on an absent device come back skipped, with the reason); any other
    benchmark refuses it with a ValueError naming the argument.
    """
    known = registry()
    if name not in known:
        raise ValueError(f"name: unknown benchmark {name!r}; known: {', '.join(known) or 'none'}")
    module = importlib.import_module(known[name])
    takes_device = "device" in inspect.signature(module.run).parameters
    if device != "cpu" and not takes_device:
        raise ValueError(f"device: benchmark {name!r} runs only on cpu, got {device!r}")
    if log is not None:
        print(f"[bench {name}] {module.DESCRIPTION}{' (quick)' if quick else ''}", file=log, flush=True)
    start = time.perf_counter()
    cases = module.run(quick=quick, device=device) if takes_device else module.run(quick=quick)
    return {
        "bench": name,
        "device": device,
        "quick": quick,
        "machine": machine_info(),
        "seconds": round(time.perf_counter() - start, 2),
        "cases": cases,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def _is_memory_field(key: str) -> bool:
    return key.endswith("_peak_mb") or key.startswith("rss_")


def memory_figures(case: dict[str, Any]) -> str:
    """The peak-memory figures a case carries (fields ending in ``_peak_mb`` or starting with
    ``rss_``), as "name=value" pairs in the order the case lists them."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in case.items() if _is_memory_field(k))


def failed_cases(doc: dict[str, Any]) -> list[str]:
    """Ids of the cases of one benchmark document whose measurement failed (skipped ones excluded)."""
    def failed(c: dict[str, Any]) -> bool:
        ratio = c.get("ratio")
        return bool(c.get("failed")) or not isinstance(ratio, (int, float)) or ratio != ratio

    return [c["case"] for c in doc["cases"] if not c.get("skipped") and failed(c)]


def format_table(doc: dict[str, Any]) -> str:
    """A readable terminal table of one benchmark document.

    Columns: the case, its metric, ours, the named baseline and its value, the ratio (how many
    times better ours is), its spread (the lowest and highest per-repetition ratio, e.g.
    "2.1-2.6x", from ``ratio_range``; empty without one), the share of the ceiling, repetitions
    per side (with "child" when a side ran in a child process), the peak-memory figures the case
    measured, and a status: FAILED (NaN or zero measurement), "ceiling exceeded" (ceiling_fraction
    above 1.05: the ceiling is wrong), or skipped with its reason.
    """
    header = ("case", "metric", "ours", "baseline", "base value", "ratio", "spread", "ceiling %", "repeats",
              "peak memory", "status")
    rows = [header]
    for c in doc["cases"]:
        frac = c.get("ceiling_fraction")
        spread = c.get("ratio_range")
        repeats = "" if c.get("repeats") is None else str(c["repeats"])
        if c.get("child_process"):
            repeats += " child"
        rows.append((
            c["case"], c["metric"], _fmt(c["ours"]), c["baseline"], _fmt(c["baseline_value"]),
            _fmt(c["ratio"]) + "x", "" if spread is None else f"{_fmt(spread[0])}-{_fmt(spread[1])}x",
            "" if frac is None else _percent(frac), repeats, memory_figures(c), case_status(c),
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = [f"== {doc['bench']} ({doc['machine']['cpu']}, {doc['machine']['threads']} threads, "
             f"isa {doc['machine']['isa']}, {doc['seconds']} s)"]
    for i, r in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _percent(frac: Any) -> str:
    if not isinstance(frac, (int, float)) or frac != frac:
        return "nan"
    return f"{100 * frac:.0f}%"


def write_json(docs: list[dict[str, Any]] | dict[str, Any], path: str | Path) -> None:
    """Writes one document, or {"benchmarks": [...]} for several, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = docs if isinstance(docs, dict) else {"benchmarks": docs}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
