"""`pangu-core rl`: GRPO on the latency-tolerant scheduler from a checkpoint of `pangu-core sft` / `distill`.

Settings come from ``configs/rl_default.yaml`` (``--quick``: ``rl_quick.yaml``, or ``--config
FILE``); ``--eta``, ``--fifo``, ``--seed`` and ``--backend`` replace the config's (``--backend ray
[--ray-address auto]``: Ray actors; ``--backend torchrun`` under ``torchrun``: rank 0 learns). ``--init`` is required: the
embedded default has no RL-ready model of its own (train one with `pangu-core sft`). See
:mod:`pangu_core.rl.run` for the run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pangu_core.rl.config import RLConfig, builtin_config
from pangu_core.runs import add_run_arguments, chosen_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core rl`."""
    add_run_arguments(parser, default="rl_default.yaml", quick="the built-in rl_quick.yaml (a couple of minutes)",
                      init="start checkpoint folder, e.g. OUT/checkpoint of `pangu-core sft` or "
                           "OUT/round_<t>/merged of `pangu-core distill` (required)",
                      out="run folder (new or empty; the same run there is resumed from its last checkpoint)")
    parser.add_argument("--eta", type=int, help="replace the staleness bound (0 synchronous, 1 one-step-off)")
    parser.add_argument("--fifo", action="store_true", help="the FIFO arm: equal priorities, no age boost")
    parser.add_argument("--backend", choices=("process", "ray", "torchrun"),
                        help="replace the config's backend: rollout processes on this host, Ray actors (extra "
                             "[ray]), or torchrun ranks (rank 0 learns; start with `torchrun ... pangu-core rl`)")
    parser.add_argument("--ray-address", help="backend ray: the cluster to join (e.g. auto); default: a local Ray")


def load_config(args: argparse.Namespace) -> tuple[RLConfig, str]:
    """The config the arguments name, with --eta, --fifo and --seed applied; and where it came from."""
    path, source = chosen_config(args, builtin_config, "rl_default", "rl_quick")
    config = RLConfig.from_yaml(path)
    schedule = config.schedule
    if args.eta is not None:
        if args.eta < 0:
            raise ValueError(f"--eta: expected an int >= 0, got {args.eta}")
        schedule = schedule.replace(eta=args.eta)
    if args.fifo:
        schedule = schedule.replace(fifo=True)
    config = config.replace(schedule=schedule)
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    if getattr(args, "backend", None) is not None:
        config = config.replace(backend=args.backend)
    if getattr(args, "ray_address", None) is not None and config.backend != "ray":
        raise ValueError(f"--ray-address: only with backend 'ray' (the config's backend is {config.backend!r})")
    return config, source


def run(args: argparse.Namespace) -> int:
    """Runs (or resumes) the GRPO run; prints a JSON summary to stdout."""
    from pangu_core.rl.run import run_rl

    config, source = load_config(args)
    if args.init is None:
        raise ValueError("--init: required; pass a checkpoint folder from `pangu-core sft` (OUT/checkpoint) or "
                         "`pangu-core distill` (OUT/round_<t>/merged); e.g. `pangu-core sft --quick --out sft` "
                         "then `pangu-core rl --quick --init sft/checkpoint --out rl`")
    report = run_rl(config, args.out, init=args.init, progress=not args.no_progress, overwrite=args.overwrite,
                    ray_address=args.ray_address)
    if "rank" in report:          # a torchrun rollout rank: its own summary; rank 0 writes the report
        print(json.dumps(report, indent=2))
        return 0
    summary = {key: report[key] for key in ("eta", "fifo", "throughput", "idle", "lag_histogram", "max_lag_consumed",
                                            "queue", "levels_generated", "levels_consumed")}
    summary["speed_model"] = report["speed_model"]
    summary["accuracy"] = [{"step": a["step"], "mean": a["mean"]} for a in report["accuracy"]]
    print(json.dumps({"config": source, **summary, "report": str(Path(args.out) / "report.json")}, indent=2))
    return 0
