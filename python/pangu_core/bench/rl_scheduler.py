"""Benchmark `pangu-core bench rl_scheduler`: the GRPO scheduler alone, asynchronous against synchronous.

The rollout side is a simulated remote generator: it sleeps per sampled token (no CPU, like a
generator on another machine) and returns random tokens with zero behaviour log-probs; rewards are
seeded coin flips. The learner side is real: one :func:`pangu_core.rl.learner.grpo_step` of the tiny
nano model per batch. Weights travel through the in-process publisher to the worker's subscriber.

Case (id fixed; --quick runs fewer steps and repetitions):
  async_vs_sync_balanced   generation time = training time per batch (the per-token sleep is
                           calibrated to the measured learner step time t, so g = t); groups/s of
                           eta = 1 (one-step-off) against eta = 0 (synchronous), same scheduler,
                           same learner step, same generator, same threads. Groups/s are measured in
                           steady state: batch size / the median interval between learner steps.
                           Ceiling: the speed model's limit (g + t) / max(g, t) = 2 at g = t, times
                           the sync arm's groups/s (so ceiling_fraction = ratio / 2).

Repetitions of the two arms are interleaved (async, sync, sync, async, ...); medians are reported.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import torch

from pangu_core.bench.common import MIN_REPEATS, make_case, progress, ratio_range, torch_threads

NAME = "rl_scheduler"
DESCRIPTION = "GRPO scheduler: async (eta = 1) vs sync (eta = 0) with a sleeping generator and a real learner step"

BASELINE = "sync (eta = 0): the same scheduler, learner step, generator and threads"
CEILING = "speed model (g + t) / max(g, t) = 2 at g = t, times the sync arm's groups/s"
LIMIT = 2.0
# (groups per batch, group size G, tokens per response, learner steps per run, repetitions per arm)
SIZES = {"quick": (4, 4, 16, 6, 3), "full": (4, 4, 24, 12, MIN_REPEATS)}


class SleepingGenerator:
    """A remote generator stand-in: sleeps ``per_token_s`` per sampled token, returns random tokens."""

    def __init__(self, per_token_s: float, length: int, vocab: int, seed: int) -> None:
        self.per_token_s, self.length, self.vocab = per_token_s, length, vocab
        self.random = torch.Generator().manual_seed(seed)

    def generate(self, prompt_ids, n, temperature, max_new_tokens):
        from pangu_core.rl.rollout import Generation

        rows = len(prompt_ids) * n
        time.sleep(self.per_token_s * rows * self.length)
        tokens = torch.randint(3, self.vocab, (rows, self.length), generator=self.random)
        return Generation([row.tolist() for row in tokens], [torch.zeros(self.length) for _ in range(rows)])


class CoinScorer:
    """Seeded 0/1 rewards, so that groups carry a learning signal."""

    def __init__(self, seed: int) -> None:
        self.random = torch.Generator().manual_seed(seed)

    def __call__(self, prompt, responses):
        return torch.randint(0, 2, (len(responses),), generator=self.random).float().tolist()


def _setup(batch_groups: int, group_size: int, length: int):
    """The nano model, its optimizer, the prompts and a fixed batch for the calibration."""
    from pangu_core.rl.scheduler import Prompt, RolloutGroup
    from pangu_core.tasks.model import tiny_pangu
    from pangu_core.tasks.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = tiny_pangu("nano", tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prompts = [Prompt(i, tuple(tokenizer(f"{i}+{i + 7}=", add_special_tokens=False)["input_ids"]))
               for i in range(64)]
    generator = SleepingGenerator(0.0, length, len(tokenizer), seed=0)
    scorer = CoinScorer(seed=0)
    generation = generator.generate([p.ids for p in prompts[:batch_groups]], group_size, 1.0, length)
    batch = [RolloutGroup(p, generation.responses[i * group_size:(i + 1) * group_size],
                          generation.log_probs[i * group_size:(i + 1) * group_size],
                          scorer(p, [None] * group_size), 0, 0, 0) for i, p in enumerate(prompts[:batch_groups])]
    return tokenizer, model, optimizer, prompts, batch


def run_arm(model, optimizer, prompts, pad_id: int, eta: int, steps: int, batch_groups: int, group_size: int,
            length: int, per_token_s: float, vocab: int, seed: int) -> dict[str, float]:
    """One run of the scheduler with one rollout thread; steady-state groups/s and its step times."""
    from pangu_core.rl.grpo import GRPOConfig
    from pangu_core.rl.learner import grpo_step
    from pangu_core.rl.scheduler import Coordinator, ScheduleConfig, run_threads
    from pangu_core.sync import Publisher, Subscriber, SyncConfig

    config = ScheduleConfig(eta=eta, group_size=group_size, batch_groups=batch_groups,
                            prompts_per_claim=batch_groups, max_new_tokens=length, poll_s=0.05,
                            batch_timeout_s=120.0)
    coordinator = Coordinator(prompts, config)
    loss = GRPOConfig(correction="decoupled")

    def step(batch, k):
        return grpo_step(model, optimizer, batch, loss, pad_id=pad_id)

    sync = SyncConfig(transport="inprocess", name=f"rlb{uuid.uuid4().hex[:10]}", publish_dtype=None)
    target = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    with Publisher(model, sync) as publisher:
        publisher.publish(version=0)
        with Subscriber(target, sync, address=publisher.address) as subscriber:
            report = run_threads(coordinator, publisher, step, steps,
                                 [(SleepingGenerator(per_token_s, length, vocab, seed), CoinScorer(seed), subscriber)])
    ends = [h["end_s"] for h in report["history"]]
    # The median interval between learner steps: a load spike of the shared machine in one step
    # moves it little (the total span would take it in full, in whichever arm it hit).
    interval = statistics.median(b - a for a, b in zip(ends, ends[1:]))
    return {"groups_per_s": batch_groups / interval,
            "step_s": statistics.median(h["step_s"] for h in report["history"]),
            "max_lag_consumed": report["max_lag_consumed"]}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The one case (see the module docstring)."""
    batch_groups, group_size, length, steps, repeats = SIZES["quick" if quick else "full"]
    with torch_threads() as threads:
        tokenizer, model, optimizer, prompts, batch = _setup(batch_groups, group_size, length)
        from pangu_core.rl.grpo import GRPOConfig
        from pangu_core.rl.learner import grpo_step

        progress("async_vs_sync_balanced: calibrating the learner step")
        loss = GRPOConfig(correction="decoupled")
        times = []
        for i in range(MIN_REPEATS + 1):
            start = time.perf_counter()
            grpo_step(model, optimizer, batch, loss, pad_id=tokenizer.pad_token_id)
            if i:
                times.append(time.perf_counter() - start)
        t = statistics.median(times)
        per_token_s = t / (batch_groups * group_size * length)   # so that g = t
        arms: dict[int, list[dict[str, float]]] = {1: [], 0: []}
        for r in range(repeats):
            progress(f"async_vs_sync_balanced: repetition {r + 1}/{repeats}")
            for eta in ((1, 0) if r % 2 == 0 else (0, 1)):
                arms[eta].append(run_arm(model, optimizer, prompts, tokenizer.pad_token_id, eta, steps, batch_groups,
                                         group_size, length, per_token_s, len(tokenizer), seed=r))
    ours = statistics.median(a["groups_per_s"] for a in arms[1])
    theirs = statistics.median(a["groups_per_s"] for a in arms[0])
    t_during = statistics.median(a["step_s"] for arm in arms.values() for a in arm)
    g = per_token_s * batch_groups * group_size * length
    runs = {"async": [a["groups_per_s"] for a in arms[1]], "sync": [a["groups_per_s"] for a in arms[0]]}
    return [make_case(
        "async_vs_sync_balanced", "groups/s", ours, BASELINE, theirs, repeats=repeats, child_process=False,
        ceiling=CEILING, ceiling_value=LIMIT * theirs, threads=threads, steps=steps, batch_groups=batch_groups,
        group_size=group_size, tokens_per_response=length, g_s_per_batch=g, t_s_per_batch_calibrated=t,
        t_s_per_batch_during=t_during, limit_ratio=LIMIT,
        model_limit_measured=(g + t_during) / max(g, t_during),
        # Repetition r ran both arms back to back: its two groups/s figures are a pair.
        ratio_range=ratio_range(runs["async"], runs["sync"], higher_is_better=True),
        groups_per_s_runs=runs,
        step_s_runs={"async": [a["step_s"] for a in arms[1]], "sync": [a["step_s"] for a in arms[0]]},
        max_lag_consumed={"async": max(a["max_lag_consumed"] for a in arms[1]),
                          "sync": max(a["max_lag_consumed"] for a in arms[0])},
    )]
