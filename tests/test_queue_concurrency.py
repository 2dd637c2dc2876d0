"""Priority queue under concurrency: stress with checksums, blocked waiters and close, GIL release.

Marked ``sanitize``: `make sanitize` runs these under ThreadSanitizer (smaller sizes there).
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

import pangu_core
from pangu_core.queue import PriorityQueue

pytestmark = pytest.mark.sanitize

SANITIZED = pangu_core.build_info()["sanitizer"] != ""


def run_threads(targets: list) -> list:
    """Runs callables in threads; returns their exceptions (None for those that finished)."""
    errors: list = [None] * len(targets)

    def wrap(i, fn):
        try:
            fn()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            errors[i] = error

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a queue thread hung"
    return errors


# 4 producers x 4 consumers, bounded (producers block), per-item and batched calls mixed, a thread
# advancing the version under an age boost: every item comes out exactly once (count, sum, set).
def test_stress_4x4_nothing_lost_nothing_duplicated():
    per_producer = 20_000 if SANITIZED else 200_000
    producers, consumers = 4, 4
    q = PriorityQueue(capacity=4096, overflow="block", age_boost=0.01)
    received: list[list[int]] = [[] for _ in range(consumers)]
    producers_done = threading.Event()

    def produce(p: int) -> None:
        rng = random.Random(p)
        base = p * per_producer
        i = 0
        while i < per_producer:
            if rng.random() < 0.05:  # some single puts between the batches
                q.put(base + i, rng.random(), timeout=30)
                i += 1
                continue
            n = min(rng.randint(1, 1500), per_producer - i)
            q.put_many(list(range(base + i, base + i + n)), np.random.default_rng(base + i).random(n), timeout=30)
            i += n

    def consume(c: int) -> None:
        rng = random.Random(100 + c)
        out = received[c]
        while True:
            try:
                if rng.random() < 0.05:
                    out.append(q.get(timeout=30))
                else:
                    out.extend(q.get_batch(rng.randint(1, 1000), timeout=30))
            except pangu_core.QueueClosed:
                return

    def advance() -> None:
        version = 0
        while not producers_done.is_set():
            version += 1
            assert q.advance_version(version) == []
            time.sleep(0.001)

    def producers_then_close() -> None:
        errors = run_threads([lambda p=p: produce(p) for p in range(producers)])
        producers_done.set()
        q.close()
        for error in errors:
            if error is not None:
                raise error

    errors = run_threads([producers_then_close, advance] + [lambda c=c: consume(c) for c in range(consumers)])
    assert errors == [None] * len(errors)
    total = producers * per_producer
    everything = np.concatenate([np.asarray(r, dtype=np.int64) for r in received])
    assert everything.size == total
    assert int(everything.sum()) == total * (total - 1) // 2
    assert np.array_equal(np.sort(everything), np.arange(total))
    stats = q.stats()
    assert (stats["put"], stats["got"], stats["size"]) == (total, total, 0)


# drop_lowest and staleness under concurrency: every item is accounted for exactly once, either
# taken by a consumer, handed back to its producer, or evicted by a version advance.
def test_stress_drop_and_evict_accounting():
    per_producer = 5_000 if SANITIZED else 50_000
    q = PriorityQueue(capacity=512, overflow="drop_lowest", max_staleness=2)
    taken: list[list] = [[] for _ in range(2)]
    handed: list[list] = [[] for _ in range(2)]
    evicted: list = []
    done = threading.Event()

    def produce(p: int) -> None:
        rng = np.random.default_rng(p)
        for start in range(0, per_producer, 250):
            items = list(range(p * per_producer + start, p * per_producer + start + 250))
            version = max(0, q.version - int(rng.integers(0, 4)))
            handed[p].extend(q.put_many(items, rng.random(250), versions=version))

    def consume(c: int) -> None:
        while True:
            try:
                taken[c].extend(q.get_batch(64, timeout=30))
            except pangu_core.QueueClosed:
                return

    def advance() -> None:
        version = 0
        while not done.is_set():
            version += 1
            evicted.extend(q.advance_version(version))
            time.sleep(0.0005)

    def producers_then_close() -> None:
        errors = run_threads([lambda p=p: produce(p) for p in range(2)])
        done.set()
        q.close()
        for error in errors:
            if error is not None:
                raise error

    errors = run_threads([producers_then_close, advance] + [lambda c=c: consume(c) for c in range(2)])
    assert errors == [None] * len(errors)
    everything = sorted(sum(taken, []) + sum(handed, []) + evicted)
    assert everything == list(range(2 * per_producer))
    stats = q.stats()
    assert stats["got"] == sum(map(len, taken))
    assert stats["dropped"] + stats["rejected"] == sum(map(len, handed))
    assert stats["evicted"] == len(evicted)


# close() wakes blocked producers (QueueClosed) and blocked consumers (drain, then QueueClosed).
def test_close_wakes_blocked_producers_and_consumers():
    full = PriorityQueue(capacity=2)
    full.put_many(["a", "b"], 1.0)
    empty = PriorityQueue()
    started = threading.Barrier(5)

    def blocked_put():
        started.wait()
        full.put("c", 1.0)

    def blocked_put_many():
        started.wait()
        full.put_many(["d", "e"], 1.0)

    def blocked_get():
        started.wait()
        empty.get()

    def blocked_batch():
        started.wait()
        empty.get_batch(4, min_n=4)

    def closer():
        started.wait()
        deadline = time.monotonic() + 30
        while (full.stats()["waiting_producers"], empty.stats()["waiting_consumers"]) != (2, 2):
            assert time.monotonic() < deadline, "the waiters never blocked"
            time.sleep(0.01)
        full.close()
        empty.close()

    errors = run_threads([blocked_put, blocked_put_many, blocked_get, blocked_batch, closer])
    assert [type(e) for e in errors] == [pangu_core.QueueClosed] * 4 + [type(None)]
    assert full.get_batch(5) == ["a", "b"]  # consumers still drain what was left


# A consumer blocked in get() releases the GIL: the main thread keeps running Python and its put
# wakes the consumer. With the GIL held this would time out.
def test_blocking_get_releases_gil():
    q = PriorityQueue()
    result = []
    consumer = threading.Thread(target=lambda: result.append(q.get(timeout=20)))
    consumer.start()
    spins = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        spins += 1
    q.put("hello", 1.0)
    consumer.join(timeout=20)
    assert result == ["hello"] and spins > 1000


# A put waiting for room is woken by a consumer in another thread, in priority order.
def test_blocked_put_completes_after_get():
    q = PriorityQueue(capacity=1)
    q.put("first", 0.0)
    finished = threading.Event()

    def producer():
        q.put("second", 5.0, timeout=20)
        finished.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)
    assert not finished.is_set()
    assert q.get(timeout=5) == "first"
    t.join(timeout=20)
    assert finished.is_set() and q.get(timeout=5) == "second"
