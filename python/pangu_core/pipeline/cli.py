"""`pangu-core pipeline`: SFT -> distillation -> RL -> dual system into one run folder, one report.

Settings come from ``configs/pipeline_default.yaml`` (``--quick``: ``pipeline_quick.yaml``, or
``--config FILE``). See :mod:`pangu_core.pipeline.run` for the run folder and how it resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pangu_core.pipeline.config import STAGES, PipelineConfig, builtin_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core pipeline`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help="YAML pipeline config (default: the built-in pipeline_default.yaml)")
    which.add_argument("--quick", action="store_true",
                       help="the built-in pipeline_quick.yaml (levels 1-3, every stage short: a few minutes)")
    parser.add_argument("--seed", type=int, help="replace the config's seed (every stage's)")
    parser.add_argument("--from", dest="from_stage", choices=STAGES,
                        help="rerun this stage and the ones after it even where their configs are unchanged")
    parser.add_argument("--out", type=Path, required=True,
                        help="run folder (new or empty; a run there is resumed, stages with unchanged configs skipped)")
    parser.add_argument("--overwrite", action="store_true", help="replace another pipeline run's files in --out")
    parser.add_argument("--no-progress", action="store_true", help="no status line: a line per stage instead")


def config_from_args(args: argparse.Namespace) -> tuple[PipelineConfig, str]:
    """The config the arguments name, with --seed applied; and how to name it."""
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed: expected an int >= 0, got {args.seed}")
    path = args.config or builtin_config("pipeline_quick" if args.quick else "pipeline_default")
    config = load_config(path)
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    return config, str(args.config) if args.config else Path(path).name


def run(args: argparse.Namespace) -> int:
    """Runs the pipeline; prints the summary table to stderr and the targets and files as JSON to stdout."""
    import sys

    from pangu_core.pipeline.report import summary_rows, text_table
    from pangu_core.pipeline.run import run_pipeline

    config, source = config_from_args(args)
    report = run_pipeline(config, args.out, from_stage=args.from_stage, progress=not args.no_progress,
                          overwrite=args.overwrite, source=source)
    print(text_table(summary_rows(report)), file=sys.stderr)
    out = Path(args.out)
    summary = {"config": source, "seed": report["seed"], "seconds": report["seconds"],
               "targets": {name: {"value": t["value"], "met": t["met"]} for name, t in report["targets"].items()},
               "files": {"report": str(out / "report.md"), "json": str(out / "report.json"),
                         "model": str(out / "model"), "log": str(out / "log.txt")}}
    print(json.dumps(summary, indent=2))
    return 0
