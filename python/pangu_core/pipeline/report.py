"""The pipeline's one report: ``report.json``, a one-page ``report.md``, ``report.png`` and a summary table.

Every figure is read from what the stages wrote (no model is loaded here): the SFT stage's
``eval.json``, the distillation's last merged round, the RL run's last snapshot evaluation and the
dual run's final evaluation (slow, fast and auto on the same test split), its test mixes and bias
sweep. :func:`targets` checks the pipeline's targets on the final model.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pangu_core.dual.metrics import level_differences
from pangu_core.pipeline.config import STAGES, PipelineConfig
from pangu_core.runs import read_json, write_json

MODES = ("slow", "fast", "auto")


def source_commit() -> str | None:
    """The git commit of the pangu_core checkout the package runs from (an editable install) or, for an
    installed wheel, of the working directory when it is a pangu_core checkout (``make demo`` runs in
    the clone); with "+changes" when tracked files differ from it. None when neither is one."""
    def git(where: Path, *args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    for where in (Path(__file__).parent, Path.cwd()):
        top = git(where, "rev-parse", "--show-toplevel")
        if top and (Path(top) / "python" / "pangu_core" / "_version.py").is_file():
            commit = git(where, "rev-parse", "HEAD")
            if commit:
                return commit + ("+changes" if git(where, "status", "--porcelain", "--untracked-files=no") else "")
    return None


def _table(result: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: result[name] for name in ("accuracy", "tokens", *names) if name in result}


def stage_tables(config: PipelineConfig, out: Path, reports: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage: accuracy and tokens per mode and level of the model it hands on, and its own figures."""
    sft = reports["sft"]
    distill = reports["distill"]
    last_round = distill["rounds"][-1]
    rl = reports["rl"]
    steps = config.rl.steps
    rl_eval = read_json(out / "rl" / "eval" / f"step_{steps}.json")
    dual = reports["dual"]
    return {
        "sft": {**_table(sft), "train": sft.get("train", {})},
        "distill": {**_table(last_round["eval"]["merged"]), "rounds": len(distill["rounds"]) - 1,
                    "slow_per_round": [r["eval"]["merged"]["accuracy"].get("slow", {}) for r in distill["rounds"]],
                    "mechanism": distill["mechanism"]},
        "rl": {**_table(rl_eval), "eta": rl["eta"], "steps": steps, "throughput": rl["throughput"],
               "max_lag_consumed": rl["max_lag_consumed"], "ledger_holds": rl["ledger_holds"], "queue": rl["queue"],
               "reward_first": rl["curves"]["reward"][0] if rl["curves"]["reward"] else None,
               "reward_last": rl["curves"]["reward"][-1] if rl["curves"]["reward"] else None,
               "speed_model": rl["speed_model"]},
        "dual": _table(dual["final"], "fast_share", "mode_follow", "looped", "repairs"),
    }


def _level_min(values: Mapping[str, float]) -> float:
    return min(values.values())


def targets(final: Mapping[str, Any], mixes: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's targets on the final model, each ``{"value", "target", "met"}``."""
    slow, auto = final["accuracy"]["slow"], final["accuracy"]["auto"]
    gap = min(level_differences(auto, slow).values())
    share = final["fast_share"]["auto"].get("1")
    easy = mixes["easy_heavy"]
    ratio = easy["auto"]["tokens"] / easy["slow"]["tokens"] if easy["slow"]["tokens"] > 0 else None

    def target(value, ok, text):
        return {"value": value, "target": text, "met": None if value is None else bool(ok)}

    return {
        "slow_accuracy_min": target(_level_min(slow), _level_min(slow) >= 0.9, ">= 0.9 on every level"),
        "auto_minus_slow_min": target(gap, gap >= -0.02, ">= -0.02 on every level"),
        "fast_share_level_1": target(share, share is not None and share >= 0.9, ">= 0.9"),
        "auto_tokens_over_slow_easy_heavy": target(ratio, ratio is not None and ratio <= 0.8, "<= 0.8"),
    }


def build_report(config: PipelineConfig, out: Path, reports: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``report.json``: config, machine, commit, the stages' tables and timings, the final model's figures."""
    from pangu_core.bench.common import machine_info

    dual = reports["dual"]
    stages = stage_tables(config, out, reports)
    for name in STAGES:
        entry = state["stages"].get(name, {})
        stages[name]["seconds"] = entry.get("seconds")
        stages[name]["resumed"] = entry.get("resumed", False)
    final = _table(dual["final"], "fast_share", "mode_follow", "looped", "repairs")
    pareto = {mix: {name: {k: summary[name][k] for k in ("accuracy", "tokens", "fast_share")}
                    for name in ("slow", "fast", "auto", "oracle")} for mix, summary in dual["mixes"].items()}
    return {
        # commits: the source of every invocation that worked on the run (one, unless it was resumed on another)
        "config": config.to_dict(), "seed": config.seed, "machine": machine_info(), "commits": state.get("commits", []),
        "stages": stages,
        "final": {**final, "mixes": dual["mixes"], "pareto": pareto, "sweep": dual["sweep"], "stress": dual["stress"],
                  "dual_targets": dual["targets"], "model": str(out / "model")},
        "targets": targets(final, dual["mixes"]),
        "seconds": sum(stages[name]["seconds"] or 0.0 for name in STAGES),
    }


# ---------------------------------------------------------------------------------------------------------
# The page


def _cells(values: Mapping[str, float], levels: list[str], digits: int = 2) -> list[str]:
    return [f"{values[lv]:.{digits}f}" if lv in values else "-" for lv in levels]


def _levels(report: Mapping[str, Any]) -> list[str]:
    return sorted(report["final"]["accuracy"]["slow"], key=int)


def summary_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """The summary table: per stage and mode, accuracy per level and mean tokens; the stage's minutes
    on its first row."""
    levels = _levels(report)
    rows = [["stage", "mode", *[f"L{lv}" for lv in levels], "tokens", "minutes"]]
    for name in STAGES:
        stage = report["stages"][name]
        first = True
        for mode in MODES:
            if mode not in stage["accuracy"]:
                continue
            tokens = stage["tokens"][mode]
            mean_tokens = sum(tokens.values()) / len(tokens)
            seconds = stage["seconds"]
            rows.append([name, mode, *_cells(stage["accuracy"][mode], levels), f"{mean_tokens:.1f}",
                         f"{seconds / 60:.1f}" if seconds is not None and first else ""])
            first = False
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    """``rows`` as aligned plain text."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def _added(report: Mapping[str, Any]) -> list[str]:
    """One sentence per stage: what it changed in slow accuracy (mean over levels); stages evaluated
    without slow mode are left out."""
    lines, previous = [], None
    for name in STAGES:
        slow = report["stages"][name]["accuracy"].get("slow")
        if not slow:
            continue
        mean = sum(slow.values()) / len(slow)
        if previous is None:
            lines.append(f"- **{name}**: slow accuracy {mean:.3f} (mean over levels).")
        else:
            lines.append(f"- **{name}**: slow accuracy {previous:.3f} -> {mean:.3f} ({mean - previous:+.3f}).")
        previous = mean
    final = report["final"]
    easy = final["mixes"]["easy_heavy"]
    lines.append(f"- **auto mode**: answers {easy['auto']['fast_share']:.0%} of the easy-heavy mix fast, at "
                 f"{easy['auto']['tokens']:.1f} tokens against slow mode's {easy['slow']['tokens']:.1f} (accuracy "
                 f"{easy['auto']['accuracy']:.3f} against {easy['slow']['accuracy']:.3f}).")
    rl = report["stages"]["rl"]
    rewards = "" if rl["reward_first"] is None else \
        f", batch reward {rl['reward_first']:.3f} at the first step and {rl['reward_last']:.3f} at the last"
    lines.append(f"- RL ran {rl['steps']} steps at eta {rl['eta']}: {rl['throughput']['groups_per_s']:.2f} groups/s, "
                 f"largest lag consumed {rl['max_lag_consumed']}{rewards}.")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the page a person reads in a minute."""
    levels = _levels(report)
    final = report["final"]
    target_rows = [["target", "value", "goal", "met"]] + [
        [name, "-" if t["value"] is None else f"{t['value']:.3f}", t["target"], {True: "yes", False: "no", None: "-"}[t["met"]]]
        for name, t in report["targets"].items()]
    final_rows = [["mode", *[f"L{lv}" for lv in levels]]]
    for mode in MODES:
        final_rows.append([f"{mode} accuracy", *_cells(final["accuracy"][mode], levels)])
        final_rows.append([f"{mode} tokens", *_cells(final["tokens"][mode], levels, 1)])
    final_rows.append(["auto fast share", *_cells(final["fast_share"]["auto"], levels)])
    machine = report["machine"]
    return "\n".join([
        f"# Pipeline report (seed {report['seed']})",
        "",
        f"{report['seconds'] / 60:.1f} minutes of stage time; commit "
        f"{', '.join(f'`{c}`' for c in report['commits'] if c) or 'unknown'}; "
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores. The final model is `{final['model']}`.",
        "",
        "## What each stage added",
        "",
        *_added(report),
        "",
        "## Accuracy per stage (greedy, test split)",
        "",
        _markdown_table(summary_rows(report)),
        "",
        "![accuracy per stage](report.png)",
        "",
        "## The final model",
        "",
        _markdown_table(final_rows),
        "",
        _markdown_table(target_rows),
        "",
        "![Pareto picture](dual/pareto.png)",
        "",
        "More: the distillation rounds (`distill/report.png`), the RL curves (`rl/report.png`), each stage's "
        "`report.json`, and `log.txt`.",
        "",
    ])


def write_outputs(report: Mapping[str, Any], out: Path) -> None:
    """Writes ``report.json``, ``report.md`` and ``report.png`` into ``out``."""
    from pangu_core.plots import pipeline_figure

    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    pipeline_figure(report, out / "report.png")
