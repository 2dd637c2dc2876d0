"""``report.json`` of a GRPO run: throughput, idle shares, lags, queue ledger, level mixes, curves, speed model.

The speed model (METHOD.md, Stage 1b): with g the time to generate one batch (all rollout workers
together) and t the time of one learner step, a synchronous run costs about g + t per batch when
each process keeps its threads, or g / a_g + t / a_t when a sync run could give both threads to
each phase in turn (a_g, a_t: the 2-thread speed-ups, ``speedup_generate`` / ``speedup_train``); an
asynchronous run costs about max(g, t). The report prints the measured g and t, the predicted
time per batch of the run's own mode, the ratio limits async / sync, and which one applies.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from pangu_core.rl.config import RLConfig


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def speed_model(g: float, t: float, eta: int, measured: float, speedup_generate: float,
                speedup_train: float) -> dict[str, Any]:
    """The speed model's figures for measured ``g``, ``t`` (seconds per batch) and the run's ``measured``
    seconds per batch."""
    sync_same = g + t
    sync_two = g / speedup_generate + t / speedup_train
    async_ = max(g, t)
    predicted = async_ if eta >= 1 else sync_same
    return {
        "g_s_per_batch": g, "t_s_per_batch": t,
        "predicted_sync_s_per_batch": sync_same, "predicted_sync_two_thread_s_per_batch": sync_two,
        "predicted_async_s_per_batch": async_,
        "limit_same_threads": sync_same / async_ if async_ > 0 else float("nan"),
        "limit_two_thread_sync": sync_two / async_ if async_ > 0 else float("nan"),
        "applies": "async: max(g, t)" if eta >= 1 else "sync: g + t",
        "limit_applies": ("limit_same_threads: each process keeps its threads in both arms, so the "
                          "async / sync ratio is at most (g + t) / max(g, t)"),
        "measured_s_per_batch": measured,
        "fraction_of_model": predicted / measured if measured > 0 else float("nan"),
    }


def build_report(config: RLConfig, init: str, records: list[dict[str, Any]], segments: list[dict[str, Any]],
                 accuracy: list[dict[str, Any]]) -> dict[str, Any]:
    """The report from the steps' records, the segments' summaries and the snapshots' evaluations."""
    from pangu_core.bench.common import machine_info

    schedule = config.schedule
    last = segments[-1] if segments else {}
    queue: Counter[str] = Counter()
    lags: Counter[str] = Counter()
    generated: Counter[str] = Counter()
    consumed: Counter[str] = Counter()
    for segment in segments:
        queue.update(segment["queue"])
        lags.update(segment["lag_histogram"])
        generated.update(segment["levels_generated"])
        consumed.update(segment["levels_consumed"])
    # Throughput in steady state: from the end of the first step of the last segment to its last
    # step (worker start-up and model loading are left out).
    seg_records = [r for r in records if last and last["steps"][0] < r["step"] <= last["steps"][1]]
    if len(seg_records) >= 2:
        span = seg_records[-1]["time_s"] - seg_records[0]["time_s"] - sum(r.get("save_s", 0.0) for r in seg_records[:-1])
        batches = len(seg_records) - 1
        tokens = sum(r["tokens"] for r in seg_records[1:])
    else:
        span, batches, tokens = float("nan"), 0, 0
    groups_per_s = batches * schedule.batch_groups / span if batches and span > 0 else float("nan")
    tokens_per_s = tokens / span if batches and span > 0 else float("nan")
    wait = sum(r["wait_s"] for r in seg_records)
    busy = sum(r["step_s"] for r in seg_records)
    workers = [w for w in last.get("workers", []) if w.get("outcome") == "done"]
    worker_busy = sum(w.get("busy_s", 0.0) for w in workers)
    wall = last.get("wall_s", float("nan"))
    rollout_idle = 1.0 - worker_busy / (len(workers) * wall) if workers and wall > 0 else float("nan")
    # g: one step's groups (a chunk) by all workers together, t: one learner step; medians, so that the
    # first, cold calls do not count.
    per_group = [seconds / prompts for w in workers for prompts, seconds in w.get("claims", []) if prompts]
    g = _median(per_group) * schedule.chunk_groups / max(1, len(workers)) if per_group else float("nan")
    t = _median([r["step_s"] for r in seg_records])
    measured = span / batches if batches else float("nan")
    queue_fields = ("put", "got", "evicted", "dropped", "size", "rejected", "submitted")
    ledger = {k: int(queue.get(k, 0)) for k in queue_fields}
    return {
        "config": config.to_dict(), "init": init, "machine": machine_info(), "eval_mode": config.mode,
        "eta": schedule.eta, "fifo": schedule.fifo, "seed": config.seed, "steps": config.steps,
        "threads": {"total": config.num_threads, "learner": config.learner_threads,
                    "rollout_workers": config.rollout_workers, "per_rollout_worker": config.rollout_threads},
        "throughput": {"groups_per_s": groups_per_s, "tokens_per_s": tokens_per_s,
                       "measured_over_steps": batches, "seconds": span},
        "idle": {"learner": wait / (wait + busy) if wait + busy > 0 else float("nan"), "rollout": rollout_idle},
        "lag_histogram": dict(sorted(lags.items(), key=lambda kv: int(kv[0]))),
        "max_lag_consumed": max((int(k) for k in lags), default=0),
        "queue": ledger,
        "ledger_holds": ledger["put"] == ledger["got"] + ledger["evicted"] + ledger["dropped"] + ledger["size"],
        "levels_generated": dict(sorted(generated.items())),
        "levels_consumed": dict(sorted(consumed.items())),
        "zero_spread_share": _mean([r["zero_spread_share"] for r in records]),
        "curves": {"step": [r["step"] for r in records], "time_s": [r["time_s"] for r in records],
                   "reward": [r["reward_mean"] for r in records], "loss": [r["loss"] for r in records]},
        "accuracy": [{"step": a["step"], "time_s": a["time_s"], "by_level": a["accuracy"].get(config.mode, {}),
                      "mean": _mean(list(a["accuracy"].get(config.mode, {}).values()))} for a in accuracy],
        "speed_model": speed_model(g, t, schedule.eta, measured, config.speedup_generate, config.speedup_train),
        "segments": len(segments),
        "backend": config.backend,
        "dead_workers": sorted({name for s in segments for name in s.get("dead_workers", [])}),
        # Groups claimed by a rollout worker that died before submitting them (their prompts were
        # served again); they never entered the queue, so the ledger above holds without them.
        "lost_groups": sum(int(s.get("lost_groups", 0)) for s in segments),
        # Over-generated groups (schedule.rollout_groups) the learner left unused; and the mean reward
        # of every answer generated, by the policy version that sampled it (what the policy scores,
        # where the reward curve above is that of the batches the queue chose).
        "skipped_groups": sum(int(s.get("skipped", 0)) for s in segments),
        "generated_reward": {k: v for s in segments for k, v in s.get("generated_reward", {}).items()},
        # What the ray / torchrun backends measured in the last segment (relay bytes, publish waits).
        "distributed": last.get("extra", {}),
        "wall_s": records[-1]["time_s"] if records else 0.0,
    }
