"""The stale synchronous parallel (SSP) clock: how far rollout workers may run ahead, in C++."""

from __future__ import annotations

from pangu_core import _core

_sync = _core.sync


class SSPClock:
    """Stale synchronous parallel clock: per-worker clocks, the learner's version, bound s.

    Invariants: no live worker works more than ``staleness`` iterations ahead of the slowest
    (:meth:`tick` waits), and a reader at clock c gets a version >= c - s - 1
    (:meth:`wait_version` waits). Workers join and leave at run time; one silent for more than
    ``heartbeat_timeout_s`` (or declared dead) stops holding the others back. Every wait has a
    timeout and releases the GIL. Thread-safe.
    """

    def __init__(self, staleness: int, heartbeat_timeout_s: float | None = 30.0) -> None:
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            raise ValueError(f"staleness: expected an int >= 0, got {staleness!r}")
        if heartbeat_timeout_s is not None and (
            isinstance(heartbeat_timeout_s, bool) or not isinstance(heartbeat_timeout_s, (int, float))
            or heartbeat_timeout_s <= 0
        ):
            raise ValueError(f"heartbeat_timeout_s: expected None or a number > 0, got {heartbeat_timeout_s!r}")
        self._clock = _sync.SSPClock(staleness, -1.0 if heartbeat_timeout_s is None else float(heartbeat_timeout_s))

    @property
    def staleness(self) -> int:
        """The bound s: iterations a worker may run ahead of the slowest live one."""
        return int(self._clock.staleness)

    @property
    def version(self) -> int:
        """The learner's newest version (0 = initial weights)."""
        return int(self._clock.version)

    @staticmethod
    def _id(worker_id: int) -> int:
        if isinstance(worker_id, bool) or not isinstance(worker_id, int) or worker_id < 0:
            raise ValueError(f"worker_id: expected an int >= 0, got {worker_id!r}")
        return worker_id

    @staticmethod
    def _timeout(timeout_s: float | None) -> float:
        if timeout_s is None:
            return -1.0
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s < 0:
            raise ValueError(f"timeout_s: expected None (wait forever) or a number >= 0, got {timeout_s!r}")
        return float(timeout_s)

    def join(self, worker_id: int) -> int:
        """Adds a worker at the slowest live clock; returns its clock."""
        return int(self._clock.join(self._id(worker_id)))

    def leave(self, worker_id: int) -> None:
        """Removes a worker that finished; it no longer holds the others back."""
        self._clock.leave(self._id(worker_id))

    def declare_dead(self, worker_id: int) -> bool:
        """Removes a worker so it stops holding others back; False if it was not live."""
        return bool(self._clock.declare_dead(self._id(worker_id)))

    def heartbeat(self, worker_id: int) -> None:
        """Marks the worker alive now (resets its heartbeat timeout)."""
        self._clock.heartbeat(self._id(worker_id))

    def reap(self) -> list[int]:
        """Declares dead the workers whose heartbeat expired; returns their ids."""
        return list(self._clock.reap())

    def tick(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Counts the worker's finished iteration, then waits while it is more than s ahead of the
        slowest live worker; returns its clock. On TimeoutError the iteration still counts."""
        return int(self._clock.tick(self._id(worker_id), self._timeout(timeout_s)))

    def wait_turn(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Waits (without counting an iteration) until the worker is within s of the slowest."""
        return int(self._clock.wait_turn(self._id(worker_id), self._timeout(timeout_s)))

    def wait_version(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Waits until the learner's version >= clock - s - 1; returns the learner's version."""
        return int(self._clock.wait_version(self._id(worker_id), self._timeout(timeout_s)))

    def publish(self, version: int) -> None:
        """The learner: sets its version (never decreasing) and wakes waiting readers."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"version: expected an int, got {type(version).__name__}")
        self._clock.publish(version)

    def clock(self, worker_id: int) -> int:
        """The worker's clock: iterations it has finished."""
        return int(self._clock.clock(self._id(worker_id)))

    def min_clock(self) -> int:
        """The slowest live worker's clock (-1 when none is live)."""
        return int(self._clock.min_clock())

    def live_workers(self) -> list[int]:
        """Ids of the workers that joined and have not left or died."""
        return list(self._clock.live_workers())

    def dead_workers(self) -> list[int]:
        """Ids of the workers declared dead (by reap or declare_dead)."""
        return list(self._clock.dead_workers())

    def close(self) -> None:
        """Wakes every waiter with pangu_core.QueueClosed; later calls fail the same way."""
        self._clock.close()


__all__ = ["SSPClock"]
