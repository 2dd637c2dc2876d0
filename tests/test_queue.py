"""Priority data queue: ordering, ties, overflow policies, staleness, age boost, bulk updates, errors."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import pangu_core
from pangu_core.config import ConfigError
from pangu_core.queue import PriorityQueue, QueueConfig, QueueSnapshot


def drain_all(q: PriorityQueue) -> list:
    out = []
    while len(q):
        out.append(q.get(timeout=0))
    return out


# Higher priority leaves first; equal priorities leave in insertion order.
def test_order_by_priority_then_insertion():
    q = PriorityQueue()
    for name, priority in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 3.0), ("e", 1.0), ("f", -5.0)]:
        assert q.put(name, priority) == []
    assert drain_all(q) == ["b", "d", "c", "a", "e", "f"]


# get_batch returns the top n, best first, and leaves the rest in order.
def test_get_batch_top_n():
    q = PriorityQueue()
    q.put_many(list(range(10)), [float(i % 5) for i in range(10)])
    assert q.get_batch(4) == [4, 9, 3, 8]
    assert q.get_batch(100) == [2, 7, 1, 6, 0, 5]


# put_many accepts one number for all, lists and numpy arrays of any real dtype.
def test_put_many_priority_forms():
    q = PriorityQueue()
    q.put_many(["x", "y"], 1.0)
    q.put_many(["z"], np.array([5], dtype=np.int32))
    q.put_many(("w",), [2.5])
    q.put_many([], [])
    assert q.get_batch(10) == ["z", "w", "x", "y"]


# Items are arbitrary objects and come back as the very same objects (no copies).
def test_arbitrary_objects_identity():
    q = PriorityQueue()
    items = [None, {"a": [1, 2]}, object(), "s", 3, (1,), lambda: 1]
    for i, item in enumerate(items):
        q.put(item, float(-i))
    got = q.get_batch(len(items))
    assert all(a is b for a, b in zip(got, items))


# The age boost: effective = priority + alpha * (current_version - version).
def test_age_boost_effective_priority():
    q = PriorityQueue(age_boost=0.5, version=0)
    q.put("old", 1.0)                # effective after 4 versions: 1 + 2 = 3
    q.advance_version(4)
    q.put("new_high", 2.5)           # effective 2.5
    q.put("new_higher", 3.5)         # effective 3.5
    snap = q.snapshot()
    by_priority = dict(zip(snap.priorities.tolist(), snap.effective.tolist()))
    assert by_priority == {1.0: 3.0, 2.5: 2.5, 3.5: 3.5}
    assert q.get_batch(3) == ["new_higher", "old", "new_high"]
    assert q.stats()["max_age_at_pop"] == 4


# Ties on the effective priority (old boosted item vs new one) go to the older item.
def test_age_boost_tie_goes_to_older():
    q = PriorityQueue(age_boost=1.0)
    q.put("old", 1.0)
    q.advance_version(2)
    q.put("new", 3.0)
    assert q.get_batch(2) == ["old", "new"]


# A constant stream of higher-priority items cannot starve a low one when the age boost is on.
def test_age_boost_prevents_starvation():
    def rounds_until_served(age_boost: float, rounds: int = 200) -> int | None:
        q = PriorityQueue(age_boost=age_boost)
        q.put("low", 0.0)
        for version in range(1, rounds + 1):
            q.advance_version(version)
            q.put_many([f"high{version}-{i}" for i in range(3)], 1.0)
            if "low" in q.get_batch(2):
                return version
        return None

    assert rounds_until_served(0.0) is None
    served = rounds_until_served(0.1)
    assert served is not None and served <= 15


# reject: put raises QueueFull when full; put_many is all or nothing.
def test_overflow_reject():
    q = PriorityQueue(capacity=3, overflow="reject")
    q.put_many(["a", "b"], [1.0, 2.0])
    with pytest.raises(pangu_core.QueueFull, match="all|none"):
        q.put_many(["c", "d"], [1.0, 1.0])
    assert len(q) == 2
    q.put("c", 0.0)
    with pytest.raises(pangu_core.QueueFull, match="capacity 3"):
        q.put("d", 9.0)
    assert q.stats()["rejected"] == 3
    assert q.get_batch(5) == ["b", "a", "c"]


# drop_lowest: the lowest (newest on ties) is pushed out and handed back; an incoming item that
# would come out last is handed back itself.
def test_overflow_drop_lowest():
    q = PriorityQueue(capacity=3, overflow="drop_lowest")
    q.put_many(["a", "b", "c"], [1.0, 2.0, 1.0])
    assert q.put("d", 5.0) == ["c"]
    assert q.put("e", 1.0) == ["e"]          # equal to the lowest but newer: it is the last one
    assert q.put("f", 0.5) == ["f"]
    assert q.put_many(["g", "h"], [3.0, 4.0]) == ["a", "b"]
    assert q.stats()["dropped"] == 5
    assert q.get_batch(3) == ["d", "h", "g"]
    stats = q.stats()                        # e and f were refused at once: still put, and dropped
    assert (stats["put"], stats["got"], stats["dropped"], stats["size"]) == (8, 3, 5, 0)


# put = got + evicted + dropped + size under every overflow policy; offered = put + rejected.
@pytest.mark.parametrize("overflow", ["block", "reject", "drop_lowest"])
def test_stats_ledger_every_overflow(overflow):
    q = PriorityQueue(capacity=3, overflow=overflow, max_staleness=1)
    rng = np.random.default_rng(0)
    offered = 0
    for round_ in range(40):
        for _ in range(int(rng.integers(1, 5))):
            version = int(rng.integers(max(0, q.version - 3), q.version + 1))
            try:
                q.put(round_, float(rng.random()), version=version, timeout=0.001)
                offered += 1
            except pangu_core.QueueFull:
                offered += 1
            except TimeoutError:     # block: full, nothing counted
                pass
        if rng.random() < 0.5 and len(q):
            q.get_batch(int(rng.integers(1, 3)), timeout=0.001)
        if rng.random() < 0.3:
            q.advance_version(q.version + 1)
        stats = q.stats()
        assert stats["put"] == stats["got"] + stats["evicted"] + stats["dropped"] + stats["size"]
        assert offered == stats["put"] + stats["rejected"]


# block: a full queue times out (TimeoutError) and timeout=0 does not wait at all.
def test_overflow_block_timeout():
    q = PriorityQueue(capacity=1)
    q.put("a", 1.0)
    with pytest.raises(TimeoutError, match="timeout is 0"):
        q.put("b", 1.0, timeout=0)
    with pytest.raises(TimeoutError, match="timed out"):
        q.put("b", 1.0, timeout=0.05)
    assert q.get() == "a"
    with pytest.raises(TimeoutError, match="1 of 3"):
        q.put_many(["b", "c", "d"], 1.0, timeout=0.05)
    assert q.get_batch(5) == ["b"]
    assert q.stats()["producer_wait_s"] >= 0.05


# get/get_batch time out on an empty queue; get_batch with min_n takes nothing on timeout.
def test_get_timeouts():
    q = PriorityQueue()
    with pytest.raises(TimeoutError):
        q.get(timeout=0)
    with pytest.raises(TimeoutError, match="timed out"):
        q.get(timeout=0.02)
    q.put("a", 1.0)
    with pytest.raises(TimeoutError, match="min_n"):
        q.get_batch(5, timeout=0.02, min_n=2)
    assert len(q) == 1
    assert q.stats()["consumer_wait_s"] >= 0.04


# Staleness: advancing the version evicts and hands back stale items; a stale put is handed back.
def test_staleness_eviction():
    q = PriorityQueue(max_staleness=2)
    q.put("v0", 5.0, version=0)
    q.advance_version(1)
    q.put("v1", 1.0)
    q.advance_version(2)
    q.put("v2", 0.5)
    assert q.advance_version(2) == []
    assert q.advance_version(3) == ["v0"]
    assert q.put("late_v0", 9.0, version=0) == ["late_v0"]
    assert q.put_many(["ok", "late"], [1.0, 1.0], versions=[3, 0]) == ["late"]
    assert sorted(q.advance_version(10)) == ["ok", "v1", "v2"]
    stats = q.stats()
    assert (stats["evicted"], stats["rejected"], stats["size"]) == (4, 2, 0)


# Items from a future version are refused: the learner advances the queue before publishing.
def test_future_version_refused():
    q = PriorityQueue(version=3)
    with pytest.raises(ValueError, match="version: expected <= the queue's current version 3"):
        q.put("x", 1.0, version=4)
    with pytest.raises(ValueError, match=r"versions\[1\]"):
        q.put_many(["x", "y"], 1.0, versions=[3, 4])
    with pytest.raises(ValueError, match="never go back"):
        q.advance_version(2)
    assert len(q) == 0


# Bulk re-prioritisation through snapshot ids re-orders the queue; ids of taken items are skipped.
@pytest.mark.parametrize("n", [5, 200])  # few updates (per-item re-key) and many (rebuild)
def test_update_priorities(n):
    q = PriorityQueue(capacity=n, overflow="drop_lowest")
    q.put_many(list(range(n)), np.arange(n, dtype=np.float64))
    snap = q.snapshot()
    assert isinstance(snap, QueueSnapshot) and len(snap.ids) == n
    taken = q.get()
    assert taken == n - 1
    new = -snap.priorities  # reverse the order
    assert q.update_priorities(snap.ids, new) == n - 1
    assert q.get_batch(n) == list(range(n - 1))
    # The worst-first side follows the update too: dropping now removes the new lowest.
    q.put_many(list(range(n)), np.arange(n, dtype=np.float64))
    q.reprioritize(lambda s: -s.priorities)
    assert q.put("top", 1e9) == [n - 1]


# close(): producers fail, consumers drain what is left and then get QueueClosed.
def test_close_drains_then_raises():
    q = PriorityQueue()
    q.put_many(["a", "b", "c"], [1.0, 3.0, 2.0])
    q.close()
    assert q.closed
    with pytest.raises(pangu_core.QueueClosed):
        q.put("x", 1.0)
    with pytest.raises(pangu_core.QueueClosed):
        q.put_many(["x"], 1.0)
    assert q.get() == "b"
    assert q.get_batch(10, min_n=5) == ["c", "a"]
    with pytest.raises(pangu_core.QueueClosed):
        q.get()
    with pytest.raises(pangu_core.QueueClosed):
        q.get_batch(2)


# stats counts every path.
def test_stats_counts():
    q = PriorityQueue(capacity=2, overflow="drop_lowest", max_staleness=0)
    q.put("a", 1.0)
    q.put("b", 2.0)
    q.put("c", 3.0)          # drops a
    q.get()
    q.advance_version(1)     # evicts b (version 0 < 1 - 0)
    stats = q.stats()
    assert {k: stats[k] for k in ("put", "got", "dropped", "evicted", "rejected", "size")} == {
        "put": 3, "got": 1, "dropped": 1, "evicted": 1, "rejected": 0, "size": 0}
    assert stats["capacity"] == 2 and stats["version"] == 1 and stats["closed"] is False


# The queue owns exactly one reference per queued item, in every path (put/get, batches, handed
# back, evicted, closed with items left, garbage-collected with items left), over 1M put/get.
def test_no_reference_leak():
    sentinel = object()
    before = sys.getrefcount(sentinel)
    q = PriorityQueue(capacity=64, overflow="drop_lowest", max_staleness=1)
    for _ in range(2_000):
        q.put_many([sentinel] * 500, np.random.rand(500))   # most are dropped and handed back
        q.get_batch(200)
    q.put(sentinel, 1.0)
    q.advance_version(5)
    for _ in range(300_000):
        q.put(sentinel, 0.5)
        q.get()
    q.put_many([sentinel] * 10, 1.0, versions=0)   # stale now: handed back
    with pytest.raises(pangu_core.QueueFull):
        PriorityQueue(capacity=1, overflow="reject").put_many([sentinel] * 2, 1.0)
    q.put_many([sentinel] * 10, 1.0)
    assert sys.getrefcount(sentinel) == before + 10
    del q
    gc.collect()
    assert sys.getrefcount(sentinel) == before


# Memory stays flat over 1M put/get of fresh objects: nothing retained by the queue.
def test_no_memory_growth():
    import tracemalloc

    q = PriorityQueue()
    def churn(n: int) -> None:
        for i in range(n // 1000):
            q.put_many([[i, j] for j in range(1000)], 0.5)
            q.get_batch(1000)

    churn(100_000)
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    churn(500_000)
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert end - start < 256 * 1024


# Every bad argument names itself and what was expected.
@pytest.mark.parametrize("call, error, pattern", [
    (lambda q: q.put("x", "high"), TypeError, "priority: expected a number, got str"),
    (lambda q: q.put("x", float("nan")), ValueError, "priority: expected a finite number"),
    (lambda q: q.put("x", float("inf")), ValueError, "priority: expected a finite number"),
    (lambda q: q.put("x", 1.0, version=1.5), TypeError, "version: expected an int, got float"),
    (lambda q: q.put("x", 1.0, version=True), TypeError, "version: expected an int, got bool"),
    (lambda q: q.put("x", 1.0, timeout=-1), ValueError, "timeout: expected None or a number of seconds >= 0"),
    (lambda q: q.put("x", 1.0, timeout="1"), TypeError, "timeout: expected a number, got str"),
    (lambda q: q.put_many("abc", 1.0), TypeError, "items: expected a sequence"),
    (lambda q: q.put_many(["a", "b"], [1.0]), ValueError, r"priorities: expected one value per item \(shape \(2,\)\)"),
    (lambda q: q.put_many(["a"], ["x"]), TypeError, "priorities: expected real numbers, got str at index 0"),
    (lambda q: q.put_many(["a"], [None]), TypeError, "priorities: expected a number, got NoneType"),
    (lambda q: q.put_many(["a"], np.array(["x"])), TypeError, "priorities: expected real numbers, got an array"),
    (lambda q: q.put_many(["a"], np.ones((1, 1))), ValueError, r"priorities: expected one value per item"),
    (lambda q: q.put_many(["a"], [np.nan]), ValueError, r"priorities\[0\]: expected a finite number"),
    (lambda q: q.put_many(["a"], 1.0, versions=[0.5]), TypeError, "versions: expected integers"),
    (lambda q: q.put_many(["a"], 1.0, versions=[0, 0]), ValueError, "versions: expected one version per item"),
    (lambda q: q.get(timeout=float("nan")), ValueError, "timeout"),
    (lambda q: q.get_batch(0), ValueError, "n: expected an int >= 1"),
    (lambda q: q.get_batch(2, min_n=3), ValueError, r"min_n: expected an integer in \[1, n=2\]"),
    (lambda q: q.get_batch(20, timeout=1, min_n=20), ValueError, "min_n: expected <= capacity 8"),
    (lambda q: q.advance_version("1"), TypeError, "version: expected an int"),
    (lambda q: q.update_priorities([1.5], [1.0]), TypeError, "ids: expected a 1-D array of integer ids"),
    (lambda q: q.update_priorities([1], [1.0, 2.0]), ValueError, r"priorities: expected shape \(1,\)"),
    (lambda q: q.update_priorities([-1], [1.0]), ValueError, "ids: expected ids from snapshot"),
    (lambda q: q.update_priorities([1], [np.inf]), ValueError, r"priorities\[0\]: expected a finite number"),
    (lambda q: q.set_age_boost(-1.0), ValueError, "age_boost: expected a finite number >= 0"),
])
def test_bad_arguments(call, error, pattern):
    q = PriorityQueue(capacity=8)
    with pytest.raises(error, match=pattern):
        call(q)
    assert len(q) == 0


# Config problems are all reported at once; unknown policy names list the known ones.
def test_config_validation():
    with pytest.raises(ValueError) as info:
        QueueConfig(capacity=0, overflow="fifo", max_staleness=-1, age_boost=float("nan"), version=1.5)
    message = str(info.value)
    for part in ("capacity: expected None or an int >= 1", "overflow: unknown policy 'fifo'; known: block, "
                 "reject, drop_lowest", "max_staleness", "age_boost", "version: expected an int"):
        assert part in message
    with pytest.raises(ValueError, match="overflow: unknown policy"):
        PriorityQueue(4, "lifo")
    with pytest.raises(ConfigError, match="colour: unknown key; known: capacity, overflow, max_staleness"):
        QueueConfig.from_dict({"capacity": 3, "colour": "red"})
    with pytest.raises(ConfigError, match="capacity: expected an int or null, got 2.5"):
        PriorityQueue(capacity=2.5)
    with pytest.raises(TypeError, match="config: expected a QueueConfig"):
        PriorityQueue.from_config({"capacity": 3})


# A config loads from YAML and builds the queue it describes.
def test_config_from_yaml(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("capacity: 16\noverflow: drop_lowest\nmax_staleness: 2\nage_boost: 0.25\nversion: 7\n")
    q = PriorityQueue.from_config(QueueConfig.from_yaml(path))
    assert (q.capacity, q.overflow, q.max_staleness, q.age_boost, q.version) == (16, "drop_lowest", 2, 0.25, 7)
    assert q.config == QueueConfig(16, "drop_lowest", 2, 0.25, 7)
    assert "capacity=16" in repr(q)


# A config written out and read back is the same config; numpy scalars are taken as plain numbers.
def test_config_round_trip(tmp_path):
    config = QueueConfig(capacity=8, overflow="reject", max_staleness=None, age_boost=0.5, version=3)
    assert QueueConfig.from_dict(config.to_dict()) == config
    config.to_yaml(tmp_path / "queue.yaml")
    assert QueueConfig.from_yaml(tmp_path / "queue.yaml") == config
    q = PriorityQueue(np.int64(8), "reject", max_staleness=np.int32(2), age_boost=np.float32(0.5), version=np.int64(3))
    assert q.config == QueueConfig(8, "reject", 2, 0.5, 3)


# Changing the age boost re-keys what is already queued.
def test_set_age_boost_rekeys():
    q = PriorityQueue()
    q.put("old", 1.0)
    q.advance_version(10)
    q.put("new", 2.0)
    q.set_age_boost(0.5)
    assert q.age_boost == 0.5
    assert q.get_batch(2) == ["old", "new"]


# drain() empties the queue best first without counting gets.
def test_drain():
    q = PriorityQueue()
    q.put_many(["a", "b"], [1.0, 2.0])
    assert q.drain() == ["b", "a"]
    assert len(q) == 0 and q.stats()["got"] == 0


# The native loop behind `bench queue core_native` runs and refuses a size it cannot measure.
def test_native_loop_entry_point():
    from pangu_core import _core

    wall, cpu = _core.queue.push_pop_loop(10_000, 100, 0.01, 3)
    assert wall > 0 and cpu >= 0
    with pytest.raises(ValueError, match="ops: expected an integer >= 2"):
        _core.queue.push_pop_loop(1, 10)
