"""`pangu-core rl --backend ray`: the same GRPO run with its roles as Ray actors (extra ``[ray]``).

Who holds what:

- The **learner** is a threaded actor (``max_concurrency``). One of its threads runs the single-host
  backend's own learner (:func:`pangu_core.rl.run._train`: the model, AdamW, ``grpo_step``, the
  :class:`~pangu_core.rl.scheduler.Coordinator` with its prompt stream and C++ PriorityQueue,
  checkpoints, snapshots, ``run_learner``); its other threads answer the rollout actors' ``claim``
  and ``submit`` calls on that Coordinator. It publishes each version into its node's shared memory
  and, when rollout actors live on other nodes, through a :class:`pangu_core.sync.RelaySource` to one
  :class:`pangu_core.sync.Relay` per such node (torch.distributed: gloo on CPU, NCCL / HCCL on
  accelerators), which republishes it into that node's shared memory.
- Each **rollout actor** builds its model, generator and MARS scorer with
  :func:`~pangu_core.rl.run.make_rollout_worker`, subscribes to its node's segment and runs
  :func:`~pangu_core.rl.scheduler.rollout_worker` unchanged, with a client whose ``claim`` /
  ``submit`` / ``is_stopped`` are calls to the learner. At most ``placement.max_inflight`` submitted
  results are in flight per actor (backpressure). With ``placement.reward_workers`` > 0 the answers
  are scored by **reward actors** (MarsReward) instead of in the rollout actor.
- The **driver** (the process that calls :func:`train_ray`) places the actors from
  ``config.placement``, starts the relays, watches the actors and cleans up.

Faults: a rollout actor that dies is restarted by Ray (``placement.max_restarts``); the claims it
held are released (their prompts are served again) and counted in ``lost_groups``; a result of a
released claim that arrives late is refused (``late_groups``), so nothing is consumed twice. When
every rollout actor is gone the run stops with an error naming them. When the learner dies the
driver closes the relays, removes the dead learner's shared memory on its node and raises; the run
folder's last checkpoint resumes the run (the same command again).

OUT must be reachable at the same path from the learner's node (put the learner on the driver's
node with a custom resource, or use a shared file system); ``--init`` must exist at the same path on
every node that runs a rollout or reward actor.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import Any

from pangu_core.rl.config import RLConfig


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("backend 'ray': Ray is not installed; pip install 'pangu-core[ray]'") from None
    return ray


def _here() -> tuple[str, str]:
    ray = _ray()
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


def _join_world(store: Any, rank: int, world: int, backend: str, timeout_s: float) -> None:
    """Joins the learner's and relays' process group; ``store`` is the learner's TCPStore or its (host, port)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    if isinstance(store, tuple):
        store = dist.TCPStore(store[0], store[1], world, False, timeout, wait_for_workers=False)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


class LearnerActor:
    """The learner: the single-host learner in one thread, the Coordinator served to rollout actors."""

    def __init__(self, config: RLConfig, out: str, init: str, prefix: str) -> None:
        self.config, self.out, self.init, self.prefix = config, Path(out), Path(init), prefix
        self.coordinator: Any = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._outstanding: dict[int, tuple[int, Any]] = {}
        self._next_claim = 0
        self._late = 0
        self._deaths: Counter[int] = Counter()
        self._done: dict[int, tuple[int, dict]] = {}
        self._running: set[int] = set()
        self._failure = ""
        self._address = ""
        self._world, self._store = 1, None
        self._steps_done = 0

    def node(self) -> tuple[str, str]:
        return _here()

    def open_world(self, world: int) -> int:
        """Starts the torch.distributed store of the learner and the relays; returns its port (chosen by the OS)."""
        import torch.distributed as dist

        host = _here()[1]
        timeout = datetime.timedelta(seconds=self.config.placement.dist_timeout_s)
        self._store = dist.TCPStore(host, 0, world, True, timeout, wait_for_workers=False)
        self._world = world
        return int(self._store.port)

    def join_world(self) -> None:
        placement = self.config.placement
        _join_world(self._store, 0, self._world, placement.weights_backend(), placement.dist_timeout_s)

    def train(self, relays: list) -> dict[str, Any]:
        """The learner's part of the run (from the checkpoint's step, if any); returns the segment."""
        from pangu_core.rl.run import STATE_FILE, Segment, _train

        state: dict[str, Any] = {}
        if (self.out / "checkpoint" / STATE_FILE).is_file():
            from pangu_core.distill.training_state import load_training_state

            state = load_training_state(self.out / "checkpoint" / STATE_FILE)
        segment = Segment(state)
        self._relays = relays
        self._steps_done = int(state.get("step", 0))
        try:
            _train(self.config, self.out, self.init, state, segment, False, self.prefix, self._on_step,
                   runner=self._runner)
        except BaseException:
            if self._failure:
                raise RuntimeError(self._failure) from None
            raise
        return {"records": segment.records, "segments": segment.segments}

    def _runner(self, run: Any) -> dict[str, Any]:
        from pangu_core.rl.scheduler import run_learner
        from pangu_core.sync import Publisher, RelaySource, SyncConfig

        config = run.config
        local = SyncConfig(transport="shm", name="policy", prefix=run.prefix, publish_dtype=None, timeout_s=60.0)
        net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
        with Publisher(run.model, local) as shm:
            source = RelaySource(run.model, net) if self._world > 1 else None
            fanout = _FanOut(shm, source)
            try:
                self.coordinator = run.coordinator
                fanout.publish(version=run.start)
                self._address = shm.address
                self._ready.set()
                history = run_learner(run.coordinator, fanout, run.step, config.steps, run.after_step)
            finally:
                run.coordinator.stop()
                # The running rollout actors finish their claim (their weights still published);
                # a dead or restarting one is not waited for.
                self._wait_for_workers(60.0)
                if source is not None:
                    source.close()
        extra = {**fanout.summary(), "prefix": run.prefix}
        if self._relays:
            ray = _ray()
            extra["relays"] = ray.get([relay.stats.remote() for relay in self._relays], timeout=60)
        with self._lock:
            extra.update(late_groups=self._late, deaths={f"rollout-{i}": n for i, n in sorted(self._deaths.items())})
            workers = [dict(self._done[i][1], groups=self._done[i][0], name=f"rollout-{i}", outcome="done")
                       if i in self._done else {"name": f"rollout-{i}", "outcome": "died", "groups": 0}
                       for i in range(config.rollout_workers)]
            dead = [f"rollout-{i}" for i in sorted(self._deaths)]
        return {"history": history, "workers": workers, "dead_workers": dead, "extra": extra,
                **run.coordinator.stats()}

    def _on_step(self, step: int, record: dict[str, Any]) -> None:
        self._steps_done = step          # after the step's snapshot and checkpoint were written

    def _wait_for_workers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._running <= set(self._done):
                    return
            time.sleep(0.05)

    def ready(self, timeout_s: float) -> str:
        """Waits until version ``start`` is published; the learner node's shared-memory address."""
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"learner: not ready within {timeout_s} s")
        return self._address

    def claim(self, worker: int) -> tuple[int, Any] | None:
        claim = self.coordinator.claim(worker)
        if claim is None:
            return None
        with self._lock:
            self._next_claim += 1
            self._outstanding[self._next_claim] = (worker, claim)
            return self._next_claim, claim

    def submit(self, worker: int, claim_id: int, groups: list) -> bool:
        """Queues a claim's groups; False once the run stopped. A released claim's late result is refused."""
        from pangu_core.queue import QueueClosed

        with self._lock:
            entry = self._outstanding.pop(claim_id, None)
            if entry is None:
                self._late += len(groups)
                return not self.coordinator.is_stopped()
        try:
            self.coordinator.submit(groups)
        except QueueClosed:
            return False
        return True

    def is_stopped(self) -> bool:
        return self.coordinator.is_stopped()

    def worker_lost(self, worker: int) -> int:
        """A rollout actor died: its claims are released (their groups counted lost); returns how many."""
        with self._lock:
            mine = [cid for cid, (w, _) in self._outstanding.items() if w == worker]
            claims = [self._outstanding.pop(cid)[1] for cid in mine]
            self._deaths[worker] += 1
            self._running.discard(worker)
        for claim in claims:
            self.coordinator.release(claim, lost=True)
        return sum(len(c.prompts) for c in claims)

    def worker_started(self, worker: int) -> bool:
        """A rollout actor's loop begins; False when the run has already stopped (it need not start)."""
        with self._lock:
            if self.coordinator.is_stopped():
                return False
            self._running.add(worker)
            return True

    def worker_done(self, worker: int, groups: int, timing: dict) -> None:
        with self._lock:
            self._done[worker] = (groups, timing)

    def stop(self, reason: str) -> None:
        """Stops the run; ``reason`` becomes the learner's error."""
        with self._lock:
            self._failure = self._failure or reason
        if self.coordinator is not None:
            self.coordinator.stop()

    def progress(self) -> dict[str, Any]:
        with self._lock:
            outstanding = Counter(w for w, _ in self._outstanding.values())
        version = self.coordinator.version if self.coordinator is not None else None
        return {"step": version, "done": self._steps_done, "outstanding": dict(outstanding)}


class _FanOut:
    """The learner's publisher: the node's shared memory, then the relays; times each publish."""

    def __init__(self, local: Any, network: Any) -> None:
        self.local, self.network = local, network
        self.publish_s: list[float] = []

    def publish(self, version: int) -> int:
        started = time.perf_counter()
        self.local.publish(version=version)
        if self.network is not None:
            self.network.publish(version=version)
        self.publish_s.append(time.perf_counter() - started)
        return version

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"publish_s": list(self.publish_s)}
        if self.network is not None:
            out.update(network_publish_s=list(self.network.publish_s), relays_in_world=self.network.relays,
                       bytes_per_version=dict(self.network.bytes_per_version), nbytes=self.network.nbytes)
        return out


class _LearnerClient:
    """A rollout actor's Coordinator: calls to the learner actor, at most ``max_inflight`` results in flight."""

    def __init__(self, learner: Any, worker: int, max_inflight: int, owner: "RolloutActor") -> None:
        self._learner, self._worker, self._max, self._owner = learner, worker, max_inflight, owner
        self._pending: deque = deque()
        self._claim_id = -1

    def claim(self, worker: int) -> Any:
        ray = _ray()
        got = ray.get(self._learner.claim.remote(worker))
        if got is None:
            return None
        self._claim_id, claim = got
        if self._owner.fault:        # fault injection: the process dies holding the claim
            os._exit(1)
        return claim

    def submit(self, groups: list) -> None:
        from pangu_core.queue import QueueClosed

        ray = _ray()
        self._pending.append(self._learner.submit.remote(self._worker, self._claim_id, list(groups)))
        while len(self._pending) >= self._max:
            if not ray.get(self._pending.popleft()):
                raise QueueClosed("the run has stopped")

    def is_stopped(self) -> bool:
        return bool(_ray().get(self._learner.is_stopped.remote()))

    def flush(self) -> None:
        ray = _ray()
        while self._pending:
            ray.get(self._pending.popleft())


class _RemoteScorer:
    """Scores one prompt's answers on a reward actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def __call__(self, prompt: Any, responses: list[list[int]]) -> list[float]:
        return _ray().get(self._actor.score.remote(prompt, responses))


class RolloutActor:
    """One rollout worker: the single-host backend's worker, its weights from its node's shared memory."""

    def __init__(self, index: int, init: str, seed: int, threads: int) -> None:
        import torch

        from pangu_core.rl.run import make_rollout_worker

        torch.set_num_threads(threads)
        self.index = index
        self.generator, self.scorer, self.target = make_rollout_worker(index, init, seed)
        self.fault = False

    def node(self) -> tuple[str, str]:
        return _here()

    def fault_after_next_claim(self) -> None:
        """Fault injection for tests: the actor's process exits right after its next claim is granted."""
        self.fault = True

    def run(self, learner: Any, address: str, schedule: Any, max_inflight: int, reward: Any = None) -> int:
        """The rollout loop until the run stops (``reward``: a reward actor to score with, or None)."""
        from pangu_core.rl.scheduler import rollout_worker
        from pangu_core.sync import Subscriber, SyncConfig

        scorer = _RemoteScorer(reward) if reward is not None else self.scorer
        if not _ray().get(learner.worker_started.remote(self.index)):
            return 0
        client = _LearnerClient(learner, self.index, max_inflight, self)
        timing: dict[str, Any] = {}
        sync = SyncConfig(transport="shm", name="policy", publish_dtype=None, timeout_s=60.0)
        with Subscriber(self.target, sync, address=address) as subscriber:
            groups = rollout_worker(self.index, client, self.generator, scorer, subscriber, schedule, timing)
        client.flush()
        _ray().get(learner.worker_done.remote(self.index, groups, timing))
        return groups


class RewardActor:
    """MARS's math reward for rollout actors (one prompt's answers per call)."""

    def __init__(self, init: str) -> None:
        from transformers import AutoTokenizer

        from pangu_core.rl.run import MarsReward

        self.reward = MarsReward(AutoTokenizer.from_pretrained(init))

    def score(self, prompt: Any, responses: list[list[int]]) -> list[float]:
        return self.reward(prompt, responses)


class RelayActor:
    """One node's weight relay (:class:`pangu_core.sync.Relay`) in a thread of this actor."""

    def __init__(self) -> None:
        self.relay: Any = None
        self.error: BaseException | None = None
        self._built = threading.Event()

    def node(self) -> tuple[str, str]:
        return _here()

    def join_world(self, host: str, port: int, rank: int, world: int, backend: str, timeout_s: float) -> None:
        _join_world((host, port), rank, world, backend, timeout_s)

    def start(self, net: Any, local: Any) -> None:
        def work() -> None:
            from pangu_core.sync import Relay

            try:
                self.relay = Relay(net, local)
            except BaseException as error:   # reported by address()
                self.error = error
                return
            finally:
                self._built.set()
            self.relay.run()

        threading.Thread(target=work, name="relay", daemon=True).start()

    def address(self, timeout_s: float) -> str:
        if not self._built.wait(timeout_s):
            raise TimeoutError(f"relay: not built within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"relay: {self.error!r}") from self.error
        self.relay.wait_first(timeout_s)
        return self.relay.address

    def stats(self) -> dict[str, Any]:
        return self.relay.stats() if self.relay is not None else {}

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()


def _sweep(prefix: str) -> list[str]:
    from pangu_core.sync import sweep

    return sweep(prefix)


def _sweep_on(ray: Any, nodes: set[str], prefix: str) -> None:
    """Removes the shared-memory segments of dead processes under ``prefix`` on each node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(_sweep)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(prefix)
            for node in nodes]
    try:
        ray.get(refs, timeout=60)
    except Exception:   # a dead node has no segments to sweep; the others were swept
        pass


def _restarted_node(ray: Any, actor: Any, timeout_s: float, train_ref: Any) -> str | None:
    """The node of an actor once Ray has restarted it; None when it cannot be restarted, or when
    the learner finished meanwhile (``train_ref`` ready)."""
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    deadline = time.monotonic() + timeout_s
    ref = actor.node.remote()
    while time.monotonic() < deadline:
        try:
            ready, _ = ray.wait([ref, train_ref], num_returns=1, timeout=0.5)
            if ref in ready:
                return ray.get(ref)[0]
            if ready:
                return None
        except ActorUnavailableError:      # still restarting
            time.sleep(0.2)
            ref = actor.node.remote()
        except (RayActorError, GetTimeoutError):
            return None
    return None


def _actor_classes(ray: Any) -> dict[str, Any]:
    return {"learner": ray.remote(LearnerActor), "rollout": ray.remote(RolloutActor),
            "reward": ray.remote(RewardActor), "relay": ray.remote(RelayActor)}


def train_ray(config: RLConfig, out: Path, init: Path, segment: Any, progress: bool, shm_prefix: str | None,
              address: str | None) -> None:
    """The training part of `pangu-core rl --backend ray` (see the module docstring); fills ``segment``.

    ``address``: the Ray cluster to join ("auto", "ray://...", an IP:port); None starts a local
    instance unless this process is already connected to one. Actors are named
    ``<prefix>-learner`` and ``<prefix>-rollout-<i>`` (``shm_prefix``, default a fresh one).
    """
    ray = _ray()
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm.auto import tqdm

    from pangu_core.sync import SyncConfig

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    prefix = shm_prefix or f"pgrl{uuid.uuid4().hex[:10]}"
    placement, timeout = config.placement, config.placement.startup_timeout_s
    classes = _actor_classes(ray)
    workers = config.rollout_workers
    learner = classes["learner"].options(name=f"{prefix}-learner", max_concurrency=8 + workers * (placement.max_inflight + 3),
                                         **placement.learner.ray_options()).remote(config, str(out.resolve()), str(init), prefix)
    rewards = [classes["reward"].options(name=f"{prefix}-reward-{i}", **placement.reward.ray_options()).remote(str(init))
               for i in range(placement.reward_workers)]
    start = int(segment.records[-1]["step"]) if segment.records else 0
    seed = config.seed * 1_000_003 + 31 * start
    rollouts = [classes["rollout"].options(name=f"{prefix}-rollout-{i}", max_restarts=placement.max_restarts,
                                           max_concurrency=2, **placement.rollout.ray_options())
                .remote(i, str(init), seed, config.rollout_threads) for i in range(workers)]
    relays: dict[str, Any] = {}
    nodes: set[str] = set()
    learner_alive, finished = True, False
    bar = tqdm(total=config.steps, initial=start, desc="rl steps (ray)", disable=not progress, dynamic_ncols=True)
    try:
        learner_node, learner_ip = ray.get(learner.node.remote(), timeout=timeout)
        rollout_nodes = [n for n, _ in ray.get([a.node.remote() for a in rollouts], timeout=timeout)]
        nodes = {learner_node, *rollout_nodes}
        for node in sorted(set(rollout_nodes) - {learner_node}):
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            relays[node] = classes["relay"].options(name=f"{prefix}-relay-{len(relays)}", max_concurrency=4,
                                                    scheduling_strategy=strategy,
                                                    **placement.relay.ray_options()).remote()
        if relays:
            world = 1 + len(relays)
            port = ray.get(learner.open_world.remote(world), timeout=timeout)
            joins = [learner.join_world.remote()]
            joins += [r.join_world.remote(learner_ip, port, rank, world, placement.weights_backend(),
                                          placement.dist_timeout_s) for rank, r in enumerate(relays.values(), 1)]
            ray.get(joins, timeout=timeout)
            net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
            local = SyncConfig(transport="shm", name="policy", prefix=prefix, publish_dtype=None, timeout_s=60.0)
            for relay in relays.values():
                relay.start.remote(net, local)
        train_ref = learner.train.remote(list(relays.values()))
        ready_ref = learner.ready.remote(timeout)
        first, _ = ray.wait([ready_ref, train_ref], num_returns=1, timeout=timeout)
        if not first:
            raise TimeoutError(f"learner: not ready within {timeout} s")
        if train_ref in first:
            ray.get(train_ref)        # the learner failed before its first publish: its error
        addresses = {learner_node: ray.get(ready_ref)}
        for node, relay in relays.items():
            addresses[node] = ray.get(relay.address.remote(timeout), timeout=timeout)

        def start_run(i: int) -> Any:
            return rollouts[i].run.remote(learner, addresses[rollout_nodes[i]], config.schedule, placement.max_inflight,
                                          rewards[i % len(rewards)] if rewards else None)

        runs = {start_run(i): i for i in range(workers)}
        deaths: Counter[int] = Counter()
        gone: set[int] = set()
        failure = ""
        while True:
            ready, _ = ray.wait([train_ref, *runs], num_returns=1, timeout=0.5)
            try:
                step = ray.get(learner.progress.remote())["step"]
            except RayActorError:     # the learner died: train_ref says so next
                step = None
            if step is not None and step > bar.n:
                bar.update(step - bar.n)
            if train_ref in ready:
                break
            for ref in ready:
                i = runs.pop(ref)
                try:
                    ray.get(ref)
                except RayActorError:
                    deaths[i] += 1
                    ray.get(learner.worker_lost.remote(i))
                    if deaths[i] <= placement.max_restarts:
                        # A restart on a node without weights (no relay there) counts as gone.
                        node = _restarted_node(ray, rollouts[i], timeout, train_ref)
                        if node in addresses:
                            rollout_nodes[i] = node
                            runs[start_run(i)] = i
                            continue
                        if ray.wait([train_ref], timeout=0)[0]:
                            continue          # the run ended while the actor was restarting
                    gone.add(i)
                    if len(gone) == workers:
                        failure = "every rollout actor died: " + ", ".join(
                            f"rollout-{j} ({deaths[j]} deaths)" for j in sorted(gone))
                        ray.get(learner.stop.remote(failure))
                except RayTaskError as error:
                    failure = f"rollout-{i} failed:\n{error}"
                    ray.get(learner.stop.remote(failure))
        try:
            result = ray.get(train_ref)
        except RayActorError as error:
            learner_alive = False
            raise RuntimeError(f"the learner actor died ({type(error).__name__}); {out / 'checkpoint'} holds its last "
                               "checkpoint: run the same command again to resume") from None
        except RayTaskError as error:
            cause = error.as_instanceof_cause()
            raise (RuntimeError(failure) if failure else cause) from None
        segment.records[:] = result["records"]
        segment.segments[:] = result["segments"]
        bar.update(config.steps - bar.n)
        finished = True
    finally:
        bar.close()
        _shut_down(ray, learner, rollouts, rewards, relays, nodes, prefix, sweep=not (finished and learner_alive))
        if started_here:
            ray.shutdown()


def _shut_down(ray: Any, learner: Any, rollouts: list, rewards: list, relays: dict, nodes: set[str], prefix: str,
               sweep: bool) -> None:
    """Closes the relays (their shared memory), ends every actor, and after a failure sweeps each node."""
    try:
        ray.get([relay.close.remote() for relay in relays.values()], timeout=30)
    except Exception:    # a relay that cannot answer is killed below; its node is swept
        sweep = True
    for actor in [*rollouts, *rewards, *relays.values(), learner]:
        ray.kill(actor, no_restart=True)
    if sweep and nodes:
        _sweep_on(ray, nodes, prefix)
