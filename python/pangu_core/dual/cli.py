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
from pangu_core.runs import add_run_arguments, chosen_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core dual`."""
    add_run_arguments(parser, default="dual_default.yaml", quick="the built-in dual_quick.yaml (levels 1-3, short phases)",
                      init="start checkpoint folder, e.g. OUT/checkpoint of `pangu-core sft` (default: trained by "
                           "the config's warm_start)",
                      out="run folder (new or empty; the same run there is resumed, finished phases skipped)")


def load_config(args: argparse.Namespace) -> tuple[DualConfig, str]:
    """The config the arguments name, with --seed applied; and where it came from."""
    path, source = chosen_config(args, builtin_config, "dual_default", "dual_quick")
    config = DualConfig.from_yaml(path)
    if getattr(args, "seed", None) is not None:
        config = config.replace(seed=args.seed)
    return config, source


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
