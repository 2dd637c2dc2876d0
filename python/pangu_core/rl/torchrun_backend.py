"""`pangu-core rl --backend torchrun`: rank 0 learns, the other ranks roll out.

Started by ``torchrun --nnodes N --nproc-per-node 1 ... pangu-core rl --backend torchrun ...`` (every
rank runs the same command). Rank 0 runs the single-host backend's learner
(:func:`pangu_core.rl.run._train`: model, optimizer, ``grpo_step``, the
:class:`~pangu_core.rl.scheduler.Coordinator`, checkpoints, the report); every other rank runs
:func:`~pangu_core.rl.scheduler.rollout_worker` unchanged, with clients that reach rank 0's
Coordinator through torch.distributed. Two modes (``placement.torchrun_relays``):

- **Lockstep** (default, no relay). The run moves in rounds. In round c rank 0's communication
  thread gathers the groups of chunk c - 1 from the rollout ranks into the queue, hands each rank
  its share of chunk c (``batch_groups = prompts_per_claim * rollout ranks``) and, when the ranks'
  weights are older than c - eta, broadcasts the newest learner version (>= c - eta) to them. The
  learner thread publishes each version into an in-process ring, so it never waits for the network;
  with eta = 1 chunk c is generated with version c - 1 while the learner trains on chunk c - 1
  (one-step-off). Every rank makes the same collective calls in the same order, decided by rank 0.
- **Relays** (any eta). Rank 0 publishes each version through a
  :class:`pangu_core.sync.RelaySource`; each rollout rank runs a :class:`pangu_core.sync.Relay`
  (one network copy per node per version, republished into the node's shared memory) and
  ``rollout_workers`` rollout processes (:class:`pangu_core.rl.processes.WorkerPool`) that pull
  from it at their own pace. Their ``claim`` / ``submit`` calls travel to rank 0 point to point
  (a gloo group per rollout rank), where a thread per rank answers them on the Coordinator. A
  rollout process that dies has its claim released and counted in ``lost_groups``.

Weights go over the default process group (gloo on CPU, NCCL with GPUs, HCCL with NPUs:
``placement.dist_backend``); control messages and groups over gloo groups. A rank that crashes
ends the job (torchrun stops the others); rank 0's checkpoints resume it (the same command again).
"""

from __future__ import annotations

import datetime
import functools
import os
import threading
from pathlib import Path
from typing import Any

from pangu_core.rl.config import RLConfig

_world: dict[str, Any] = {}


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def init_world(config: RLConfig) -> int:
    """Joins torchrun's process group (once) and builds the control groups; returns this rank."""
    dist = _dist()
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ValueError(f"backend 'torchrun': start the command with torchrun (not set: {', '.join(missing)})")
        dist.init_process_group(config.placement.weights_backend(),
                                timeout=datetime.timedelta(seconds=config.placement.dist_timeout_s))
    world = dist.get_world_size()
    if world < 2:
        raise ValueError("backend 'torchrun': expected at least 2 ranks (rank 0 learns, the others roll out), got 1")
    _world["control"] = dist.new_group(backend="gloo")
    _world["rpc"] = {r: dist.new_group([0, r], backend="gloo") for r in range(1, world)}
    return dist.get_rank()


def _finish_world() -> None:
    dist = _dist()
    dist.barrier(group=_world["control"])
    dist.destroy_process_group()
    _world.clear()


def _setup(message: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rank 0 sends the run's start (or {"done": True}); the other ranks receive it."""
    box = [message]
    _dist().broadcast_object_list(box, src=0, group=_world["control"])
    return box[0]


def release_ranks() -> None:
    """Rank 0 with nothing left to train: the rollout ranks end at once."""
    _setup({"done": True})
    _finish_world()


def learner_runner(run: Any) -> dict[str, Any]:
    """Rank 0's runner for :func:`pangu_core.rl.run._train` (see the module docstring)."""
    dist = _dist()
    config, world = run.config, dist.get_world_size()
    schedule = config.schedule
    relays = config.placement.torchrun_relays
    chunk = getattr(schedule, "chunk_groups", schedule.batch_groups)     # groups generated per step
    if not relays and chunk != schedule.prompts_per_claim * (world - 1):
        raise ValueError(f"schedule.prompts_per_claim: lockstep needs the groups of a step = prompts_per_claim * "
                         f"rollout ranks ({chunk} != {schedule.prompts_per_claim} * {world - 1})")
    _setup({"start": run.start, "prefix": run.prefix})
    try:
        return _relay_learner(run, world) if relays else _lockstep_learner(run, world)
    finally:
        _finish_world()


# ---- lockstep -----------------------------------------------------------------------------------

def _lockstep_learner(run: Any, world: int) -> dict[str, Any]:
    import torch

    from pangu_core.rl.scheduler import run_learner
    from pangu_core.sync import Publisher, Subscriber, SyncConfig

    config, coordinator = run.config, run.coordinator
    ring_sync = SyncConfig(transport="inprocess", name=f"{run.prefix}ring", publish_dtype=None, slots=4)
    net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
    with Publisher(run.model, ring_sync) as ring:
        ring.publish(version=run.start)
        snapshot = {k: torch.empty_like(v) for k, v in run.model.state_dict().items()}
        reader = Subscriber(snapshot, ring_sync, address=ring.address)
        network = Publisher(snapshot, net)
        rounds = _Rounds(coordinator, reader, network, world)
        thread = threading.Thread(target=rounds.run, name="lockstep", daemon=True)
        thread.start()
        try:
            history = run_learner(coordinator, ring, run.step, config.steps, run.after_step)
        finally:
            coordinator.stop()
            thread.join()
            network.close()
    if rounds.error is not None:
        raise RuntimeError(f"lockstep rounds failed: {rounds.error!r}") from rounds.error
    workers = [dict(t, name=f"rank-{r}", outcome="done") for r, t in sorted(rounds.timing.items())]
    extra = {"mode": "lockstep", "prefix": run.prefix, "rounds": rounds.rounds, "syncs": rounds.syncs,
             "bytes_per_version": dict(rounds.bytes), "nbytes": network.nbytes}
    return {"history": history, "workers": workers, "dead_workers": [], "extra": extra, **coordinator.stats()}


class _Rounds:
    """Rank 0's communication thread in lockstep: one round per chunk (see the module docstring)."""

    def __init__(self, coordinator: Any, reader: Any, network: Any, world: int) -> None:
        self.coordinator, self.reader, self.network, self.world = coordinator, reader, network, world
        self.held = -1
        self.rounds = self.syncs = 0
        self.bytes: dict[int, int] = {}
        self.timing: dict[int, dict] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.round():
                pass
        except BaseException as error:   # the learner's thread reports it
            self.error = error
            self.coordinator.stop()

    def _wait_version(self, need: int) -> int | None:
        poll = self.coordinator.config.poll_s
        while not self.coordinator.is_stopped():
            try:
                return self.reader.pull(min_version=need, timeout_s=poll)
            except TimeoutError:
                continue
        return None

    def round(self) -> bool:
        from pangu_core.queue import QueueClosed

        dist = _dist()
        gathered: list[Any] = [None] * self.world
        dist.gather_object(None, gathered, dst=0, group=_world["control"])
        for rank, (groups, timing, submitted) in enumerate(gathered[1:], 1):
            self.timing[rank] = dict(timing, groups=submitted)
            if groups:
                try:
                    self.coordinator.submit(groups)
                except QueueClosed:
                    pass
        claims = [self.coordinator.claim(rank - 1) for rank in range(1, self.world)]
        version, sync = self.held, False
        if all(c is not None for c in claims):
            need = max(0, max(c.min_version for c in claims))
            if self.held < need:
                version = self._wait_version(need)
                sync = version is not None
        if not sync and (version is None or any(c is None for c in claims)):
            for claim in claims:                 # the run stopped: nothing more is handed out
                if claim is not None:
                    self.coordinator.release(claim, lost=False)
            claims = [None] * len(claims)
        out: list[Any] = [None]
        dist.scatter_object_list(out, [None] + [None if c is None else (c, sync) for c in claims], src=0,
                                 group=_world["control"])
        if sync:
            before = self.network.bytes_transferred or 0
            self.network.publish(version=version)
            self.bytes[version] = (self.network.bytes_transferred or 0) - before
            self.held = version
            self.syncs += 1
        self.rounds += 1
        return claims[0] is not None


class _LockstepClient:
    """A rollout rank's Coordinator in lockstep: each claim is one round with rank 0."""

    def __init__(self, timing: dict[str, Any]) -> None:
        self.timing, self.pending, self.submitted = timing, [], 0
        self.sync, self.stopped = False, False

    def claim(self, worker: int) -> Any:
        dist = _dist()
        dist.gather_object((self.pending, self.timing, self.submitted), None, dst=0, group=_world["control"])
        self.pending = []
        box: list[Any] = [None]
        dist.scatter_object_list(box, None, src=0, group=_world["control"])
        if box[0] is None:
            self.stopped = True
            return None
        claim, self.sync = box[0]
        return claim

    def submit(self, groups: list) -> None:
        self.pending.extend(groups)
        self.submitted += len(groups)

    def is_stopped(self) -> bool:
        return self.stopped


class _LockstepSubscriber:
    """Enters the weights collective only in the rounds where rank 0 said the ranks need newer weights."""

    def __init__(self, subscriber: Any, client: _LockstepClient) -> None:
        self.subscriber, self.client = subscriber, client

    def pull(self, *, min_version: int | None = None, timeout_s: float | None = None) -> int:
        if self.client.sync:
            self.client.sync = False
            return self.subscriber.pull(min_version=min_version)
        return int(self.subscriber.version)


# ---- relays -------------------------------------------------------------------------------------

def _relay_learner(run: Any, world: int) -> dict[str, Any]:
    from pangu_core.rl.scheduler import run_learner
    from pangu_core.sync import RelaySource, SyncConfig

    config, coordinator = run.config, run.coordinator
    net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
    source = RelaySource(run.model, net)
    servers = [_RankServer(rank, coordinator) for rank in range(1, world)]
    try:
        source.publish(version=run.start)
        for server in servers:
            server.thread.start()
        history = run_learner(coordinator, source, run.step, config.steps, run.after_step)
    except BaseException:
        failure = next((s.failure for s in servers if s.failure), "")
        if failure:
            raise RuntimeError(failure) from None
        raise
    finally:
        coordinator.stop()
        source.close()
        for server in servers:
            server.thread.join()
        relays: list[Any] = [None] * world      # each relay's counts, once it has stopped
        _dist().gather_object(None, relays, dst=0, group=_world["control"])
    failure = next((s.failure for s in servers if s.failure), "")
    if failure:
        raise RuntimeError(failure)
    summaries = [s.summary for s in servers]
    extra = {"mode": "relay", "prefix": run.prefix, "network_publish_s": list(source.publish_s), "nbytes": source.nbytes,
             "bytes_per_version": dict(source.bytes_per_version), "relays": relays[1:]}
    return {"history": history, "workers": [w for s in summaries for w in s.get("workers", [])],
            "dead_workers": [d for s in summaries for d in s.get("dead_workers", [])], "extra": extra,
            **coordinator.stats()}


class _RankServer:
    """Rank 0's thread answering one rollout rank's Coordinator calls (point to point, its own gloo group)."""

    def __init__(self, rank: int, coordinator: Any) -> None:
        self.rank, self.coordinator = rank, coordinator
        self.summary: dict[str, Any] = {}
        self.failure = ""
        self.thread = threading.Thread(target=self.serve, name=f"serve-rank-{rank}", daemon=True)

    def serve(self) -> None:
        from pangu_core.queue import QueueClosed

        dist, group = _dist(), _world["rpc"][self.rank]
        while True:
            box: list[Any] = [None]
            dist.recv_object_list(box, src=self.rank, group=group)
            kind, payload = box[0]
            reply: Any = None
            if kind == "claim":
                reply = self.coordinator.claim(payload)
            elif kind == "submit":
                try:
                    self.coordinator.submit(payload)
                    reply = True
                except QueueClosed:
                    reply = False
            elif kind == "stopped":
                reply = self.coordinator.is_stopped()
            elif kind == "release":
                self.coordinator.release(payload[0], lost=payload[1])
            elif kind == "stop":
                self.failure = self.failure or payload
                self.coordinator.stop()
            elif kind == "bye":
                self.summary = payload
                self.failure = self.failure or payload.get("failure", "")
                return
            dist.send_object_list([reply], dst=self.rank, group=group)


class _RemoteCoordinator:
    """A rollout rank's view of rank 0's Coordinator (for its WorkerPool): calls over its gloo group."""

    def __init__(self, rank: int, config: Any) -> None:
        self.rank, self.config = rank, config
        self._lock = threading.Lock()
        self._stopped = False

    def _call(self, kind: str, payload: Any = None) -> Any:
        dist, group = _dist(), _world["rpc"][self.rank]
        with self._lock:
            dist.send_object_list([(kind, payload)], dst=0, group=group)
            if kind == "bye":
                return None
            box: list[Any] = [None]
            dist.recv_object_list(box, src=0, group=group)
            return box[0]

    def claim(self, worker: int) -> Any:
        return None if self._stopped else self._call("claim", worker)

    def submit(self, groups: Any) -> None:
        from pangu_core.queue import QueueClosed

        if not self._call("submit", list(groups)):
            raise QueueClosed("the run has stopped")

    def is_stopped(self) -> bool:
        self._stopped = self._stopped or bool(self._call("stopped"))
        return self._stopped

    def release(self, claim: Any, lost: bool = True) -> None:
        self._call("release", (claim, lost))

    def stop(self) -> None:
        self._stopped = True
        self._call("stop", f"rank {self.rank}: a rollout worker failed or every one died")

    def bye(self, summary: dict[str, Any]) -> None:
        self._call("bye", summary)


# ---- rollout ranks ------------------------------------------------------------------------------

def serve_rollout_rank(config: RLConfig, init: Path) -> dict[str, Any]:
    """A rollout rank's whole part of the run; returns its summary (``rank``, ``mode`` and figures)."""
    import torch

    from pangu_core.rl.processes import WorkerPool
    from pangu_core.rl.run import make_rollout_worker
    from pangu_core.rl.scheduler import rollout_worker
    from pangu_core.sync import Relay, Subscriber, SyncConfig

    dist = _dist()
    rank = dist.get_rank()
    setup = _setup()
    if setup.get("done"):
        _finish_world()
        return {"rank": rank, "mode": "idle"}
    start, prefix = int(setup["start"]), str(setup["prefix"])
    seed = config.seed * 1_000_003 + 31 * start
    net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
    try:
        if not config.placement.torchrun_relays:
            torch.set_num_threads(config.rollout_threads)
            generator, scorer, target = make_rollout_worker(rank - 1, str(init), seed)
            subscriber = Subscriber(target, net)
            timing: dict[str, Any] = {}
            client = _LockstepClient(timing)
            groups = rollout_worker(rank - 1, client, generator, scorer, _LockstepSubscriber(subscriber, client),
                                    config.schedule, timing)
            subscriber.close()
            return {"rank": rank, "mode": "lockstep", "groups": groups}
        local = SyncConfig(transport="shm", name="policy", prefix=f"{prefix}n{rank}", publish_dtype=None,
                           timeout_s=60.0)
        relay = Relay(net, local).start()
        try:
            relay.wait_first(config.placement.startup_timeout_s)
            proxy = _RemoteCoordinator(rank, config.schedule)
            factory = functools.partial(make_rollout_worker, folder=str(init), seed=seed)
            workers = config.rollout_workers
            pool = WorkerPool(proxy, factory, workers, local, relay.address, threads=config.rollout_threads,
                              first_index=(rank - 1) * workers)
            pool.join(None)
            summary = {**pool.summary(), "failure": pool.failure()}
            proxy.bye(summary)
            relay.join(config.placement.dist_timeout_s)
        finally:
            relay.close()
        stats = relay.stats()
        dist.gather_object(stats, None, dst=0, group=_world["control"])
        workers = [{k: w[k] for k in ("name", "groups", "outcome")} for w in summary["workers"]]
        return {"rank": rank, "mode": "relay", "workers": workers, "dead_workers": summary["dead_workers"],
                "relay": {k: stats[k] for k in ("versions", "bytes_received", "error")}}
    finally:
        _finish_world()
