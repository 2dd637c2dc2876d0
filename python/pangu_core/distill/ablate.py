"""`pangu-core ablate selection|merging`: the fair comparisons of distillation, paired over seeds.

Every arm of one ablation starts from the same checkpoint (trained once, into ``OUT/start``), sees
the same candidate pools for a seed (pools depend on the seed and the round only), the same teacher,
rounds, per-round response-token budget, optimizer, schedule and test split. Only one setting differs:

* ``selection``: the selection strategy. Arms ``gaussian``, ``random``, ``level_matched_random`` and
  ``fixed_levels`` (levels 3-5 every round). Figure: mean slow accuracy on levels 3-5 of the run's
  final model (its last merged model) after the last round.
* ``merging``: how rounds are merged, on a schedule that moves between skills from round to round
  (round t trains level t + 2 only) so that forgetting can be seen. Arms ``chain`` (no merging),
  ``base`` (task arithmetic on the start checkpoint: the mean of the round deltas), ``base_ties``
  and ``previous_ties`` (TIES at density 0.5 against the start checkpoint or the previous merged
  model). Skills: fast answers on level 1 (learned by the start checkpoint), and slow answers on each
  trained level; forgetting F = mean over the skills learned before the last round of (best accuracy
  so far - final accuracy), on the model each round hands on.

Each arm and seed is a resumable :func:`run_distill` run in ``OUT/runs/<arm>/seed<s>``; the summary
goes to ``OUT/<ablation>.json`` (with the command, commit and machine) and ``OUT/<ablation>.png``.
A gap under two standard errors of the paired differences is reported as no effect.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from pangu_core.distill.config import DistillConfig, builtin_config
from pangu_core.runs import chosen_config

ABLATIONS = ("selection", "merging")
HARD_LEVELS = ("3", "4", "5")


def selection_arms(config: DistillConfig) -> dict[str, DistillConfig]:
    """The selection ablation's arms: only ``selection.strategy`` (and its levels) differ."""
    hard = tuple(level for level in config.levels if str(level) in HARD_LEVELS)

    def arm(strategy: str, **extra) -> DistillConfig:
        return config.replace(selection=config.selection.replace(strategy=strategy, **extra))

    return {"gaussian": arm("gaussian"), "random": arm("random"),
            "level_matched_random": arm("level_matched_random"), "fixed_levels": arm("fixed_levels", fixed_levels=(hard,))}


def merging_schedule(config: DistillConfig) -> tuple[tuple[int, ...], ...]:
    """Round t trains level t + 2 (levels 3, 4, 5 for three rounds), within the run's levels."""
    return tuple((min(max(config.levels), 2 + t),) for t in range(1, config.rounds + 1))


def merging_arms(config: DistillConfig) -> dict[str, DistillConfig]:
    """The merging ablation's arms on the skill-shifting schedule: only ``merging`` differs."""
    shifted = config.replace(selection=config.selection.replace(strategy="fixed_levels",
                                                                fixed_levels=merging_schedule(config)))

    def arm(**merging) -> DistillConfig:
        return shifted.replace(merging=shifted.merging.replace(**merging))

    return {
        "chain": arm(method="none"),
        "base": arm(method="task_arithmetic", delta_reference="base", lambda_=1.0, density=1.0, feed_merged=True),
        "base_ties": arm(method="ties", delta_reference="base", lambda_=1.0, density=0.5, feed_merged=True),
        "previous_ties": arm(method="ties", delta_reference="previous", lambda_=1.0, density=0.5, feed_merged=True),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Paired differences a - b over seeds: mean, standard error, signs, and whether it is an effect."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = _mean(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    return {"differences": diffs, "mean": mean, "sd": sd, "se": se, "positive": sum(d > 0 for d in diffs),
            "seeds": n, "effect": bool(n > 1 and abs(mean) >= 2 * se and se == se)}


def hard_accuracy(report: dict[str, Any]) -> float:
    """Mean slow accuracy on levels 3-5 of the last round's merged model."""
    accuracy = report["rounds"][-1]["eval"]["merged"]["accuracy"]["slow"]
    return _mean([accuracy[level] for level in HARD_LEVELS if level in accuracy])


def skill_curves(report: dict[str, Any]) -> dict[str, list[float]]:
    """Accuracy per skill per round (round 0 = the start) of the model each round hands on."""
    feed = "last" if report["config"]["merging"]["method"] == "none" or not report["config"]["merging"]["feed_merged"] \
        else "merged"
    schedule = [str(levels[0]) for levels in report["config"]["selection"]["fixed_levels"]]
    curves: dict[str, list[float]] = {"fast_1": []}
    curves.update({f"slow_{level}": [] for level in schedule})
    for entry in report["rounds"]:
        accuracy = entry["eval"][feed if entry["round"] else "merged"]["accuracy"]
        curves["fast_1"].append(accuracy.get("fast", {}).get("1", float("nan")))
        for level in schedule:
            curves[f"slow_{level}"].append(accuracy["slow"][level])
    return curves


def forgetting(report: dict[str, Any]) -> tuple[float, float]:
    """(forgetting F over the skills learned before the last round, final mean accuracy over all skills)."""
    curves = skill_curves(report)
    schedule = [str(levels[0]) for levels in report["config"]["selection"]["fixed_levels"]]
    earlier = ["fast_1"] + [f"slow_{level}" for level in schedule[:-1]]
    drops = [max(curves[skill]) - curves[skill][-1] for skill in earlier]
    return _mean(drops), _mean([values[-1] for values in curves.values()])


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def run_ablation(kind: str, config: DistillConfig, seeds: list[int], out: str | Path, progress: bool = True,
                 command: str = "") -> dict[str, Any]:
    """Runs every arm for every seed (resumable) and writes ``OUT/<kind>.json`` and ``OUT/<kind>.png``."""
    from pangu_core.bench.common import machine_info
    from pangu_core.distill.loop import run_distill
    from pangu_core.distill.sft_cli import run_sft
    from pangu_core.plots import ablation_figure

    if kind not in ABLATIONS:
        raise ValueError(f"ablation: expected one of {', '.join(ABLATIONS)}, got {kind!r}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds: expected distinct ints >= 0, got {seeds}")
    out = Path(out)
    commit = _commit()  # the code the runs start with (the summary is written hours later)
    arms = selection_arms(config) if kind == "selection" else merging_arms(config)
    start = out / "start"
    if not (start / "eval.json").is_file():
        print(f"pangu-core ablate: training the shared start checkpoint into {start}", file=sys.stderr, flush=True)
        run_sft(config.warm_start_config(), start, progress=progress, source="warm_start")
    reports: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm, arm_config in arms.items():
            print(f"pangu-core ablate: {kind}: arm {arm}, seed {seed}", file=sys.stderr, flush=True)
            reports[arm].append(run_distill(arm_config.replace(seed=seed), out / "runs" / arm / f"seed{seed}",
                                            init=start / "checkpoint", progress=progress, plot=False))
    summary: dict[str, Any] = {"ablation": kind, "command": command, "commit": commit, "machine": machine_info(),
                               "seeds": seeds, "config": config.to_dict(), "arms": {}}
    if kind == "selection":
        values = {arm: [hard_accuracy(r) for r in runs] for arm, runs in reports.items()}
        for arm, runs in reports.items():
            summary["arms"][arm] = {"hard_accuracy": values[arm], "mean": _mean(values[arm]),
                                    "score_s": [sum(e["timings"]["score_s"] for e in r["rounds"][1:]) for r in runs],
                                    "seconds": [r["seconds"] for r in runs]}
        summary["gaussian_minus"] = {arm: _paired(values["gaussian"], values[arm]) for arm in arms if arm != "gaussian"}
        gap = summary["gaussian_minus"]["random"]
        summary["target"] = {"rule": "gaussian >= random + 0.05 on mean slow accuracy of levels 3-5, sign on >= 2 of 3",
                             "met": gap["mean"] >= 0.05 and gap["positive"] >= min(2, len(seeds))}
        ablation_figure(values, seeds, out / "selection.png", "slow accuracy, levels 3-5",
                        "selection ablation (final merged model)")
    else:
        values, finals = {}, {}
        for arm, runs in reports.items():
            pairs = [forgetting(r) for r in runs]
            values[arm], finals[arm] = [p[0] for p in pairs], [p[1] for p in pairs]
            summary["arms"][arm] = {"forgetting": values[arm], "final_mean_accuracy": finals[arm],
                                    "mean_forgetting": _mean(values[arm]), "mean_final": _mean(finals[arm]),
                                    "curves": [skill_curves(r) for r in runs]}
        chain_f, chain_acc = _mean(values["chain"]), _mean(finals["chain"])
        summary["target"] = {
            "rule": "forgetting <= half the chain's, final mean accuracy >= chain's - 0.02",
            "met": {arm: _mean(values[arm]) <= 0.5 * chain_f and _mean(finals[arm]) >= chain_acc - 0.02
                    for arm in arms if arm != "chain"},
        }
        summary["final_minus_chain"] = {arm: _paired(finals[arm], finals["chain"]) for arm in arms if arm != "chain"}
        ablation_figure(values, seeds, out / "merging.png", "forgetting F", "merging ablation (skill-shifting rounds)")
    path = out / f"{kind}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core ablate`."""
    parser.add_argument("ablation", choices=ABLATIONS, help="which comparison to run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help="base distill config (default: the built-in distill_ablate.yaml)")
    which.add_argument("--quick", action="store_true", help="the built-in distill_quick.yaml (plumbing, minutes)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs and the summary (resumable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Runs the ablation and prints its summary's key figures."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    path, _ = chosen_config(args, builtin_config, "distill_ablate", "distill_quick")
    config = DistillConfig.from_yaml(path)
    command = "pangu-core ablate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else f"pangu-core ablate {args.ablation}"
    summary = run_ablation(args.ablation, config, seeds, args.out, progress=not args.no_progress, command=command)
    keep = ("arms", "target", "gaussian_minus", "final_minus_chain")
    short = {k: v for k, v in summary.items() if k in keep}
    for arm in short.get("arms", {}).values():
        arm.pop("curves", None)
    print(json.dumps(short, indent=2))
    return 0
