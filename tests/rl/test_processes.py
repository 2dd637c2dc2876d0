"""Rollout workers as processes: invariants across processes, a killed worker, a worker that raises."""

from __future__ import annotations

import functools
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import torch

from pangu_core.rl.processes import run_processes
from pangu_core.rl.rollout import Generation
from pangu_core.rl.scheduler import Coordinator, Prompt, ScheduleConfig
from pangu_core.sync import Publisher, SyncConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TaggedGenerator:
    """Fake generator: each response starts with the version number its weights carry.

    With ``die_after`` the process kills itself (SIGKILL) at that generate call, holding a claim.
    """

    def __init__(self, target: dict, delay_s: float, die_after: int | None = None) -> None:
        self.target, self.delay_s, self.die_after, self.calls = target, delay_s, die_after, 0

    def generate(self, prompt_ids, n, temperature, max_new_tokens):
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay_s)
        version = int(self.target["version"][0])
        responses = [[version, 7, 7][: 1 + j % 3] for _ in prompt_ids for j in range(n)]
        return Generation(responses, [torch.zeros(len(r)) for r in responses])


def score(prompt, responses):
    return [float(prompt.index % 2 == 0 and j % 2 == 0) for j in range(len(responses))]


def broken_score(prompt, responses):
    raise ArithmeticError("reward model exploded")


def make_worker(index: int, die: int | None = None, scorer=score):
    """Builds one worker's (generator, scorer, weights target) inside its process."""
    target = {"version": torch.zeros(1)}
    return TaggedGenerator(target, 0.002 * (index + 1), die_after=3 if index == die else None), scorer, target


def run(workers: int, steps: int, eta: int, factory=make_worker, start_method: str = "fork"):
    prefix = f"p{uuid.uuid4().hex[:10]}"
    sync = SyncConfig(transport="shm", name="w", prefix=prefix, publish_dtype=None, timeout_s=10.0)
    config = ScheduleConfig(eta=eta, group_size=3, batch_groups=4, prompts_per_claim=2, max_new_tokens=3,
                            poll_s=0.05, batch_timeout_s=30.0)
    coordinator = Coordinator([Prompt(i, (i + 1,)) for i in range(10)], config)
    weights = {"version": torch.zeros(1)}
    consumed = []

    def step(batch, k):
        consumed.extend(batch)
        weights["version"].fill_(k + 1)
        return {}

    with Publisher(weights, sync) as publisher:
        publisher.publish(version=0)
        report = run_processes(coordinator, publisher, step, steps, factory, workers, sync,
                               start_method=start_method)
    leftovers = [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]
    return report, consumed, leftovers


def check_invariants(report, consumed, steps, eta):
    assert len(consumed) == steps * 4 and report["max_lag_consumed"] <= eta
    assert all(group.responses[0][0] == group.version for group in consumed)   # the weights of that version
    queue = report["queue"]
    assert queue["put"] == queue["got"] + queue["evicted"] + queue["dropped"] + queue["size"]
    assert queue["submitted"] == queue["put"] + queue["rejected"]


# Two worker processes over shared memory, sync and async: every consumed group has lag <= eta and
# was made with the weights of its version; the counters balance; no segment is left in /dev/shm.
@pytest.mark.parametrize("eta", [0, 1])
def test_processes_keep_the_invariants(eta):
    report, consumed, leftovers = run(workers=2, steps=8, eta=eta)
    check_invariants(report, consumed, 8, eta)
    assert report["dead_workers"] == [] and leftovers == []
    assert [w["outcome"] for w in report["workers"]] == ["done", "done"]
    assert sum(w["groups"] for w in report["workers"]) >= 8 * 4


# A worker killed mid-run (holding a claim) is reported by name; its claim's prompts are served
# again and the learner finishes with the other worker; nothing is left in /dev/shm.
def test_killed_worker_is_reported_and_the_run_goes_on():
    report, consumed, leftovers = run(workers=2, steps=8, eta=1,
                                      factory=functools.partial(make_worker, die=0))
    assert report["dead_workers"] == ["rollout-0"]
    assert report["workers"][0]["outcome"] == "died" and report["workers"][1]["outcome"] == "done"
    check_invariants(report, consumed, 8, 1)
    assert leftovers == []


# When every worker dies the run stops with an error naming them and their exit codes.
def test_every_worker_dead_stops_the_run():
    with pytest.raises(RuntimeError, match=r"every rollout worker died: rollout-0 \(exit code -9\)"):
        run(workers=1, steps=8, eta=1, factory=functools.partial(make_worker, die=0))


# A worker that raises stops the run; the error names the worker and carries its traceback.
def test_worker_exception_names_the_worker():
    with pytest.raises(RuntimeError, match=r"(?s)rollout-0 failed:.*ArithmeticError: reward model exploded"):
        run(workers=1, steps=4, eta=0, factory=functools.partial(make_worker, scorer=broken_score))


# The default start method (spawn) works with a factory importable by name.
def test_spawned_workers():
    report, consumed, leftovers = run(workers=1, steps=3, eta=1, start_method="spawn")
    check_invariants(report, consumed, 3, 1)
    assert leftovers == []
