"""Microbenchmarks behind `pangu-core bench`: one module per part, ours against a baseline.

A benchmark module in this package defines ``NAME`` (the CLI name), ``DESCRIPTION`` and
``run(quick: bool) -> list[dict]`` returning cases built with :func:`common.make_case`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pangu_core.bench.common import machine_info

_NOT_BENCHMARKS = {"common", "cli"}


def registry() -> dict[str, str]:
    """Benchmark name -> module path, found by scanning this package (nothing imported yet)."""
    names = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_BENCHMARKS:
            continue
        names[info.name] = f"{__name__}.{info.name}"
    return dict(sorted(names.items()))


def run(name: str, quick: bool = False, log: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Runs one benchmark; returns its JSON document ({"bench", "machine", "cases", "seconds"})."""
    known = registry()
    if name not in known:
        raise ValueError(f"name: unknown benchmark {name!r}; known: {', '.join(known) or 'none'}")
    module = importlib.import_module(known[name])
    if log is not None:
        print(f"[bench {name}] {module.DESCRIPTION}{' (quick)' if quick else ''}", file=log, flush=True)
    start = time.perf_counter()
    cases = module.run(quick=quick)
    return {
        "bench": name,
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


def format_table(doc: dict[str, Any]) -> str:
    """A readable terminal table of one benchmark document."""
    header = ("case", "metric", "ours", "baseline", "base value", "ratio", "ceiling %")
    rows = [header]
    for c in doc["cases"]:
        frac = c.get("ceiling_fraction")
        rows.append((
            c["case"], c["metric"], _fmt(c["ours"]), c["baseline"], _fmt(c["baseline_value"]),
            _fmt(c["ratio"]) + "x", "" if frac is None else f"{100 * frac:.0f}%",
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = [f"== {doc['bench']} ({doc['machine']['cpu']}, {doc['machine']['threads']} threads, "
             f"isa {doc['machine']['isa']}, {doc['seconds']} s)"]
    for i, r in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(docs: list[dict[str, Any]] | dict[str, Any], path: str | Path) -> None:
    """Writes one document, or {"benchmarks": [...]} for several, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = docs if isinstance(docs, dict) else {"benchmarks": docs}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
