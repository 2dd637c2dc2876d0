"""Prioritised data queue between RL rollout workers and the learner (C++ core, Python objects).

The learner takes the most useful finished samples first instead of the oldest; an age boost makes
sure nothing starves, a staleness bound keeps samples from too old a policy out, and a bounded
capacity with an overflow policy keeps memory in check. Items are arbitrary Python objects (the
queue holds one reference each and hands it over on ``get``).

Ordering: higher priority first; equal priorities leave oldest first. With an age boost ``alpha``
the order uses the *effective* priority::

    effective = priority + alpha * (current_version - item_version)

Adding ``alpha * current_version`` to every item never changes their relative order, so the C++
heap is keyed on the time-invariant ``priority - alpha * item_version``: advancing the policy
version is O(1) (O(n) only when it evicts stale items) and ``get`` stays O(log n).

Thread-safety: every method may be called from any thread. Blocking calls release the GIL while
they wait, so producer and consumer threads run in parallel with the rest of Python.

Example::

    from pangu_core.queue import PriorityQueue

    q = PriorityQueue(capacity=1024, overflow="drop_lowest", max_staleness=4, age_boost=0.05)
    q.put({"prompt": "2+2", "reward": 1.0}, priority=0.8, version=0)
    dropped = q.put_many(groups, priorities=[0.1, 0.9, 0.4])   # usually []
    batch = q.get_batch(32, timeout=1.0)                         # best first
    evicted = q.advance_version(5)                               # stale items come back
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import numpy as np

from pangu_core import _core
from pangu_core.config import Config, expect, expect_name, is_number
from pangu_core._core import QueueClosed, QueueFull

__all__ = [
    "OVERFLOW_POLICIES", "QueueConfig", "PriorityQueue", "QueueSnapshot", "QueueFull", "QueueClosed",
]

#: What a put does when the queue is at capacity.
#: ``block``: wait (up to ``timeout``, then TimeoutError) until a consumer makes room.
#: ``reject``: raise :class:`pangu_core.QueueFull` at once (``put_many`` is all or nothing).
#: ``drop_lowest``: remove the item that would come out last and hand it back from ``put``
#: (if the new item would itself come out last, the new item is handed back).
OVERFLOW_POLICIES = ("block", "reject", "drop_lowest")


@dataclasses.dataclass(frozen=True)
class QueueConfig(Config):
    """Construction settings of a :class:`PriorityQueue` (checked on construction, all problems at once)."""

    # Most items held at once; None for unbounded.
    capacity: int | None = None
    # What a put does at capacity: one of OVERFLOW_POLICIES ("block", "reject", "drop_lowest").
    overflow: str = "block"
    # s >= 0 makes items with version < current_version - s stale (evicted on advance_version,
    # handed back at put); None keeps every version.
    max_staleness: int | None = None
    # alpha >= 0: priority gained per policy version of age.
    age_boost: float = 0.0
    # The current policy version at construction.
    version: int = 0

    def validate(self) -> list[str]:
        problems: list[str] = []
        # Fields of the wrong type are reported by the type check; the rules skip them (is_number).
        expect(problems, self.capacity is None or (is_number(self.capacity) and self.capacity >= 1), "capacity",
               "None or an int >= 1", self.capacity)
        expect_name(problems, "overflow", self.overflow, OVERFLOW_POLICIES, "policy")
        expect(problems, self.max_staleness is None or (is_number(self.max_staleness) and self.max_staleness >= 0),
               "max_staleness", "None or an int >= 0", self.max_staleness)
        expect(problems, is_number(self.age_boost) and math.isfinite(self.age_boost) and self.age_boost >= 0,
               "age_boost", "a finite number >= 0", self.age_boost)
        return problems


def _plain_number(value: Any) -> Any:
    """numpy scalars as Python ints and floats (configs take only those); anything else unchanged."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class QueueSnapshot(NamedTuple):
    """Every queued item at one moment, aligned row by row, in no particular order.

    ``items`` (list) are the queued objects themselves (still queued: the snapshot only looks),
    ``ids`` (uint64) identify them for :meth:`PriorityQueue.update_priorities`, ``priorities``
    (float64) are the base priorities, ``versions`` (int64) the policy versions and ``effective``
    (float64) the priorities after the age boost.
    """

    items: list
    ids: np.ndarray
    priorities: np.ndarray
    versions: np.ndarray
    effective: np.ndarray


class PriorityQueue(_core.queue.PriorityQueue):
    """Thread-safe bounded priority queue of Python objects (see the module docstring).

    ``PriorityQueue(capacity=None, overflow="block", *, max_staleness=None, age_boost=0.0,
    version=0)`` or ``PriorityQueue.from_config(QueueConfig(...))``.

    The hot calls are the C++ methods themselves (no Python frame per item):

    - ``put(item, priority, version=None, timeout=None) -> list``: adds ``item``. ``version``
      None means the queue's current version; a version above it is a ValueError. Returns the items
      this put handed back (usually ``[]``): under ``drop_lowest`` the one pushed out, and the new
      item itself when it is already stale (counted as rejected). ``block`` waits up to ``timeout``
      seconds (None: forever; 0: not at all) and raises TimeoutError when it runs out; ``reject``
      raises :class:`QueueFull`; a closed queue raises :class:`QueueClosed`.
    - ``put_many(items, priorities, versions=None, timeout=None) -> list``: the same for a sequence;
      ``priorities`` and ``versions`` are a number or one value per item (list or numpy array).
      ``reject`` is all or nothing; ``block`` puts what fits and waits for room for the rest (if it
      then times out or the queue closes, the items already put stay; the message says how many).
    - ``get(timeout=None)``: the best item. Raises TimeoutError when the wait runs out and
      :class:`QueueClosed` once the queue is closed and empty.
    - ``get_batch(n, timeout=None, min_n=None) -> list``: up to ``n`` best items, best first, as
      soon as at least ``min_n`` (default 1) are queued. On timeout nothing is taken. After
      ``close()`` it returns what is left, then raises :class:`QueueClosed`.
    - ``advance_version(version) -> list``: sets the current policy version (never backwards) and
      returns the items that became stale.
    - ``close()``: wakes every waiter; producers then fail with :class:`QueueClosed`, consumers drain
      what is left first.
    - ``drain() -> list``: removes and returns every queued item, best first (not counted as got).
    - ``set_age_boost(alpha)``, ``len(q)``, and read-only ``capacity``, ``overflow``,
      ``max_staleness``, ``age_boost``, ``version``, ``closed``.
    """

    def __init__(
        self,
        capacity: int | None = None,
        overflow: str = "block",
        *,
        max_staleness: int | None = None,
        age_boost: float = 0.0,
        version: int = 0,
    ) -> None:
        config = QueueConfig(*(_plain_number(v) for v in (capacity, overflow, max_staleness, age_boost, version)))
        super().__init__(config.capacity, config.overflow, float(config.age_boost), config.max_staleness,
                         config.version)
        self._config = config

    @classmethod
    def from_config(cls, config: QueueConfig) -> "PriorityQueue":
        """A queue built from a :class:`QueueConfig`."""
        if not isinstance(config, QueueConfig):
            raise TypeError(f"config: expected a QueueConfig, got {type(config).__name__}")
        return cls(config.capacity, config.overflow, max_staleness=config.max_staleness,
                   age_boost=config.age_boost, version=config.version)

    @property
    def config(self) -> QueueConfig:
        """The settings this queue was built with (age_boost as at construction)."""
        return self._config

    def qsize(self) -> int:
        """Number of items queued now (a snapshot: other threads may change it at once)."""
        return len(self)

    def stats(self) -> dict[str, Any]:
        """Counters since construction.

        Keys: ``put`` (offered and not rejected, including a new item that drop_lowest refuses at
        once), ``got``, ``evicted`` (stale at advance_version), ``dropped`` (removed or refused by
        drop_lowest), ``rejected`` (reject policy when full, or stale at put), ``size``,
        ``capacity``, ``version``, ``producer_wait_s`` / ``consumer_wait_s`` (total seconds spent
        blocked), ``max_age_at_pop`` (largest current_version - item_version seen by a get),
        ``waiting_producers`` / ``waiting_consumers`` (threads blocked right now), ``closed``.
        Under every overflow policy put = got + evicted + dropped + size.
        """
        return dict(super().stats())

    def snapshot(self) -> QueueSnapshot:
        """Every queued item with its id, priority, version and effective priority (QueueSnapshot)."""
        raw = super().snapshot()
        return QueueSnapshot(raw["items"], raw["ids"], raw["priorities"], raw["versions"], raw["effective"])

    def update_priorities(self, ids: Any, priorities: Any) -> int:
        """Sets new base priorities for the items ``ids`` (from :meth:`snapshot`) in one C++ call.

        ``ids``: 1-D integer array-like; ``priorities``: 1-D finite numbers of the same length.
        Items taken since the snapshot are skipped. Returns how many items were updated.
        O(k log n) for few updates, one O(n) rebuild for many.
        """
        id_array = np.asarray(ids)
        if id_array.ndim != 1 or (id_array.size and id_array.dtype.kind not in "iu"):
            raise TypeError(f"ids: expected a 1-D array of integer ids, got dtype {id_array.dtype} "
                            f"and shape {id_array.shape}")
        if id_array.size and id_array.dtype.kind == "i" and int(id_array.min()) < 0:
            raise ValueError("ids: expected ids from snapshot() (non-negative), got a negative value")
        values = np.asarray(priorities)
        if values.ndim != 1 or values.shape[0] != id_array.shape[0]:
            raise ValueError(f"priorities: expected shape ({id_array.shape[0]},) like ids, got {values.shape}")
        if values.size and values.dtype.kind not in "fiu":
            raise TypeError(f"priorities: expected real numbers, got dtype {values.dtype}")
        return int(super().update_priorities(np.ascontiguousarray(id_array, dtype=np.uint64),
                                             np.ascontiguousarray(values, dtype=np.float64)))

    def reprioritize(self, fn: Callable[[QueueSnapshot], Any]) -> int:
        """Re-scores everything queued: ``fn(snapshot)`` returns one new priority per snapshot row.

        For example ``q.reprioritize(lambda s: [score(group) for group in s.items])``. Items taken
        while ``fn`` runs are skipped. Returns how many items were updated.
        """
        snap = self.snapshot()
        return self.update_priorities(snap.ids, fn(snap))

    def __repr__(self) -> str:
        return (f"PriorityQueue(size={len(self)}, capacity={self.capacity}, overflow={self.overflow!r}, "
                f"max_staleness={self.max_staleness}, age_boost={self.age_boost}, version={self.version}, "
                f"closed={self.closed})")
