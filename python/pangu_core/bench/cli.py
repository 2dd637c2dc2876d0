"""`pangu-core bench <name>|all [--quick] [--json PATH]`.

Prints one table per benchmark (progress lines per case go to stderr) and exits 1 when any case
failed to measure (NaN or zero), after running and saving everything else.
"""

from __future__ import annotations

import argparse
import sys

from pangu_core import bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a benchmark name, or 'all' (known: " + ", ".join(bench.registry())
                        + "; 'all' leaves out the long end-to-end comparisons, such as rl_vs_trl)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--device", default="cpu", metavar="cpu|cuda[:N]|npu[:N]",
                        help="run the benchmarks that support it (attention, sync) on this device")


def run(args: argparse.Namespace) -> int:
    known = bench.registry()
    if args.name != "all" and args.name not in known:
        raise ValueError(f"name: unknown benchmark {args.name!r}; known: {', '.join(known)}, all")
    names = [n for n in known if bench.in_all(n)] if args.name == "all" else [args.name]
    docs = []
    failed: list[str] = []
    if args.device != "cpu":
        names = [n for n in names if args.name != "all" or bench.supports_device(n)]
    for name in names:
        doc = bench.run(name, quick=args.quick, device=args.device)
        docs.append(doc)
        print(bench.format_table(doc), flush=True)
        print(flush=True)
        failed += [f"{name}/{case}" for case in bench.failed_cases(doc)]
        if args.json:  # written after each benchmark so a long suite keeps what it measured
            bench.write_json(docs[0] if len(names) == 1 else docs, args.json)
    if args.json:
        print(f"results written to {args.json}")
    if failed:
        print(f"pangu-core bench: {len(failed)} case(s) failed to measure: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
