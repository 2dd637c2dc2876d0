"""The latency-tolerant scheduler: rollout workers, the prioritised queue between them, and the learner.

One staleness rule covers sync and async (METHOD.md, Stage 1b). Work is handed out in chunks of one
learner batch (``batch_groups`` prompts). Rollout chunk c may start only with weights of version
>= c - eta (``Subscriber.pull(min_version=c - eta)``); the queue's ``max_staleness = eta`` holds the
same bound when the learner consumes, so every consumed group has lag (learner version - the
group's version) <= eta. eta = 0 is synchronous, eta = 1 one-step-off.

    worker:   claim prompts of chunk c -> pull(min_version=c - eta) -> generate G answers per prompt
              -> score -> put each group with its priority and its weights' version
    learner:  get the batch_groups best groups -> step -> advance the queue -> publish version k + 1

Groups the queue hands back (stale at put or at ``advance_version``, or pushed out when full) are not
lost work to be forgotten: their prompts go to the front of the prompt stream, and their places in
the chunk count are given back, so a replacement can start at once with current weights (otherwise a
synchronous run that lost one group would wait for a version that needs that very group). The FIFO
arm (``fifo=True``) puts every group at priority 0 with no age boost: oldest first.

Workers talk to a :class:`Coordinator` through two calls, ``claim`` and ``submit``, and to the
learner's weights through a :class:`pangu_core.sync.Subscriber`; :func:`run_threads` runs workers
as threads of one process, :func:`pangu_core.rl.processes.run_processes` as processes. Invariants the tests check: max lag consumed <= eta, and
put = got + evicted + dropped + size on the queue's counters (every overflow policy).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from pangu_core import PeerLost
from pangu_core.config import Config, expect
from pangu_core.queue import PriorityQueue, QueueClosed
from pangu_core.rl.grpo import grpo_advantages
from pangu_core.rl.priority import PriorityWeights, group_priorities
from pangu_core.rl.rollout import Generator

__all__ = ["ScheduleConfig", "Prompt", "Claim", "RolloutGroup", "PromptStream", "Coordinator", "rollout_worker",
           "run_learner", "run_threads"]


@dataclass(frozen=True)
class ScheduleConfig(Config):
    """How rollouts and learner steps are scheduled (checked on construction)."""

    # Staleness bound eta (policy versions): 0 synchronous, >= 1 asynchronous.
    eta: int = 1
    # Responses per prompt (the GRPO group size G, >= 2).
    group_size: int = 8
    # Groups per learner step (one chunk of work, >= 1).
    batch_groups: int = 8
    # Most prompts a worker claims at once (<= batch_groups; a claim never spans two chunks).
    prompts_per_claim: int = 8
    # Groups generated per learner step (None: batch_groups). More gives the queue a choice: the
    # learner takes the batch_groups best, the rest wait and leave unused once older than eta
    # (counted as skipped; their prompts are not served again).
    rollout_groups: int | None = None
    # Sampling temperature (> 0) and generation limit (tokens).
    temperature: float = 1.0
    max_new_tokens: int = 256
    # FIFO arm for comparison: equal priorities and no age boost.
    fifo: bool = False
    # Priority gained per version of age in the queue (ignored by the FIFO arm).
    age_boost: float = 0.05
    # Most groups queued at once (None: unbounded).
    capacity: int | None = None
    # What a put into a full queue does: "block" (the worker waits: admission control) or
    # "drop_lowest" (the lowest group leaves, or the new one when it is the lowest).
    overflow: Literal["block", "drop_lowest"] = "block"
    # Weights of the group priority (pangu_core.rl.priority).
    priority: PriorityWeights = field(default_factory=PriorityWeights)
    # Seconds one wait (a pull, a batch) lasts before the waiter checks whether the run stopped.
    poll_s: float = 0.2
    # Seconds the learner waits for a batch before it gives up with TimeoutError.
    batch_timeout_s: float = 600.0

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.eta >= 0, "eta", "an int >= 0", self.eta)
        expect(problems, self.group_size >= 2, "group_size", "an int >= 2", self.group_size)
        expect(problems, self.batch_groups >= 1, "batch_groups", "an int >= 1", self.batch_groups)
        expect(problems, 1 <= self.prompts_per_claim <= self.batch_groups, "prompts_per_claim",
               f"an int in [1, batch_groups={self.batch_groups}]", self.prompts_per_claim)
        expect(problems, self.rollout_groups is None or self.rollout_groups >= self.batch_groups,
               "rollout_groups", f"None or an int >= batch_groups={self.batch_groups}", self.rollout_groups)
        expect(problems, math.isfinite(self.temperature) and self.temperature > 0, "temperature",
               "a finite number > 0", self.temperature)
        expect(problems, self.max_new_tokens >= 1, "max_new_tokens", "an int >= 1", self.max_new_tokens)
        expect(problems, math.isfinite(self.age_boost) and self.age_boost >= 0, "age_boost", "a finite number >= 0",
               self.age_boost)
        expect(problems, self.capacity is None or self.capacity >= self.batch_groups, "capacity",
               f"None or an int >= batch_groups={self.batch_groups}", self.capacity)
        for name in ("poll_s", "batch_timeout_s"):
            value = getattr(self, name)
            expect(problems, math.isfinite(value) and value > 0, name, "a finite number > 0", value)
        return problems

    @property
    def chunk_groups(self) -> int:
        """Groups generated per learner step (one chunk): rollout_groups, else batch_groups."""
        return self.batch_groups if self.rollout_groups is None else self.rollout_groups


@dataclass(frozen=True)
class Prompt:
    """One prompt of the stream: its position in the prompt list, token ids and what the scorer needs."""

    index: int
    ids: tuple[int, ...]
    reference: Any = None


@dataclass(frozen=True)
class Claim:
    """Prompts handed to a worker: all of chunk ``chunk``, so they need weights >= ``min_version``."""

    chunk: int
    min_version: int
    prompts: tuple[Prompt, ...]


@dataclass
class RolloutGroup:
    """G responses to one prompt, sampled with weights ``version``, with rewards and behaviour log-probs."""

    prompt: Prompt
    responses: list[list[int]]
    log_probs: list[torch.Tensor]
    rewards: list[float]
    version: int
    chunk: int
    worker: int


class PromptStream:
    """Thread-safe prompt source: cycles through ``prompts`` in order; handed-back prompts come first.

    ``position`` (from :meth:`state`) resumes a stream: ``{"next": n, "front": [prompt indices]}``.
    """

    def __init__(self, prompts: Sequence[Prompt], position: dict[str, Any] | None = None) -> None:
        if not prompts or not all(isinstance(p, Prompt) for p in prompts):
            raise ValueError("prompts: expected a non-empty sequence of Prompt")
        self._prompts, self._next, self._front = list(prompts), 0, deque()
        self._lock = threading.Lock()
        self.served = 0
        if position is not None:
            by_index = {p.index: p for p in self._prompts}
            try:
                self._next = int(position["next"])
                self._front.extend(by_index[int(i)] for i in position["front"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"position: expected {{'next': int, 'front': [prompt indices]}} of these "
                                 f"prompts, got {position!r}") from error

    def state(self, pending: Sequence[Prompt] = ()) -> dict[str, Any]:
        """Where the stream stands: the next position and the front (``pending`` prompts first)."""
        with self._lock:
            return {"next": self._next, "front": [p.index for p in pending] + [p.index for p in self._front]}

    def take(self, n: int) -> list[Prompt]:
        """The next ``n`` prompts (handed-back ones first, oldest hand-back first)."""
        with self._lock:
            out = []
            while len(out) < n:
                if self._front:
                    out.append(self._front.popleft())
                else:
                    out.append(self._prompts[self._next % len(self._prompts)])
                    self._next += 1
            self.served += n
            return out

    def push_front(self, prompts: Sequence[Prompt]) -> None:
        """Puts prompts back at the front of the stream (their groups were handed back)."""
        with self._lock:
            self._front.extend(prompts)


class Coordinator:
    """The learner side's state that workers share: the prompt stream, chunk accounting and the queue.

    ``claim`` and ``submit`` are the only calls a worker makes; the learner calls ``take_batch`` and
    ``advance``. Thread-safe.
    """

    def __init__(self, prompts: Sequence[Prompt], config: ScheduleConfig, *, start_version: int = 0,
                 position: dict[str, Any] | None = None) -> None:
        if not isinstance(config, ScheduleConfig):
            raise TypeError(f"config: expected ScheduleConfig, got {type(config).__name__}")
        if isinstance(start_version, bool) or not isinstance(start_version, int) or start_version < 0:
            raise ValueError(f"start_version: expected an int >= 0, got {start_version!r}")
        self.config = config
        self.stream = PromptStream(prompts, position)
        # A resumed run starts at the learner's version: chunk numbers and the queue's version go on
        # from there, so the staleness rule holds across the restart.
        self.queue = PriorityQueue(config.capacity, config.overflow, max_staleness=config.eta,
                                   age_boost=0.0 if config.fifo else config.age_boost, version=start_version)
        self._lock = threading.Lock()
        self._issued = start_version * config.chunk_groups   # prompts handed out and not handed back
        self.submitted = 0        # groups offered to the queue
        self.stopped = threading.Event()
        self._arrived = threading.Condition()  # notified after each submit (take_batch's chunk wait)
        self.lag_histogram: Counter[int] = Counter()
        self.handed_back = 0
        self.skipped = 0          # over-generated groups that left the queue unused (rollout_groups)
        self.generated_reward: dict[int, list[float]] = {}  # policy version -> [reward sum, answers]
        self.lost_groups = 0      # groups claimed by a worker that died before submitting them
        self.generated: Counter[int] = Counter()   # groups offered, per prompt index
        self.consumed: Counter[int] = Counter()    # groups the learner took, per prompt index
        self._pending: Counter[int] = Counter()    # prompts handed out whose groups were not taken yet
        self._prompt_of = {p.index: p for p in prompts}

    @property
    def version(self) -> int:
        """The learner's current policy version (the queue's)."""
        return self.queue.version

    def claim(self, worker: int) -> Claim | None:
        """Up to ``prompts_per_claim`` prompts of the next chunk, or None once the run has stopped."""
        if self.stopped.is_set():
            return None
        with self._lock:
            size = self.config.chunk_groups
            chunk = self._issued // size
            n = min(self.config.prompts_per_claim, size - self._issued % size)
            self._issued += n
            prompts = self.stream.take(n)
            self._pending.update(p.index for p in prompts)
        return Claim(chunk, chunk - self.config.eta, tuple(prompts))

    def submit(self, groups: Sequence[RolloutGroup]) -> None:
        """Puts finished groups into the queue with their priorities (QueueClosed once the run stopped)."""
        if not groups:
            return
        rewards = np.array([g.rewards for g in groups], dtype=np.float64)
        with self._lock:
            for group, row in zip(groups, rewards):
                tally = self.generated_reward.setdefault(group.version, [0.0, 0])
                tally[0] += float(row.sum())
                tally[1] += row.size
        if self.config.fifo:
            priorities = np.zeros(len(groups))
        else:
            advantages = grpo_advantages(torch.from_numpy(rewards)).numpy()
            lags = np.array([max(0, self.version - g.version) for g in groups], dtype=np.float64)
            lengths = np.array([[len(r) for r in g.responses] for g in groups], dtype=np.float64)
            priorities = group_priorities(rewards, advantages, lags, lengths, self.config.priority)
        # One put per group, counted once it returned: a put cut short by close() (a blocked worker
        # at the end of the run) then never leaves the ledger half counted.
        for group, priority in zip(groups, priorities.tolist()):
            back = self.queue.put(group, priority, group.version)
            with self._lock:
                self.submitted += 1
                self.generated[group.prompt.index] += 1
            self._give_back(back)
        if self.config.rollout_groups is not None:     # the only waiter: take_batch's chunk wait
            with self._arrived:
                self._arrived.notify_all()

    def _give_back(self, groups: Sequence[RolloutGroup]) -> None:
        if not groups:
            return
        if self.config.rollout_groups is not None:
            # Over-generated on purpose: what the learner left is dropped, its prompts not served again.
            with self._lock:
                self.skipped += len(groups)
                self._pending.subtract(g.prompt.index for g in groups)
            return
        with self._lock:
            self._issued -= len(groups)
            self.handed_back += len(groups)
            self._pending.subtract(g.prompt.index for g in groups)
        self.stream.push_front([g.prompt for g in groups])

    def release(self, claim: Claim, lost: bool = True) -> None:
        """Gives back the prompts of a claim that will never be submitted (its worker died, or stopped
        with the run); their prompts go to the front of the stream. With ``lost`` its groups count in
        ``lost_groups`` (work a dead worker took with it)."""
        with self._lock:
            if lost:
                self.lost_groups += len(claim.prompts)
            self._issued -= len(claim.prompts)
            self._pending.subtract(p.index for p in claim.prompts)
        self.stream.push_front(claim.prompts)

    def is_stopped(self) -> bool:
        """Whether the run has ended (workers stop at their next claim, pull timeout or put)."""
        return self.stopped.is_set()

    def take_batch(self, timeout_s: float | None = None) -> list[RolloutGroup]:
        """The ``batch_groups`` best queued groups (waits for them, and with ``rollout_groups`` until that
        many are queued); records each group's lag."""
        limit = self.config.batch_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        if self.config.rollout_groups is not None:
            # Over-generation: choose only once a whole chunk's worth is queued, or the first groups
            # to land would always be the batch.
            with self._arrived:
                while len(self.queue) < self.config.chunk_groups and not self.stopped.is_set():
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"learner: fewer than rollout_groups={self.config.chunk_groups} "
                                           f"groups queued within {limit} s (queued: {len(self.queue)})")
                    self._arrived.wait(self.config.poll_s)
        while True:
            if self.stopped.is_set():
                raise RuntimeError("learner: the run was stopped while waiting for a batch")
            try:
                batch = self.queue.get_batch(self.config.batch_groups, timeout=self.config.poll_s,
                                             min_n=self.config.batch_groups)
                break
            except QueueClosed:
                raise RuntimeError("learner: the run was stopped while waiting for a batch") from None
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"learner: no batch of {self.config.batch_groups} groups within "
                                       f"{limit} s (queued: {len(self.queue)})") from None
        if len(batch) < self.config.batch_groups:   # the queue closed under the wait: what was left
            raise RuntimeError("learner: the run was stopped while waiting for a batch")
        with self._lock:
            for group in batch:
                self.lag_histogram[self.version - group.version] += 1
                self.consumed[group.prompt.index] += 1
                self._pending[group.prompt.index] -= 1
        return batch

    def position(self) -> dict[str, Any]:
        """The prompt stream's position for a resumed run (:class:`PromptStream`).

        Prompts handed out whose groups the learner has not taken (being generated, or queued)
        come first in its front: a run resumed from it serves them again.
        """
        with self._lock:
            pending = [self._prompt_of[i] for i, n in sorted(self._pending.items()) for _ in range(max(n, 0))]
        return self.stream.state(pending)

    def advance(self, version: int) -> None:
        """Sets the learner's version: stale groups come back and their prompts go to the front."""
        self._give_back(self.queue.advance_version(version))

    def stop(self) -> None:
        """Ends the run: workers' claims return None and their puts raise QueueClosed."""
        self.stopped.set()
        self.queue.close()
        with self._arrived:
            self._arrived.notify_all()

    def stats(self) -> dict[str, Any]:
        """Queue counters, the lag histogram, max lag consumed, the groups handed back and those lost.

        ``queue`` holds the queue's own counters (put = offered and not rejected, got, evicted,
        dropped, rejected = stale at put, size) and ``submitted`` (groups offered). Under every
        overflow policy put = got + evicted + dropped + size and submitted = put + rejected.
        """
        queue = self.queue.stats()
        with self._lock:
            submitted = self.submitted
        return {"queue": {"submitted": submitted, **{k: queue[k] for k in
                                                     ("put", "got", "evicted", "dropped", "rejected", "size")}},
                "lag_histogram": dict(sorted(self.lag_histogram.items())),
                "max_lag_consumed": max(self.lag_histogram, default=0), "handed_back": self.handed_back,
                "skipped": self.skipped,
                "generated_reward": {v: t[0] / t[1] for v, t in sorted(self.generated_reward.items()) if t[1]},
                "lost_groups": self.lost_groups}


Scorer = Callable[[Prompt, list[list[int]]], Sequence[float]]


def rollout_worker(worker: int, coordinator: Coordinator, generator: Generator, scorer: Scorer,
                   subscriber: Any, config: ScheduleConfig, timing: dict[str, Any] | None = None) -> int:
    """One rollout worker's loop until the run stops; returns the number of groups it submitted.

    ``coordinator`` is the :class:`Coordinator` itself (threads) or anything with its ``claim``,
    ``submit`` and ``is_stopped`` calls (a process's client, :mod:`pangu_core.rl.processes`).
    ``subscriber`` pulls the learner's weights into the model ``generator`` samples from. ``scorer``
    gives the G rewards of one prompt's responses. ``timing`` (optional) receives seconds spent
    waiting for weights (``wait_s``) and working (``busy_s``), and per claim the prompts and seconds
    of its work (``claims``: [prompts, seconds] pairs).
    """
    submitted = 0
    timing = {} if timing is None else timing
    timing.setdefault("wait_s", 0.0)
    timing.setdefault("busy_s", 0.0)
    timing.setdefault("claims", [])
    while True:
        claim = coordinator.claim(worker)
        if claim is None:
            return submitted
        start = time.perf_counter()
        version = None
        while version is None:
            try:
                version = subscriber.pull(min_version=max(claim.min_version, 0), timeout_s=config.poll_s)
            except TimeoutError:
                if coordinator.is_stopped():
                    return submitted
            except PeerLost:
                return submitted
        work = time.perf_counter()
        timing["wait_s"] += work - start
        generation = generator.generate([p.ids for p in claim.prompts], config.group_size, config.temperature,
                                        config.max_new_tokens)
        groups = []
        for row, prompt in enumerate(claim.prompts):
            sl = slice(row * config.group_size, (row + 1) * config.group_size)
            responses, log_probs = generation.responses[sl], generation.log_probs[sl]
            rewards = [float(r) for r in scorer(prompt, responses)]
            if len(rewards) != config.group_size:
                raise ValueError(f"scorer: expected {config.group_size} rewards for prompt {prompt.index}, "
                                 f"got {len(rewards)}")
            groups.append(RolloutGroup(prompt, responses, log_probs, rewards, version, claim.chunk, worker))
        busy = time.perf_counter() - work
        timing["busy_s"] += busy
        timing["claims"].append([len(claim.prompts), busy])
        try:
            coordinator.submit(groups)
        except QueueClosed:
            return submitted
        submitted += len(groups)


def run_learner(coordinator: Coordinator, publisher: Any, step: Callable[[list[RolloutGroup], int], dict],
                steps: int, on_step: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Learner steps up to ``steps`` in all: take a batch, ``step(batch, k)``, advance the queue, publish k + 1.

    The steps run from the coordinator's version (0, or where a resumed run starts) to ``steps``;
    ``publisher`` must already have published that version (the starting weights). Returns the
    metrics dict of each step with ``wait_s`` (time blocked for the batch), ``step_s``, ``lags`` and
    ``end_s`` (``time.perf_counter()`` at its end) added. ``on_step(k, metrics)`` (optional) runs
    after step k's version k + 1 is published (a checkpoint, a progress bar), outside the timings.
    """
    history = []
    for k in range(coordinator.version, steps):
        start = time.perf_counter()
        batch = coordinator.take_batch()
        taken = time.perf_counter()
        metrics = dict(step(batch, k))
        # The queue moves first: a worker may put a group as soon as the new weights are out, and
        # the queue refuses versions above its own.
        coordinator.advance(k + 1)
        publisher.publish(version=k + 1)
        end = time.perf_counter()
        metrics.update(wait_s=taken - start, step_s=end - taken, lags=[k - g.version for g in batch], end_s=end)
        history.append(metrics)
        if on_step is not None:
            on_step(k, metrics)
    return history


def run_threads(coordinator: Coordinator, publisher: Any, step: Callable[[list[RolloutGroup], int], dict],
                steps: int, workers: Sequence[tuple[Generator, Scorer, Any]]) -> dict[str, Any]:
    """Runs rollout workers as threads (one per (generator, scorer, subscriber)) and the learner here.

    Returns ``{"history": per-step metrics, "workers": per-worker timing and groups, **coordinator.stats()}``.
    A worker's exception stops the run and is raised here.
    """
    errors: list[BaseException] = []
    timings = [dict() for _ in workers]
    counts = [0] * len(workers)

    def work(index: int, generator: Generator, scorer: Scorer, subscriber: Any) -> None:
        try:
            counts[index] = rollout_worker(index, coordinator, generator, scorer, subscriber, coordinator.config,
                                           timings[index])
        except BaseException as error:   # handed to the learner's thread, which re-raises it
            errors.append(error)
            coordinator.stop()

    threads = [threading.Thread(target=work, args=(i, *w), name=f"rollout-{i}", daemon=True)
               for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    try:
        history = run_learner(coordinator, publisher, step, steps)
    except BaseException:
        if errors:
            raise errors[0] from None
        raise
    finally:
        coordinator.stop()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return {"history": history, "workers": [dict(t, groups=c) for t, c in zip(timings, counts)], **coordinator.stats()}
