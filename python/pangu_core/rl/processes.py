"""Rollout workers as processes on one host: a pipe per worker to the learner's Coordinator.

Each worker process builds its generator, scorer and weight target with ``factory(index)`` (a
picklable callable: a module-level function or a ``functools.partial`` of one), opens a
:class:`pangu_core.sync.Subscriber` on the learner's publisher (shared memory on one host) and runs
:func:`pangu_core.rl.scheduler.rollout_worker` against a :class:`CoordinatorClient`, whose ``claim``,
``submit`` and ``is_stopped`` are round trips over its pipe. In the learner's process one thread
per worker serves those calls on the real :class:`~pangu_core.rl.scheduler.Coordinator`.

Faults: a worker that raises sends its traceback and the run stops with a RuntimeError that names
it. A worker that dies (killed, crashed) is noticed when its pipe closes: its outstanding claim's
prompts go back to the front of the stream, it is reported by name in ``dead_workers``, and the
learner goes on with the others; when none is left the run stops with a RuntimeError naming them.
Messages are pickled by value (tensors included), so nothing is shared but the weights' segment.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pangu_core.queue import QueueClosed
from pangu_core.rl.scheduler import Claim, Coordinator, RolloutGroup, run_learner, rollout_worker
from pangu_core.sync import Subscriber, SyncConfig

__all__ = ["CoordinatorClient", "WorkerPool", "run_processes"]


def _send(connection, message: Any) -> None:
    connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(connection) -> Any:
    return pickle.loads(connection.recv_bytes())


class CoordinatorClient:
    """A worker process's view of the Coordinator: ``claim``, ``submit`` and ``is_stopped`` over a pipe."""

    def __init__(self, connection) -> None:
        self._connection = connection

    def _call(self, *message: Any) -> Any:
        _send(self._connection, message)
        return _receive(self._connection)

    def claim(self, worker: int) -> Claim | None:
        """The next prompts to work on, or None once the run has stopped."""
        return self._call("claim", worker)

    def submit(self, groups: Sequence[RolloutGroup]) -> None:
        """Sends finished groups to the learner's queue (QueueClosed once the run has stopped)."""
        if not self._call("submit", list(groups)):
            raise QueueClosed("the run has stopped")

    def is_stopped(self) -> bool:
        """Whether the run has ended."""
        return bool(self._call("stopped"))


def _worker_main(index: int, connection, factory: Callable[[int], tuple[Any, Any, Any]], sync: SyncConfig,
                 address: str, config: Any, threads: int) -> None:
    """A worker process: build, subscribe, run the rollout loop, report how it went."""
    torch.set_num_threads(threads)
    client = CoordinatorClient(connection)
    try:
        generator, scorer, target = factory(index)
        timing: dict[str, float] = {}
        with Subscriber(target, sync, address=address) as subscriber:
            groups = rollout_worker(index, client, generator, scorer, subscriber, config, timing)
        _send(connection, ("done", groups, timing))
    except BaseException:
        _send(connection, ("error", traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        connection.close()


class _WorkerState:
    def __init__(self, index: int, process) -> None:
        self.index, self.process = index, process
        self.name = f"rollout-{index}"
        self.outcome = "running"      # running, done, error, died
        self.groups, self.timing, self.error = 0, {}, ""


def _serve(state: _WorkerState, connection, coordinator: Coordinator, on_exit: Callable[[], None]) -> None:
    """The learner-side thread of one worker: answers its calls until it finishes or its pipe closes."""
    outstanding: Claim | None = None
    try:
        while True:
            try:
                message = _receive(connection)
            except (EOFError, OSError):
                state.outcome = "died"
                break
            kind = message[0]
            if kind == "claim":
                outstanding = coordinator.claim(message[1])
                _send(connection, outstanding)
            elif kind == "submit":
                try:
                    coordinator.submit(message[1])
                    ok = True
                except QueueClosed:
                    ok = False
                outstanding = None
                _send(connection, ok)
            elif kind == "stopped":
                _send(connection, coordinator.is_stopped())
            elif kind == "done":
                state.outcome, state.groups, state.timing = "done", message[1], message[2]
                break
            elif kind == "error":
                state.outcome, state.error = "error", message[1]
                break
    finally:
        if outstanding is not None:
            coordinator.release(outstanding, lost=state.outcome == "died")
        connection.close()
        on_exit()


class WorkerPool:
    """Rollout worker processes, and in this process one thread per worker serving its pipe.

    ``coordinator`` is the :class:`~pangu_core.rl.scheduler.Coordinator`, or anything with its
    ``config``, ``claim``, ``submit``, ``is_stopped``, ``release`` and ``stop`` (a proxy to a remote
    one, :mod:`pangu_core.rl.torchrun_backend`). Workers are numbered from ``first_index``. When a
    worker raises, or when every worker died, the pool calls ``coordinator.stop()``.
    """

    def __init__(self, coordinator: Any, factory: Callable[[int], tuple[Any, Any, Any]], workers: int,
                 sync: SyncConfig, address: str, *, start_method: str = "spawn", threads: int = 1,
                 first_index: int = 0) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"start_method: unknown {start_method!r}; known: "
                             f"{', '.join(multiprocessing.get_all_start_methods())}")
        context = multiprocessing.get_context(start_method)
        self.coordinator = coordinator
        self.states: list[_WorkerState] = []
        self.servers: list[threading.Thread] = []
        self._lock = threading.Lock()
        # Every process starts before any server thread: a forked child copies no running thread.
        try:
            for index in range(first_index, first_index + workers):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(target=_worker_main, name=f"rollout-{index}", daemon=True,
                                          args=(index, theirs, factory, sync, address, coordinator.config, threads))
                process.start()
                theirs.close()
                self.states.append(_WorkerState(index, process))
                self.servers.append(threading.Thread(target=_serve, name=f"serve-rollout-{index}", daemon=True,
                                                     args=(self.states[-1], mine, coordinator, self._on_exit)))
        except BaseException:
            for state in self.states:
                state.process.terminate()
                state.process.join(5.0)
            raise
        for server in self.servers:
            server.start()

    def _on_exit(self) -> None:
        with self._lock:
            failed = [s for s in self.states if s.outcome == "error"]
            alive = [s for s in self.states if s.outcome == "running"]
        if failed or (not alive and not self.coordinator.is_stopped()):
            self.coordinator.stop()

    def join(self, join_timeout_s: float = 30.0) -> None:
        """Waits for the workers (the caller has stopped the coordinator) and their server threads."""
        for state in self.states:
            state.process.join(join_timeout_s)
            if state.process.is_alive():
                state.process.terminate()
                state.process.join(5.0)
        for server in self.servers:
            server.join(join_timeout_s)

    def failure(self) -> str:
        """The error message of a pool whose workers failed ('' when none raised and some survived)."""
        return _failure(self.states)

    def summary(self) -> dict[str, Any]:
        """Per-worker timing, groups and outcome, and the names of the workers that died."""
        return {"workers": [dict(s.timing, groups=s.groups, name=s.name, outcome=s.outcome) for s in self.states],
                "dead_workers": [s.name for s in self.states if s.outcome == "died"]}


def run_processes(coordinator: Coordinator, publisher: Any, step: Callable[[list[RolloutGroup], int], dict],
                  steps: int, factory: Callable[[int], tuple[Any, Any, Any]], workers: int, sync: SyncConfig,
                  *, start_method: str = "spawn", threads: int = 1, join_timeout_s: float = 30.0,
                  on_step: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Runs ``workers`` rollout processes and the learner in this process (see the module docstring).

    ``factory(index) -> (generator, scorer, target)`` runs in each worker; ``target`` (a module or a
    name -> tensor mapping) receives the weights and must match ``publisher``'s layout. ``sync`` is
    the publisher's SyncConfig. ``threads``: torch threads per worker. ``on_step`` goes to
    :func:`~pangu_core.rl.scheduler.run_learner`. Returns what
    :func:`~pangu_core.rl.scheduler.run_threads` returns plus ``dead_workers`` (names of workers that
    died). RuntimeError when a worker raised, or when every worker died.
    """
    pool = WorkerPool(coordinator, factory, workers, sync, publisher.address, start_method=start_method,
                      threads=threads)
    error: BaseException | None = None
    history: list[dict] = []
    try:
        history = run_learner(coordinator, publisher, step, steps, on_step)
    except BaseException as caught:
        error = caught
    finally:
        coordinator.stop()
        pool.join(join_timeout_s)
    failure = pool.failure()
    if failure:
        raise RuntimeError(failure) from error
    if error is not None:
        raise error
    return {"history": history, **pool.summary(), **coordinator.stats()}


def _failure(states: Sequence[_WorkerState]) -> str:
    """The error message of a run whose workers failed ('' when none raised and some survived)."""
    failed = [s for s in states if s.outcome == "error"]
    if failed:
        return f"{failed[0].name} failed:\n{failed[0].error.rstrip()}"
    dead = [s for s in states if s.outcome == "died"]
    if states and len(dead) == len(states):
        codes = ", ".join(f"{s.name} (exit code {s.process.exitcode})" for s in dead)
        return f"every rollout worker died: {codes}"
    return ""
