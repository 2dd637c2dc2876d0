"""`pangu-core dual`: the dual-system run (explicit modes, labels, auto mode, evaluation, Pareto report).

Settings come from ``configs/dual_default.yaml`` (``--quick``: ``dual_quick.yaml``, or ``--config
FILE``); ``--init`` names the start checkpoint (default: the config's warm start trains one). See
:mod:`pangu_core.dual.run` for the run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pangu_core.dual.config import DualConfig, builtin_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core dual`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help="YAML run config (default: the built-in dual_default.yaml)")
    which.add_argument("--quick", action="store_true", help="the built-in dual_quick.yaml (levels 1-3, short phases)")
    parser.add_argument("--init", type=Path, help="start checkpoint folder, e.g. OUT/checkpoint of `pangu-core sft` "
                                                  "(default: trained by the config's warm_start)")
    parser.add_argument("--seed", type=int, help="replace the config's seed")
    parser.add_argument("--out", type=Path, required=True, help="run folder (new or empty; the same run there is "
                                                                "resumed, finished phases skipped)")
    parser.add_argument("--overwrite", action="store_true", help="replace another run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_config(args: argparse.Namespace) -> tuple[DualConfig, str]:
    """The config the arguments name, with --seed applied; and where it came from."""
    path = args.config or builtin_config("dual_quick" if args.quick else "dual_default")
    config = DualConfig.from_yaml(path)
    if getattr(args, "seed", None) is not None:
        config = config.replace(seed=args.seed)
    return config, str(args.config) if args.config else path.name


def run(args: argparse.Namespace) -> int:
    """Runs the phases; prints the targets and the files as JSON to stdout."""
    from pangu_core.dual.run import run_dual

    config, source = load_config(args)
    report = run_dual(config, args.out, init=args.init, progress=not args.no_progress, overwrite=args.overwrite)
    summary = {"config": source,
               "accuracy": {mode: report["final"]["accuracy"][mode] for mode in ("slow", "fast", "auto")},
               "fast_share_auto": report["final"]["fast_share"]["auto"],
               "savings": {mix: {"auto": m["auto"]["savings"], "oracle": m["oracle"]["savings"]}
                           for mix, m in report["mixes"].items()},
               "targets": {name: {"value": t["value"], "met": t["met"]} for name, t in report["targets"].items()},
               "seconds": report["seconds"],
               "files": {"report": str(Path(args.out) / "report.json"), "pareto": str(Path(args.out) / "pareto.png")}}
    print(json.dumps(summary, indent=2))
    return 0
