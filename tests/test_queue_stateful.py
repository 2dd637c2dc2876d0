"""The priority queue against a plain Python reference model (hypothesis stateful testing)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pangu_core
from pangu_core.queue import PriorityQueue

PRIORITIES = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0])  # few values: many ties


class Model:
    """The queue's documented behaviour, written as plainly as possible (lists and max/min)."""

    def __init__(self, capacity, overflow, max_staleness, age_boost):
        self.capacity, self.overflow, self.max_staleness = capacity, overflow, max_staleness
        self.age_boost = age_boost
        self.version = 0
        self.closed = False
        self.rows = []  # dicts: item, priority, version, seq
        self.seq = itertools.count()
        self.counts = dict(put=0, got=0, evicted=0, dropped=0, rejected=0)

    def key(self, row):
        return row["priority"] - self.age_boost * row["version"]

    def order(self, row):  # larger comes out first
        return (self.key(row), -row["seq"])

    def stale(self, version):
        return self.max_staleness is not None and version < self.version - self.max_staleness

    def full(self):
        return self.capacity is not None and len(self.rows) >= self.capacity

    def insert(self, item, priority, version):
        """One item with room available (or drop_lowest); returns what is handed back."""
        if self.stale(version):
            self.counts["rejected"] += 1
            return [item]
        self.counts["put"] += 1
        if self.full():
            self.counts["dropped"] += 1
            worst = min(self.rows, key=self.order)
            if priority - self.age_boost * version <= self.key(worst):
                return [item]
            self.rows.remove(worst)
            handed = [worst["item"]]
        else:
            handed = []
        self.rows.append(dict(item=item, priority=priority, version=version, seq=next(self.seq)))
        return handed

    def put(self, item, priority, version):
        if self.closed:
            raise pangu_core.QueueClosed
        if version > self.version:
            raise ValueError
        if self.full() and not self.stale(version):
            if self.overflow == "reject":
                self.counts["rejected"] += 1
                raise pangu_core.QueueFull
            if self.overflow == "block":
                raise TimeoutError
        return self.insert(item, priority, version)

    def put_many(self, items, priorities, versions):
        if self.closed:
            raise pangu_core.QueueClosed
        if any(v > self.version for v in versions):
            raise ValueError
        if self.overflow == "reject":
            fresh = sum(not self.stale(v) for v in versions)
            if self.capacity is not None and len(self.rows) + fresh > self.capacity:
                self.counts["rejected"] += fresh
                raise pangu_core.QueueFull
        handed = []
        for item, priority, version in zip(items, priorities, versions):
            if self.overflow == "block" and self.full() and not self.stale(version):
                raise TimeoutError
            handed += self.insert(item, priority, version)
        return handed

    def pop(self):
        best = max(self.rows, key=self.order)
        self.rows.remove(best)
        self.counts["got"] += 1
        return best["item"]

    def get_batch(self, n, min_n):
        if len(self.rows) < min_n and not self.closed:
            if self.capacity is not None and min_n > self.capacity:
                raise ValueError
            raise TimeoutError
        if not self.rows:
            raise pangu_core.QueueClosed
        return [self.pop() for _ in range(min(n, len(self.rows)))]

    def advance_version(self, version):
        if version < self.version:
            raise ValueError
        self.version = version
        evicted = [r["item"] for r in self.rows if self.stale(r["version"])]
        self.rows = [r for r in self.rows if not self.stale(r["version"])]
        self.counts["evicted"] += len(evicted)
        return evicted


def outcome(fn, *args):
    """("ok", value) or ("error", exception class), so queue and model compare the same way."""
    try:
        return ("ok", fn(*args))
    except (ValueError, TimeoutError, pangu_core.QueueFull, pangu_core.QueueClosed) as error:
        for cls in (pangu_core.QueueFull, pangu_core.QueueClosed, TimeoutError, ValueError):
            if isinstance(error, cls):
                return ("error", cls)
        raise


def make_machine(capacity, overflow, max_staleness, age_boost):
    class QueueMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.queue = PriorityQueue(capacity, overflow, max_staleness=max_staleness, age_boost=age_boost)
            self.model = Model(capacity, overflow, max_staleness, age_boost)
            self.names = itertools.count()

        def version_for(self, lag):
            return max(0, self.model.version - lag)

        @rule(priority=PRIORITIES, lag=st.integers(0, 4), future=st.booleans())
        def put(self, priority, lag, future):
            version = self.model.version + 1 if future and lag == 4 else self.version_for(lag)
            item = f"i{next(self.names)}"
            got = outcome(lambda: self.queue.put(item, priority, version=version, timeout=0))
            want = outcome(self.model.put, item, priority, version)
            assert got == want

        @rule(priorities=st.lists(PRIORITIES, max_size=6), lags=st.lists(st.integers(0, 4), min_size=6, max_size=6))
        def put_many(self, priorities, lags):
            items = [f"i{next(self.names)}" for _ in priorities]
            versions = [self.version_for(lag) for lag in lags[: len(items)]]
            got = outcome(lambda: self.queue.put_many(items, priorities, versions=versions, timeout=0))
            want = outcome(self.model.put_many, items, priorities, versions)
            assert got == want

        @rule(n=st.integers(1, 5), extra=st.integers(0, 4))
        def get_batch(self, n, extra):
            min_n = min(n, 1 + extra)
            got = outcome(lambda: self.queue.get_batch(n, timeout=0, min_n=min_n))
            want = outcome(self.model.get_batch, n, min_n)
            assert got == want

        @rule()
        def get(self):
            got = outcome(lambda: self.queue.get(timeout=0))
            want = outcome(lambda: self.model.get_batch(1, 1)[0])
            assert got == want

        @rule(step=st.integers(-1, 3))
        def advance_version(self, step):
            version = self.model.version + step
            got = outcome(self.queue.advance_version, version)
            want = outcome(self.model.advance_version, version)
            if got[0] == "ok" and want[0] == "ok":
                got, want = sorted(got[1]), sorted(want[1])
            assert got == want

        @rule(data=st.data())
        def reprioritize(self, data):
            snap = self.queue.snapshot()
            assert sorted(snap.items) == sorted(r["item"] for r in self.model.rows)
            if not snap.items:
                return
            rows = data.draw(st.lists(st.integers(0, len(snap.items) - 1), unique=True, max_size=len(snap.items)))
            new = data.draw(st.lists(PRIORITIES, min_size=len(rows), max_size=len(rows)))
            assert self.queue.update_priorities(snap.ids[rows], new) == len(rows)
            by_item = {r["item"]: r for r in self.model.rows}
            for row, priority in zip(rows, new):
                by_item[snap.items[row]]["priority"] = priority

        @rule(alpha=st.sampled_from([0.0, 0.5, 1.0]))
        def set_age_boost(self, alpha):
            self.queue.set_age_boost(alpha)
            self.model.age_boost = alpha

        @precondition(lambda self: not self.model.closed)
        @rule(when=st.integers(0, 9))
        def close(self, when):
            if when == 0:  # rarely, so most runs explore the open queue
                self.queue.close()
                self.model.closed = True

        @invariant()
        def same_state(self):
            stats = self.queue.stats()
            assert stats["size"] == len(self.model.rows) == len(self.queue)
            assert {k: stats[k] for k in self.model.counts} == self.model.counts
            # The ledger, under every overflow policy.
            assert stats["put"] == stats["got"] + stats["evicted"] + stats["dropped"] + stats["size"]
            assert stats["version"] == self.model.version and stats["closed"] == self.model.closed

        def teardown(self):
            model_order = [r["item"] for r in sorted(self.model.rows, key=self.model.order, reverse=True)]
            assert self.queue.drain() == model_order

    return QueueMachine


# Every policy, with and without staleness and age boost, follows the reference model exactly:
# same items out, same order (ties oldest first), same items handed back, same errors, same counts.
@pytest.mark.parametrize("capacity, overflow, max_staleness, age_boost", [
    (4, "block", 2, 0.0),
    (6, "reject", None, 0.5),
    (5, "drop_lowest", 1, 1.0),
    (None, "block", 3, 0.25),
    (3, "drop_lowest", None, 0.0),
])
def test_queue_matches_model(capacity, overflow, max_staleness, age_boost):
    machine = make_machine(capacity, overflow, max_staleness, age_boost)
    machine.TestCase.settings = settings(
        max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck))
    machine.TestCase().runTest()
