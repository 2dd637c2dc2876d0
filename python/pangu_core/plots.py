"""The run reports' figures (PNG, matplotlib's Agg backend): drivers pass their report, this draws it.

* :func:`distill_figure`: a distillation run (accuracy per level against round, complexity
  histograms, selected level shares).
* :func:`ablation_figure`: an ablation (a final figure per arm and seed).
* :func:`rl_figure`: a GRPO run (reward and greedy test accuracy against step and wall time).
* :func:`dual_pareto_figure`: a dual-system run (accuracy against tokens per test mix, fast share per level).
* :func:`pipeline_figure`: a pipeline run (accuracy per level after each stage, the final model's Pareto points).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: str | Path) -> Path:
    """Lays out, writes and closes ``figure``; returns the path."""
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _levels(accuracy: Mapping[str, Mapping[str, float]], mode: str) -> list[str]:
    return sorted(accuracy.get(mode, {}), key=int)


def distill_figure(report: Mapping[str, Any], path: str | Path, mode: str = "slow") -> Path:
    """Three panels: ``mode`` accuracy per level against round (merged solid, last round's model
    dashed), the pool's and the selection's complexity histograms per round, and the selected level
    shares per round."""
    plt = _pyplot()
    rounds = report["rounds"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = [entry["round"] for entry in rounds]
    for i, level in enumerate(_levels(rounds[0]["eval"]["merged"]["accuracy"], mode)):
        colour = colours[i % len(colours)]
        for kind, style in (("merged", "-"), ("last", "--")):
            values = [entry["eval"][kind]["accuracy"].get(mode, {}).get(level, float("nan")) for entry in rounds]
            left.plot(steps, values, style, color=colour, marker="o", label=f"level {level}" if kind == "merged" else None)
    left.set(xlabel="round", ylabel=f"{mode} accuracy (greedy)", ylim=(-0.02, 1.02),
             title="accuracy per level (merged solid, last dashed)")
    left.set_xticks(steps)
    left.legend(fontsize=8)
    selections = [(entry["round"], entry["selection"]) for entry in rounds[1:]]
    bins = len(selections[0][1]["c_histogram_pool"]) if selections else 10
    centres = [(b + 0.5) / bins for b in range(bins)]
    for i, (t, stats) in enumerate(selections):
        colour = colours[i % len(colours)]
        pool, chosen = stats["c_histogram_pool"], stats["c_histogram_selected"]
        middle.plot(centres, [c / max(1, sum(pool)) for c in pool], ":", color=colour, label=f"round {t} pool")
        middle.plot(centres, [c / max(1, sum(chosen)) for c in chosen], "-", color=colour, marker=".",
                    label=f"round {t} selected")
    middle.set(xlabel="complexity C = 1 - pass rate", ylabel="share of prompts", title="complexity histograms")
    middle.legend(fontsize=8)
    if selections:
        levels = sorted({level for _, stats in selections for level in stats["level_histogram_selected"]}, key=int)
        bottom = [0.0] * len(selections)
        for i, level in enumerate(levels):
            shares = [stats["level_histogram_selected"].get(level, 0) / max(1, stats["selected"])
                      for _, stats in selections]
            right.bar([t for t, _ in selections], shares, bottom=bottom, color=colours[i % len(colours)],
                      label=f"level {level}")
            bottom = [b + s for b, s in zip(bottom, shares)]
        right.set_xticks([t for t, _ in selections])
        right.legend(fontsize=8)
    right.set(xlabel="round", ylabel="share of selected prompts", ylim=(0, 1.02), title="selected levels")
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
    return _save(plt, figure, path)


def ablation_figure(values: Mapping[str, Sequence[float]], seeds: Sequence[int], path: str | Path,
                    ylabel: str, title: str) -> Path:
    """A point per arm and seed (lines join a seed across arms) and each arm's mean."""
    plt = _pyplot()
    arms = list(values)
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(arms), 4))
    for j, seed in enumerate(seeds):
        axis.plot(range(len(arms)), [values[arm][j] for arm in arms], "o-", alpha=0.5, label=f"seed {seed}")
    means = [sum(values[arm]) / len(values[arm]) for arm in arms]
    axis.plot(range(len(arms)), means, "k_", markersize=30, mew=2, label="mean")
    axis.set_xticks(range(len(arms)))
    axis.set_xticklabels(arms, rotation=15)
    axis.set(ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(plt, figure, path)


def dual_pareto_figure(report: Mapping[str, Any], path: str | Path) -> Path:
    """The Pareto picture of a `pangu-core dual` report: one panel per test mix with accuracy against
    mean tokens (slow, fast, auto and the oracle router as points, the random mix as the line from fast
    to slow, the bias sweep as a curve), and a panel of the fast share per level (auto mode, labels)."""
    from pangu_core.dual.metrics import mix_mean

    plt = _pyplot()
    mixes = report["mixes"]
    figure, axes = plt.subplots(1, len(mixes) + 1, figsize=(5.2 * (len(mixes) + 1), 4.2))
    for axis, (name, mix) in zip(axes, mixes.items()):
        fast, slow = mix["fast"], mix["slow"]
        axis.plot([fast["tokens"], slow["tokens"]], [fast["accuracy"], slow["accuracy"]], "--", color="grey",
                  label="random mix")
        sweep = report["sweep"]["points"]
        weights = mix["weights"]
        axis.plot([mix_mean(p["per_level"]["tokens"], weights) for p in sweep],
                  [mix_mean(p["per_level"]["accuracy"], weights) for p in sweep], "-", color="tab:purple", marker=".",
                  label="bias sweep")
        for key, style in (("slow", "s"), ("fast", "^"), ("auto", "o"), ("oracle", "*")):
            axis.plot(mix[key]["tokens"], mix[key]["accuracy"], style, markersize=10, label=key)
        axis.set(xlabel="mean generated tokens", ylabel="accuracy", ylim=(-0.02, 1.02),
                 title=f"{name} mix: S(auto) {mix['auto']['savings']:.2f}, S(oracle) {mix['oracle']['savings']:.2f}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axis = axes[-1]
    share = report["final"]["fast_share"]["auto"]
    levels = sorted(share, key=int)
    labelled = report["phases"]["labels"].get("fast_share_per_level", {})
    positions = range(len(levels))
    axis.bar([i - 0.2 for i in positions], [share[lv] for lv in levels], width=0.4, label="auto: answered fast")
    axis.bar([i + 0.2 for i in positions], [labelled.get(lv, 0.0) for lv in levels], width=0.4,
             label="labels: fast-suited")
    axis.set_xticks(list(positions))
    axis.set_xticklabels(levels)
    axis.set(xlabel="difficulty level", ylabel="share", ylim=(0, 1.02), title="fast share per level")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(plt, figure, path)


def rl_figure(report: Mapping[str, Any], path: str | Path) -> Path:
    """Four panels of a GRPO run: mean reward against learner step and against wall time, greedy test
    accuracy per level (and the mean, black) against step and against wall time."""
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    curves = report["curves"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, x, label in ((axes[0][0], curves["step"], "learner step"), (axes[0][1], curves["time_s"], "wall time (s)")):
        axis.plot(x, curves["reward"], ".", alpha=0.4, label="batch mean")
        window = max(1, len(x) // 10)
        smooth = [sum(curves["reward"][max(0, i - window + 1):i + 1]) / len(curves["reward"][max(0, i - window + 1):i + 1])
                  for i in range(len(x))]
        axis.plot(x, smooth, "-", label=f"mean of {window}")
        axis.set(xlabel=label, ylabel="reward", ylim=(-0.02, 1.02), title=f"reward (eta = {report['eta']})")
        axis.legend(fontsize=8)
    points = report["accuracy"]
    levels = sorted({level for point in points for level in point["by_level"]}, key=int)
    for axis, key, label in ((axes[1][0], "step", "learner step"), (axes[1][1], "time_s", "wall time (s)")):
        x = [point[key] for point in points]
        for i, level in enumerate(levels):
            axis.plot(x, [point["by_level"].get(level, float("nan")) for point in points], "o-",
                      color=colours[i % len(colours)], label=f"level {level}")
        axis.plot(x, [point["mean"] for point in points], "s-", color="black", label="mean")
        axis.set(xlabel=label, ylabel="greedy test accuracy", ylim=(-0.02, 1.02), title="test accuracy (after the run)")
        axis.legend(fontsize=8)
    for row in axes:
        for axis in row:
            axis.grid(alpha=0.3)
    return _save(plt, figure, path)


def pipeline_figure(report: Mapping[str, Any], path: str | Path) -> Path:
    """Two panels of a pipeline run: slow (solid) and fast (dashed) accuracy per level after each stage
    (the final model's auto accuracy as stars), and the final model's accuracy against tokens on the easy-heavy mix (slow, fast, auto, oracle)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stages = list(report["stages"])
    levels = sorted(report["final"]["accuracy"]["slow"], key=int)
    for i, level in enumerate(levels):
        for mode, style in (("slow", "-"), ("fast", "--")):
            values = [report["stages"][s]["accuracy"].get(mode, {}).get(level, float("nan")) for s in stages]
            left.plot(range(len(stages)), values, style, marker="o", color=colours[i % len(colours)],
                      label=f"level {level}" if mode == "slow" else None)
        auto = report["final"]["accuracy"].get("auto", {}).get(level)
        if auto is not None:
            left.plot([len(stages) - 1], [auto], "*", markersize=12, color=colours[i % len(colours)])
    left.set_xticks(range(len(stages)), stages)
    left.set(ylabel="greedy test accuracy", ylim=(-0.02, 1.02),
             title="after each stage (slow solid, fast dashed, auto *)")
    left.legend(fontsize=8)
    mix = report["final"]["pareto"].get("easy_heavy") or next(iter(report["final"]["pareto"].values()))
    for i, (name, point) in enumerate(mix.items()):
        right.plot(point["tokens"], point["accuracy"], "o", markersize=9, color=colours[i % len(colours)], label=name)
    right.plot([mix["fast"]["tokens"], mix["slow"]["tokens"]], [mix["fast"]["accuracy"], mix["slow"]["accuracy"]], ":",
               color="grey", label="random mix of fast and slow")
    right.set(xlabel="mean tokens per answer", ylabel="accuracy", ylim=(-0.02, 1.02),
              title="final model, easy-heavy mix")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return _save(plt, figure, path)
