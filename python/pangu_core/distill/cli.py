"""`pangu-core distill`: model-aware iterative distillation with merging between rounds.

Settings come from ``configs/distill_default.yaml`` (``--quick``: ``distill_quick.yaml``, or
``--config FILE``); ``--init``, ``--data`` and ``--teacher`` replace the start checkpoint, the
generated pool and the programmatic teacher. See :mod:`pangu_core.distill.loop` for the run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pangu_core.distill.config import DistillConfig, builtin_config
from pangu_core.runs import add_run_arguments, chosen_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core distill`."""
    add_run_arguments(parser, default="distill_default.yaml", quick="the built-in distill_quick.yaml (a few minutes)",
                      init="start checkpoint folder (default: trained by the config's warm_start)",
                      out="run folder (new or empty; the same run there is resumed)")
    parser.add_argument("--data", type=Path, help="JSONL pool of math tasks with references (default: generated "
                                                  "tasks)")
    parser.add_argument("--teacher", type=Path, help="transformers teacher model folder (default: the "
                                                     "programmatic teacher)")


def load_config(args: argparse.Namespace) -> tuple[DistillConfig, str]:
    """The config the arguments name, with --teacher and --seed applied; and where it came from."""
    path, source = chosen_config(args, builtin_config, "distill_default", "distill_quick")
    config = DistillConfig.from_yaml(path)
    if getattr(args, "teacher", None) is not None:
        config = config.replace(teacher=config.teacher.replace(kind="transformers", path=str(args.teacher)))
    if getattr(args, "seed", None) is not None:
        config = config.replace(seed=args.seed)
    return config, source


def run(args: argparse.Namespace) -> int:
    """Runs the rounds; prints a JSON summary per round to stdout."""
    from pangu_core.distill.loop import run_distill

    config, source = load_config(args)
    report = run_distill(config, args.out, init=args.init, data=args.data, progress=not args.no_progress,
                         overwrite=args.overwrite)
    summary = []
    for entry in report["rounds"]:
        line = {"round": entry["round"], "slow_accuracy_merged": entry["eval"]["merged"]["accuracy"].get("slow")}
        if "selection" in entry:
            line["mid_share_pool"] = entry["selection"]["mid_share_pool"]
            line["mid_share_selected"] = entry["selection"]["mid_share_selected"]
            line["mean_level_selected"] = entry["selection"]["mean_level_selected"]
        summary.append(line)
    print(json.dumps({"config": source, "rounds": summary, "seconds": report["seconds"],
                      "report": str(Path(args.out) / "report.json")}, indent=2))
    return 0
