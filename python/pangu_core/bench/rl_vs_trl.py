"""Benchmark `pangu-core bench rl_vs_trl`: `pangu-core rl` against TRL's GRPOTrainer, the peer baseline.

Both sides start from the same tiny checkpoint (trained here by `pangu-core sft --quick`'s
machinery, or the folder in ``$PANGU_RL_VS_TRL_INIT``), see the same chat-template prompts in the
same order (TRL takes the templated text and tokenizes it to the same ids; checked), score with the
same reward (MARS's math verifier, `pangu_core.rl.run.MarsReward`), and run the same GRPO settings:
group size, groups per step, learning rate (constant), AdamW betas / weight decay, gradient clip,
sampling temperature, generation length, ratio clip 0.2 / 0.2, dual clip, no KL, token-mean loss,
one optimiser step per batch, the same number of steps and the same torch threads in total (the
mapping: :func:`pangu_core.bench._rl_vs_trl_side.trl_arguments`). TRL runs on the CPU in float32
with transformers' generate (no vLLM).

Cases (ids fixed; --quick: fewer steps, one seed):
  sync_vs_trl    groups/s of `pangu-core rl` with eta = 0 over TRL's groups/s.
  async_vs_trl   the same with eta = 1 (one-step-off).
TRL runs twice per seed: at our thread count in total (torch.set_num_threads(num_threads), one
process) and at one thread. The baseline is the faster of the two (median groups/s; the strongest
TRL within the same thread budget: on a busy machine two OpenMP threads of a tiny model can be many
times slower than one); ``trl_threads`` says which, and ``ratio_by_trl_threads`` / ``trl_by_threads``
give both.
Groups/s are taken in steady state, from the end of each run's first optimiser step to its last
(ours from its report.json, TRL's from a TrainerCallback). Each case also holds each side's reward
at the last step, the mean reward of the last quarter of the steps and the greedy test accuracy of
the final model (`evaluation.evaluate_model` on the same test split, the way `pangu-core rl`
measures its snapshots), per seed and as medians, plus the goals the issue sets and whether they
hold. Every run is a child process; the runs of one seed go in a rotating order (interleaved).
The reward curves of every run against wall time are drawn into a PNG: the ``--json`` path with the
suffix .png, else ``rl_vs_trl.png`` in ``$PANGU_BENCH_FIGURE_DIR`` or the current folder; its path
is in each case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pangu_core.bench._rl_vs_trl_side import trl_arguments, trl_differences, trl_version
from pangu_core.bench.common import make_case, progress, ratio_range, skipped_case
from pangu_core.rl.config import RLConfig, builtin_config

NAME = "rl_vs_trl"
# A long end-to-end comparison (a start checkpoint, then four training runs per seed): run by name,
# not by `pangu-core bench all`.
IN_ALL = False
DESCRIPTION = "pangu-core rl (eta 0 and 1) vs TRL's GRPOTrainer: same checkpoint, prompts, MARS reward, settings"

BASELINE = ("TRL GRPOTrainer at the faster of 1 and our torch threads (trl_threads; CPU, float32, "
            "transformers generate, same settings)")
METRIC = "groups/s"
INIT_ENV = "PANGU_RL_VS_TRL_INIT"
FIGURE_ENV = "PANGU_BENCH_FIGURE_DIR"
FIGURE_NAME = "rl_vs_trl.png"
# The arms of every seed: ours at eta 0 and 1, TRL at our thread count and, as the other candidate
# for the strongest baseline within the same thread budget, TRL at one thread.
ARMS = ("ours_sync", "ours_async", "trl", "trl_1t")
ARM_LABELS = {"ours_sync": "pangu-core rl, eta 0", "ours_async": "pangu-core rl, eta 1",
              "trl": "TRL GRPOTrainer, our threads", "trl_1t": "TRL GRPOTrainer, 1 thread"}
GOALS = {"sync_vs_trl": 1.0, "async_vs_trl": 1.2}
CASE_ARM = {"sync_vs_trl": "ours_sync", "async_vs_trl": "ours_async"}
# Levels 1-2 (those of `pangu-core sft --quick`; their longest teacher answer is 48 tokens), 4 groups
# of 4 answers per step, the rest as in rl_quick.yaml.
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"steps": 8, "seeds": (0,), "train_prompts": 200, "test_per_level": 20, "max_new_tokens": 64,
              "levels": (1, 2), "group_size": 4, "batch_groups": 4},
    "full": {"steps": 30, "seeds": (0, 1, 2), "train_prompts": 500, "test_per_level": 50, "max_new_tokens": 64,
             "levels": (1, 2), "group_size": 4, "batch_groups": 4},
}


def bench_config(size: dict[str, Any], eta: int, seed: int) -> RLConfig:
    """The RLConfig of one of our runs (TRL's settings are mapped from the same object): rl_quick.yaml
    with the size's levels, steps, batch and lengths, one checkpoint at the end and no mid-run snapshot."""
    if eta not in (0, 1):
        raise ValueError(f"eta: expected 0 or 1, got {eta!r}")
    base = RLConfig.from_yaml(builtin_config("rl_quick"))
    schedule = base.schedule.replace(eta=eta, group_size=size["group_size"], batch_groups=size["batch_groups"],
                                     prompts_per_claim=size["batch_groups"], max_new_tokens=size["max_new_tokens"])
    return base.replace(levels=tuple(size["levels"]), steps=size["steps"], seed=seed,
                        train_prompts=size["train_prompts"], test_per_level=size["test_per_level"],
                        checkpoint_every=size["steps"], snapshot_steps=(0,), schedule=schedule,
                        eval=base.eval.replace(max_new_tokens=size["max_new_tokens"]))


def run_child(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Runs one side (`_rl_vs_trl_side`) in a child process; its result, or {"error": ...} when it failed."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = folder / "spec.json", folder / "result.json", folder / "child.log"
    spec_path.write_text(json.dumps({**spec, "out": str(folder)}, indent=2) + "\n")
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call([sys.executable, "-m", "pangu_core.bench._rl_vs_trl_side", str(spec_path),
                                str(result_path)], stdout=log, stderr=subprocess.STDOUT)
    if code != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return {"error": f"{spec['side']} child exited with {code}: {' | '.join(tail)}"}
    return json.loads(result_path.read_text())


def train_init(folder: Path, runner: Callable[[dict[str, Any], Path], dict[str, Any]] = run_child) -> str:
    """The start checkpoint: `pangu-core sft --quick` in a child process; returns its checkpoint folder."""
    progress("rl_vs_trl: training the start checkpoint (pangu-core sft --quick)")
    result = runner({"side": "sft"}, folder)
    if "error" in result:
        raise RuntimeError(f"init: the start checkpoint could not be trained: {result['error']}")
    return result["checkpoint"]


def figure_path(argv: Sequence[str] | None = None) -> Path:
    """Where the PNG goes: ``$PANGU_BENCH_FIGURE_DIR/rl_vs_trl.png``, else beside `pangu-core bench
    --json PATH` as PATH with the suffix .png, else ``rl_vs_trl.png`` in the current folder."""
    if os.environ.get(FIGURE_ENV):
        return Path(os.environ[FIGURE_ENV]) / FIGURE_NAME
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--json")
    known, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return Path(known.json).resolve().with_suffix(".png") if known.json else Path.cwd() / FIGURE_NAME


def _median(values: list[float]) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def _tail_mean(rewards: list[float]) -> float:
    tail = rewards[-max(1, len(rewards) // 4):]
    return sum(tail) / len(tail) if tail else float("nan")


def within_spread(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """Whether ours is no lower than theirs beyond the seed spread: median(ours) >= median(theirs) - s,
    with s the larger sample standard deviation of the two sides (None with fewer than 2 seeds)."""
    ours = [v for v in ours if not math.isnan(v)]
    theirs = [v for v in theirs if not math.isnan(v)]
    if len(ours) < 2 or len(theirs) < 2:
        return {"holds": None, "spread": None, "why": "fewer than 2 seeds per side: no spread to judge by"}
    spread = max(statistics.stdev(ours), statistics.stdev(theirs))
    return {"holds": statistics.median(ours) >= statistics.median(theirs) - spread, "spread": spread,
            "ours_median": statistics.median(ours), "trl_median": statistics.median(theirs)}


def _side_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed and median figures of one arm's runs."""
    ok = [r for r in runs if "error" not in r]
    gps = [r["groups_per_s"] for r in ok]
    last = [r["curves"]["reward"][-1] if r["curves"]["reward"] else float("nan") for r in ok]
    tail = [_tail_mean(r["curves"]["reward"]) for r in ok]
    accuracy = [r["accuracy"]["mean"] if r.get("accuracy") else float("nan") for r in ok]
    return {
        "seeds": [r["seed"] for r in ok], "groups_per_s": gps, "groups_per_s_median": _median(gps),
        "reward_last": last, "reward_last_median": _median(last),
        "reward_last_quarter_mean": tail, "reward_last_quarter_mean_median": _median(tail),
        "accuracy": accuracy, "accuracy_median": _median(accuracy),
        "accuracy_by_level": [r["accuracy"]["by_level"] if r.get("accuracy") else None for r in ok],
        "window": ok[0]["window"] if ok else None,
        "window_steps": [r["measured_over_steps"] for r in ok], "window_s": [r["window_s"] for r in ok],
        "wall_s": [r["wall_s"] for r in ok], "threads": ok[0]["threads"] if ok else None,
        "curves": [{"seed": r["seed"], **r["curves"]} for r in ok],
        "errors": [r["error"] for r in runs if "error" in r],
    }


def draw_figure(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Reward against wall time (left, log scale: the arms' speeds differ by orders of magnitude on a
    busy machine) and against step (right) of every run; one colour per arm, one line style per seed."""
    from pangu_core.plots import _pyplot, _save

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"ours_sync": "tab:blue", "ours_async": "tab:orange", "trl": "tab:green", "trl_1t": "tab:red"}
    styles = ("-", "--", ":", "-.")
    for arm, arm_runs in runs.items():
        for i, run in enumerate(r for r in arm_runs if "error" not in r):
            curves = run["curves"]
            for axis, x in ((left, curves["time_s"]), (right, curves["step"])):
                axis.plot(x, curves["reward"], styles[i % len(styles)], marker=".", color=colours[arm],
                          alpha=0.8, label=ARM_LABELS[arm] if i == 0 else None)
    from matplotlib.ticker import FuncFormatter

    names = ("solid", "dashed", "dotted", "dash-dot")
    seeds = sorted({r["seed"] for arm_runs in runs.values() for r in arm_runs})
    line_styles = ", ".join(f"seed {seed} {names[i % len(names)]}" for i, seed in enumerate(seeds))
    left.set(xlabel="wall time since the run started (s, log scale)", ylabel="batch mean reward",
             ylim=(-0.02, 1.02), title=f"reward against wall time ({line_styles})")
    left.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    left.xaxis.set_major_formatter(plain)
    left.xaxis.set_minor_formatter(plain)
    right.set(xlabel="optimiser step", ylabel="batch mean reward", ylim=(-0.02, 1.02), title="reward against step")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(plt, figure, path)


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 and not math.isnan(ours) else float("nan")


def _seed_ratio_range(ours: dict[str, Any], trl: dict[str, Any]) -> list[float] | None:
    """The ratio_range of groups/s over the seeds both sides completed: a seed's runs are one
    repetition of each side (run back to back), so they pair by seed, not by list position."""
    ours_by_seed = dict(zip(ours["seeds"], ours["groups_per_s"]))
    trl_by_seed = dict(zip(trl["seeds"], trl["groups_per_s"]))
    seeds = [seed for seed in ours_by_seed if seed in trl_by_seed]
    return ratio_range([ours_by_seed[s] for s in seeds], [trl_by_seed[s] for s in seeds], higher_is_better=True)


def _pick_baseline(trl_arms: dict[str, dict[str, Any]]) -> str:
    """The TRL arm with the higher median groups/s (the strongest baseline within the thread budget)."""
    rated = {arm: f["groups_per_s_median"] for arm, f in trl_arms.items() if not math.isnan(f["groups_per_s_median"])}
    return max(rated, key=rated.get) if rated else "trl"


def _quality(ours: dict[str, Any], trl: dict[str, Any]) -> dict[str, Any]:
    pairs = (("reward_last", "reward_last_median"), ("reward_last_quarter_mean", "reward_last_quarter_mean_median"),
             ("test_accuracy", "accuracy_median"))
    out: dict[str, Any] = {}
    for name, median in pairs:
        key = "accuracy" if name == "test_accuracy" else name
        out[name] = {"ours": ours[key], "trl": trl[key], "ours_median": ours[median], "trl_median": trl[median]}
    out["test_accuracy"].update(ours_by_level=ours["accuracy_by_level"], trl_by_level=trl["accuracy_by_level"])
    return out


def build_cases(runs: dict[str, list[dict[str, Any]]], size: dict[str, Any], version: str, init: str,
                figure: str | None) -> list[dict[str, Any]]:
    """The two cases from every arm's runs (see the module docstring)."""
    base_config = bench_config(size, 0, size["seeds"][0])
    trl_arms = {arm: _side_figures(runs[arm]) for arm in ("trl", "trl_1t") if arm in runs}
    chosen = _pick_baseline(trl_arms)
    trl = trl_arms[chosen]
    chosen_threads = base_config.num_threads if chosen == "trl" else 1
    settings = {k: v for k, v in trl_arguments(base_config, "-").items() if k != "output_dir"}
    by_threads = {str(base_config.num_threads if arm == "trl" else 1): {
        "groups_per_s": f["groups_per_s"], "groups_per_s_median": f["groups_per_s_median"],
        "reward_last": f["reward_last"], "reward_last_quarter_mean": f["reward_last_quarter_mean"],
        "test_accuracy": f["accuracy"], "window_s": f["window_s"], "wall_s": f["wall_s"], "threads": f["threads"],
        "reward_curves": f["curves"],
    } for arm, f in trl_arms.items()}
    cases = []
    for case, arm in CASE_ARM.items():
        ours = _side_figures(runs[arm])
        eta = 0 if arm == "ours_sync" else 1
        config = bench_config(size, eta, size["seeds"][0])
        ratio = _ratio(ours["groups_per_s_median"], trl["groups_per_s_median"])
        quality = _quality(ours, trl)
        extra: dict[str, Any] = {
            "trl_version": version, "eta": eta, "seeds": list(size["seeds"]), "steps": size["steps"],
            "levels": list(size["levels"]), "group_size": size["group_size"], "batch_groups": size["batch_groups"],
            "max_new_tokens": size["max_new_tokens"], "threads": config.num_threads, "init": init,
            "trl_threads": chosen_threads,
            "ratio_by_trl_threads": {t: _ratio(ours["groups_per_s_median"], f["groups_per_s_median"])
                                     for t, f in by_threads.items()},
            "groups_per_s_runs": {"ours": ours["groups_per_s"], "trl": trl["groups_per_s"]},
            **quality,
            "init_test_accuracy": next((r["init_accuracy"] for r in runs[arm] if r.get("init_accuracy")), None),
            "window": {"ours": ours["window"], "trl": trl["window"]},
            "window_steps": {"ours": ours["window_steps"], "trl": trl["window_steps"]},
            "window_s": {"ours": ours["window_s"], "trl": trl["window_s"]},
            "wall_s": {"ours": ours["wall_s"], "trl": trl["wall_s"]},
            "side_threads": {"ours": ours["threads"], "trl": trl["threads"]},
            "trl_by_threads": by_threads,
            "reward_curves": {"ours": ours["curves"], "trl": trl["curves"]},
            "goals": {"ratio": GOALS[case], "ratio_met": None if math.isnan(ratio) else ratio >= GOALS[case],
                      "reward_last_no_lower": within_spread(ours["reward_last"], trl["reward_last"]),
                      "test_accuracy_no_lower": within_spread(ours["accuracy"], trl["accuracy"])},
            "trl_settings": settings, "differences": trl_differences(config), "figure": figure,
        }
        if eta:
            extra["max_lag_consumed"] = [r.get("max_lag_consumed") for r in runs[arm] if "error" not in r]
        errors = ours["errors"] + [e for f in trl_arms.values() for e in f["errors"]]
        if errors:
            extra["errors"] = errors
        cases.append(make_case(case, METRIC, ours["groups_per_s_median"], BASELINE, trl["groups_per_s_median"],
                               repeats=max(1, min(len(ours["groups_per_s"]), len(trl["groups_per_s"]))),
                               child_process=True, ratio_range=_seed_ratio_range(ours, trl), **extra))
    return cases


def arm_spec(arm: str, config: RLConfig, init: str) -> dict[str, Any]:
    """The child's spec of one arm's run."""
    if arm not in ARM_LABELS:
        raise ValueError(f"arm: expected one of {list(ARM_LABELS)}, got {arm!r}")
    spec = {"side": "ours" if arm.startswith("ours") else "trl", "config": config.to_dict(), "init": init}
    if arm == "trl_1t":
        spec["torch_threads"] = 1
    return spec


def run(quick: bool = False, *, init: str | os.PathLike[str] | None = None, size: dict[str, Any] | None = None,
        figure: str | os.PathLike[str] | None = None,
        runner: Callable[[dict[str, Any], Path], dict[str, Any]] = run_child) -> list[dict[str, Any]]:
    """The two cases (see the module docstring).

    ``init``: a start checkpoint folder (default ``$PANGU_RL_VS_TRL_INIT``, else one trained here);
    ``size``: replaces the quick / full sizes (keys of :data:`SIZES`); ``figure``: the PNG's path;
    ``runner(spec, folder)`` runs one side (default: a child process).
    """
    size = dict(SIZES["quick" if quick else "full"] if size is None else size)
    missing = set(SIZES["quick"]) - set(size)
    if missing:
        raise ValueError(f"size: missing {sorted(missing)}")
    version = trl_version()
    if version is None:
        reason = "trl is not installed (pip install 'pangu-core[bench]')"
        return [skipped_case(case, METRIC, BASELINE, reason, trl_version=None) for case in CASE_ARM]
    init = init if init is not None else os.environ.get(INIT_ENV) or None
    arms = ARMS if bench_config(size, 0, 0).num_threads > 1 else ARMS[:3]
    with tempfile.TemporaryDirectory(prefix="pangu-rl-vs-trl-") as scratch:
        work = Path(scratch)
        if init is None:
            init = train_init(work / "sft", runner)
            init_source = "pangu-core sft --quick, trained for this run"
        else:
            if not (Path(init) / "config.json").is_file():
                raise FileNotFoundError(f"init: {str(init)!r} is not a model folder (no config.json)")
            init_source = str(Path(init).resolve())
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for r, seed in enumerate(size["seeds"]):
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
                progress(f"rl_vs_trl: seed {seed}, {ARM_LABELS[arm]} ({size['steps']} steps)")
                config = bench_config(size, 1 if arm == "ours_async" else 0, seed)
                result = runner(arm_spec(arm, config, str(init)), work / f"{arm}_seed{seed}")
                result.setdefault("seed", seed)
                runs[arm].append(result)
        path = Path(figure) if figure is not None else figure_path()
        drawn = None
        if any("error" not in r for arm_runs in runs.values() for r in arm_runs):
            drawn = str(draw_figure(runs, path))
        return build_cases(runs, size, version, init_source, drawn)
