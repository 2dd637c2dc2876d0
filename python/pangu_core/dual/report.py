"""The measurement section of a `pangu-core dual` report, built from evaluation results (no model here).

:func:`mode_table` gives per level and mode the accuracy, tokens, fast share, mode-follow rate, loop
share and repairs; :func:`mix_summary` the savings of auto against slow on a test mix, the oracle
router's savings and the random-mix line; :func:`sweep_summary` the bias sweep's frontier;
:func:`stress_summary` self-repair on the stress set; :func:`targets` checks the dual stage's targets.
The maths is :mod:`pangu_core.dual.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pangu_core.dual import metrics

# The per-level figures of an evaluation result that the report keeps.
TABLE_FIELDS = ("accuracy", "tokens", "count", "fast_share", "mode_follow", "looped", "repairs")
# Below this loop share without repair the stress set hardly tests repair; the report says so.
FEW_LOOPS = 0.01


def mode_table(result: Mapping[str, Any]) -> dict[str, Any]:
    """The per-level figures of an :func:`~pangu_core.evaluation.evaluate_model` result (no records)."""
    return {name: result[name] for name in TABLE_FIELDS if name in result}


def _records(result: Mapping[str, Any], mode: str) -> list[dict[str, Any]]:
    records = result.get("records", {}).get(mode)
    if records is None:
        raise KeyError(f"result: expected per-task records of mode {mode!r} (evaluate_model(..., records=True))")
    return records


def mix_summary(result: Mapping[str, Any], mix: str) -> dict[str, Any]:
    """Slow, fast, auto, the oracle router and the random-mix line on test mix ``mix``.

    ``result`` must hold slow, fast and auto with per-task records over the same tasks.
    """
    slow, fast, auto = (_records(result, mode) for mode in ("slow", "fast", "auto"))
    levels = [r["level"] for r in slow]
    if [r["level"] for r in fast] != levels or [r["level"] for r in auto] != levels:
        raise ValueError("result: the slow, fast and auto records must cover the same tasks in the same order")
    weights = metrics.mix_weights(mix, sorted({str(lv) for lv in levels}, key=int))

    def mixed(values) -> float:
        return metrics.mix_mean(metrics.per_level_means(levels, values), weights)

    def point(records) -> dict[str, float]:
        return {"accuracy": mixed([r["correct"] for r in records]), "tokens": mixed([r["tokens"] for r in records]),
                "fast_share": mixed([r["fast"] for r in records])}

    points = {"slow": point(slow), "fast": point(fast), "auto": point(auto)}
    correct, tokens, routed = metrics.oracle_router([r["correct"] for r in fast], [r["correct"] for r in slow],
                                                    [r["tokens"] for r in fast], [r["tokens"] for r in slow])
    points["oracle"] = {"accuracy": mixed(correct), "tokens": mixed(tokens), "fast_share": mixed(routed)}
    slow_tokens = points["slow"]["tokens"]
    for name in ("auto", "oracle"):
        points[name]["savings"] = metrics.savings(points[name]["tokens"], slow_tokens)
    ends = {mode: (points[mode]["accuracy"], points[mode]["tokens"]) for mode in ("fast", "slow")}
    at_share = metrics.random_mix(points["auto"]["fast_share"], ends["fast"], ends["slow"])
    share, accuracy = metrics.random_mix_at_tokens(points["auto"]["tokens"], ends["fast"], ends["slow"])
    _, oracle_line = metrics.random_mix_at_tokens(points["oracle"]["tokens"], ends["fast"], ends["slow"])
    oracle_savings = points["oracle"]["savings"]
    return {
        "weights": weights,
        **points,
        "random_at_auto_share": {"fast_share": points["auto"]["fast_share"], "accuracy": at_share[0],
                                 "tokens": at_share[1]},
        "random_at_auto_tokens": {"fast_share": share, "accuracy": accuracy, "tokens": points["auto"]["tokens"]},
        "auto_over_random": points["auto"]["accuracy"] - accuracy,
        # The oracle router's own margin over the random line at its tokens: what routing can gain here.
        "oracle_over_random": points["oracle"]["accuracy"] - oracle_line,
        "savings_vs_oracle": points["auto"]["savings"] / oracle_savings if oracle_savings > 0 else None,
    }


def sweep_summary(points: Sequence[Mapping[str, Any]], mix: str = "uniform") -> dict[str, Any]:
    """The bias sweep: per bias the (accuracy, tokens, fast share) of auto mode on ``mix``, and whether
    they form a monotone accuracy / tokens frontier. ``points`` are ``{"bias", "result"}`` with auto
    per-level figures in each result."""
    rows = []
    for point in sorted(points, key=lambda p: p["bias"]):
        result = point["result"]
        weights = metrics.mix_weights(mix, list(result["accuracy"]["auto"]))
        rows.append({"bias": point["bias"],
                     **{name: metrics.mix_mean(result[name]["auto"], weights)
                        for name in ("accuracy", "tokens", "fast_share")},
                     "per_level": {name: result[name]["auto"] for name in ("accuracy", "tokens", "fast_share")}})
    violation = metrics.frontier_violation([r["tokens"] for r in rows], [r["accuracy"] for r in rows])
    return {"mix": mix, "points": rows, "frontier_violation": violation, "monotone": violation == 0.0}


def _run_figures(result: Mapping[str, Any], mode: str) -> dict[str, Any]:
    records = _records(result, mode)
    return {"loop_rate": float(np.mean([r["looped"] for r in records])),
            "repairs": float(np.mean([r["repairs"] for r in records])),
            "accuracy": float(np.mean([r["correct"] for r in records])),
            "tokens": float(np.mean([r["tokens"] for r in records])), "count": len(records)}


def stress_summary(runs: Mapping[str, Mapping[str, Mapping[str, Any]]], mode: str) -> dict[str, Any]:
    """Self-repair on the stress set. ``runs[decoding][arm]``: an evaluation result with records, arm
    "plain" (loops only counted) or "repair"; the loop rate is the share of answers with a loop left in.

    Per decoding: both arms' figures; the loop rate's relative drop; the accuracy change on prompts
    that did not loop without repair; the token overhead tokens(repair) / tokens(plain) - 1.
    """
    out: dict[str, Any] = {"mode": mode, "decodings": {}}
    plain_total = looped_total = 0
    for decoding, arms in runs.items():
        plain, fixed = _records(arms["plain"], mode), _records(arms["repair"], mode)
        figures = {arm: _run_figures(arms[arm], mode) for arm in ("plain", "repair")}
        clean = [i for i, r in enumerate(plain) if not r["looped"] and not r["repairs"]]
        before = figures["plain"]["loop_rate"]
        entry = {
            **figures,
            "loop_rate_drop": (before - figures["repair"]["loop_rate"]) / before if before > 0 else None,
            "accuracy_change_not_looping": (float(np.mean([fixed[i]["correct"] for i in clean])
                                                  - np.mean([plain[i]["correct"] for i in clean])) if clean else None),
            "token_overhead": figures["repair"]["tokens"] / figures["plain"]["tokens"] - 1.0,
        }
        out["decodings"][decoding] = entry
        plain_total += len(plain)
        looped_total += sum(r["looped"] for r in plain)
    rate = looped_total / plain_total if plain_total else 0.0
    out["plain_loop_rate"] = rate
    out["few_loops"] = rate < FEW_LOOPS
    if out["few_loops"]:
        out["note"] = (f"without repair the model loops on {rate:.2%} of the stress set ({looped_total} of "
                       f"{plain_total} answers), under {FEW_LOOPS:.0%}: the repair figures rest on few loops")
    return out


def _target(value, met, target: str) -> dict[str, Any]:
    return {"value": value, "target": target, "met": None if value is None else bool(met)}


def targets(start: Mapping[str, Any], final: Mapping[str, Any], mixes: Mapping[str, Any],
            sweep: Mapping[str, Any], stress: Mapping[str, Any]) -> dict[str, Any]:
    """The dual stage's targets, each as ``{"value", "target", "met"}`` (met None where not measurable)."""
    follow = min(v for mode in ("slow", "fast") for v in final["mode_follow"][mode].values())
    slow_levels = final["accuracy"]["slow"]
    drop = max(metrics.level_differences(start["accuracy"]["slow"], slow_levels).values())
    auto_gap = min(metrics.level_differences(final["accuracy"]["auto"], slow_levels).values())
    share = final["fast_share"]["auto"]
    hard = [share[lv] for lv in ("3", "4", "5") if lv in share]
    out = {
        "mode_follow_min": _target(follow, follow >= 0.99, ">= 0.99 for the explicit tags"),
        "slow_accuracy_drop_max": _target(drop, drop <= 0.02, "<= 0.02 below the start checkpoint, per level"),
        "auto_minus_slow_min": _target(auto_gap, auto_gap >= -0.02, ">= -0.02 on every level"),
        "fast_share_level_1": _target(share.get("1"), share.get("1", 0) >= 0.9, ">= 0.9"),
        "fast_share_levels_3_5_max": _target(max(hard) if hard else None, hard and max(hard) <= 0.05, "<= 0.05"),
        "bias_sweep_monotone": _target(sweep["frontier_violation"], sweep["monotone"],
                                       "a monotone frontier (largest accuracy drop at more tokens: 0)"),
    }
    for mix, summary in mixes.items():
        ratio = summary["savings_vs_oracle"]
        out[f"savings_vs_oracle_{mix}"] = _target(ratio, ratio is not None and ratio >= 0.8, ">= 0.8 x the oracle's S")
        margin = summary["auto_over_random"]
        out[f"auto_over_random_{mix}"] = {
            **_target(margin, margin >= 0.05, ">= 0.05 accuracy above the random mix at equal tokens"),
            "oracle": summary["oracle_over_random"]}
    for decoding, entry in stress["decodings"].items():
        drop_rate = entry["loop_rate_drop"]
        out[f"stress_{decoding}_loop_rate_drop"] = _target(drop_rate, drop_rate is not None and drop_rate >= 0.5,
                                                           ">= 0.5 relative")
        change = entry["accuracy_change_not_looping"]
        out[f"stress_{decoding}_accuracy_change_not_looping"] = _target(
            change, change is not None and abs(change) <= 0.01, "within 0.01")
        out[f"stress_{decoding}_token_overhead"] = _target(entry["token_overhead"], entry["token_overhead"] <= 0.10,
                                                           "<= 0.10")
    return out


def build_report(record: Mapping[str, Any], phases: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """``report.json`` of a dual run: the phases' summaries, the per-level tables of the start and final
    models, the test mixes, the bias sweep, the stress set and the targets."""
    from pangu_core.bench.common import machine_info
    from pangu_core.dual.metrics import MIXES

    evaluation = phases["eval"]
    final = evaluation["final"]
    start = phases["start"]["eval"]
    mixes = {mix: mix_summary(final, mix) for mix in MIXES}
    sweep = sweep_summary(evaluation["sweep"])
    stress = stress_summary(evaluation["stress"], record["config"]["stress"]["mode"])
    return {
        "config": record["config"], "init": record["init"], "machine": machine_info(),
        "phases": {"start": {"checkpoint": phases["start"]["checkpoint"], "seconds": phases["start"]["seconds"]},
                   "phase1": phases["phase1"], "labels": phases["labels"], "phase2": phases["phase2"],
                   "eval": {"seconds": evaluation["seconds"]}},
        "start": mode_table(start),
        "final": mode_table(final),
        "mixes": mixes,
        "sweep": sweep,
        "stress": stress,
        "targets": targets(start, final, mixes, sweep, stress),
        "seconds": seconds,
    }
