"""`pangu-core bench queue`: the priority data queue against Python's queue.PriorityQueue and heapq.

Cases (ids fixed): ``per_item`` (put+get one at a time from Python), ``batch`` (put_many/get_batch of
1,000 vs per-item stdlib calls), ``mpmc_2x2`` (2 producer + 2 consumer threads, per-item calls on
both sides), ``core_native`` (a put/get loop inside C++ vs heapq push/pop per operation; Mops/s).
"""

from __future__ import annotations

import heapq
import itertools
import queue as std_queue
import random
import statistics
import threading
import time
from typing import Any, Callable

import numpy as np

from pangu_core import _core
from pangu_core.bench.common import MIN_REPEATS, make_case, median_seconds
from pangu_core.queue import PriorityQueue, QueueClosed

NAME = "queue"
DESCRIPTION = "priority data queue: per item, batched, 2x2 threads, native loop (vs queue.PriorityQueue, heapq)"

BATCH = 1000
OURS_BATCH_PASSES = 8


def _rates(count: int, ours: Callable[[], Any], baseline: Callable[[], Any],
           ours_count: int | None = None) -> tuple[float, float]:
    """Items per second of ``ours`` and ``baseline``: items over the median of 5 timed runs each.

    ``count`` items per baseline run, ``ours_count`` (default ``count``) per run of ours.

    The runs alternate (ours, baseline, ours, ...) after one warm-up each, so a load change on a
    shared machine hits both sides alike instead of skewing the ratio.
    """
    ours()
    baseline()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(MIN_REPEATS):
        for fn, out in ((ours, times[0]), (baseline, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return (count if ours_count is None else ours_count) / statistics.median(times[0]), \
        count / statistics.median(times[1])


def per_item_case(n: int) -> dict[str, Any]:
    priorities = [random.random() for _ in range(n)]
    ours = PriorityQueue()
    stdlib: std_queue.PriorityQueue = std_queue.PriorityQueue()
    counter = itertools.count()

    def run_ours() -> None:
        put, get = ours.put, ours.get
        for i, p in enumerate(priorities):
            put(i, p)
            get()

    def run_stdlib() -> None:
        put, get = stdlib.put, stdlib.get
        for i, p in enumerate(priorities):
            put((-p, next(counter), i))
            get()

    ours_rate, stdlib_rate = _rates(n, run_ours, run_stdlib)
    return make_case("per_item", "items/s", ours_rate, "queue.PriorityQueue", stdlib_rate, items=n)


def batch_case(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    chunks = [(list(range(s, s + BATCH)), rng.random(BATCH)) for s in range(0, n, BATCH)]
    ours = PriorityQueue()
    stdlib: std_queue.PriorityQueue = std_queue.PriorityQueue()
    counter = itertools.count()

    def run_ours() -> None:
        # Several passes per timed run, so a run of ours lasts long enough to time reliably.
        for _ in range(OURS_BATCH_PASSES):
            for items, priorities in chunks:
                ours.put_many(items, priorities)
                ours.get_batch(BATCH)

    def run_stdlib() -> None:
        put, get = stdlib.put, stdlib.get
        for items, priorities in chunks:
            for item, p in zip(items, priorities.tolist()):
                put((-p, next(counter), item))
            for _ in items:
                get()

    total = len(chunks) * BATCH
    ours_rate, stdlib_rate = _rates(total, run_ours, run_stdlib, ours_count=OURS_BATCH_PASSES * total)
    return make_case("batch", "items/s", ours_rate, "queue.PriorityQueue per item", stdlib_rate,
                     items=total, batch=BATCH)


def _mpmc_ours(per_producer: int) -> None:
    q = PriorityQueue(capacity=1024)

    def produce(seed: int) -> None:
        put = q.put
        rnd = random.Random(seed).random
        for i in range(per_producer):
            put(i, rnd())

    def consume() -> None:
        get = q.get
        try:
            while True:
                get()
        except QueueClosed:  # close() once the producers are done and the queue is drained
            return

    _run_2x2(produce, consume, q.close)


def _mpmc_stdlib(per_producer: int) -> None:
    q: std_queue.PriorityQueue = std_queue.PriorityQueue(maxsize=1024)
    counter = itertools.count()
    stop = (float("inf"), -1, None)  # sorts last: consumers see it once everything else is taken

    def produce(seed: int) -> None:
        put = q.put
        rnd = random.Random(seed).random
        for i in range(per_producer):
            put((-rnd(), next(counter), i))

    def consume() -> None:
        get = q.get
        while get()[2] is not None:
            pass

    _run_2x2(produce, consume, lambda: [q.put(stop) for _ in range(2)])


def _run_2x2(produce: Callable[[int], None], consume: Callable[[], None], finish: Callable[[], Any]) -> None:
    producers = [threading.Thread(target=produce, args=(s,)) for s in range(2)]
    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join()
    finish()
    for t in consumers:
        t.join()


def mpmc_case(per_producer: int) -> dict[str, Any]:
    total = 2 * per_producer
    ours_rate, stdlib_rate = _rates(total, lambda: _mpmc_ours(per_producer), lambda: _mpmc_stdlib(per_producer))
    return make_case("mpmc_2x2", "items/s", ours_rate, "queue.PriorityQueue 2x2 threads", stdlib_rate,
                     items=total)


def core_native_case(ops: int, resident: int = 1000) -> dict[str, Any]:
    timings = [_core.queue.push_pop_loop(ops, resident, 0.01, rep) for rep in range(6)]
    wall = float(np.median([t[0] for t in timings[1:]]))  # one warm-up, then the median of five
    cpu = float(np.median([t[1] for t in timings[1:]]))
    ours = ops / wall / 1e6

    rnd = random.Random(0).random
    heap = [(-rnd(), i) for i in range(resident)]
    heapq.heapify(heap)
    baseline_ops = max(ops // 20, 2)

    def run_heapq() -> None:
        push, pop = heapq.heappush, heapq.heappop
        for i in range(baseline_ops // 2):
            push(heap, (-rnd(), i))
            pop(heap)

    baseline = baseline_ops / median_seconds(run_heapq) / 1e6
    # ours is wall-clock like the baseline; ours_cpu_time shows what the loop costs per core
    # (ops over thread CPU time), which differs from ours only when the machine is oversubscribed.
    return make_case("core_native", "Mops/s", ours, "heapq push/pop per op (Python)", baseline,
                     ops=ops, resident=resident, ours_cpu_time=ops / cpu / 1e6)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The four cases; ``quick`` shrinks every size (under 30 s in all)."""
    if quick:
        return [per_item_case(20_000), batch_case(50_000), mpmc_case(30_000), core_native_case(4_000_000)]
    return [per_item_case(100_000), batch_case(200_000), mpmc_case(50_000), core_native_case(10_000_000)]

