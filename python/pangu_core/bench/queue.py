"""`pangu-core bench queue`: the priority data queue against Python's queue.PriorityQueue and heapq.

Cases (ids fixed): ``per_item`` (put+get one at a time from Python), ``batch`` (put_many/get_batch of
1,000 vs heapq under one threading.Lock, a batch pushed and a batch popped per lock hold),
``mpmc_2x2`` (2 producer + 2 consumer threads, per-item calls on both sides), ``core_native`` (one
C++ put/get loop driving our queue vs std::priority_queue of (key, sequence); ours in Mops/s).
Every case runs in this process, ours and the baseline alternating, medians of MIN_REPEATS each.
"""

from __future__ import annotations

import heapq
import itertools
import queue as std_queue
import random
import statistics
import threading
from typing import Any, Callable

import numpy as np

from pangu_core import _core
from pangu_core.bench.common import MIN_REPEATS, interleaved_times, make_case, progress, ratio_range
from pangu_core.queue import PriorityQueue, QueueClosed

NAME = "queue"
DESCRIPTION = ("priority data queue: per item, batched, 2x2 threads, native loop "
               "(vs queue.PriorityQueue, heapq under a Lock, std::priority_queue)")

BATCH = 1000
OURS_BATCH_PASSES = 8


def _rates(count: int, ours: Callable[[], Any], baseline: Callable[[], Any],
           ours_count: int | None = None) -> tuple[float, float, list[float] | None]:
    """Items per second of ``ours`` and ``baseline`` (items over the median of 5 timed runs each)
    and the :func:`common.ratio_range` of the per-run rates.

    ``count`` items per baseline run, ``ours_count`` (default ``count``) per run of ours, so the
    range pairs rates, not times.

    The runs alternate (ours, baseline, ours, ...) after one warm-up each, so a load change on a
    shared machine hits both sides alike instead of skewing the ratio.
    """
    ours_count = count if ours_count is None else ours_count
    ours_s, base_s = interleaved_times([ours, baseline], MIN_REPEATS)
    spread = ratio_range([ours_count / t for t in ours_s], [count / t for t in base_s], higher_is_better=True)
    return ours_count / statistics.median(ours_s), count / statistics.median(base_s), spread


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

    progress(f"per_item: {n:,} put+get per run")
    ours_rate, stdlib_rate, spread = _rates(n, run_ours, run_stdlib)
    return make_case("per_item", "items/s", ours_rate, "queue.PriorityQueue put/get per item, 1 thread",
                     stdlib_rate, repeats=MIN_REPEATS, child_process=False, ratio_range=spread, items=n)


class LockedHeap:
    """The batch baseline: heapq of (-priority, sequence, item) under one threading.Lock.

    Same order as ours (higher priority first, older first on ties). ``put_many`` pushes a whole
    batch and ``get_batch`` pops a whole batch per lock hold, like our put_many/get_batch. Each
    uses the faster stdlib route for its size: extend + heapify when the batch outnumbers what is
    queued, one sort when the whole heap is taken.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._lock = threading.Lock()
        self._sequence = itertools.count()

    def put_many(self, items: list[Any], priorities: Any) -> None:
        keys = (-np.asarray(priorities, dtype=np.float64)).tolist()
        with self._lock:
            entries = list(zip(keys, self._sequence, items))
            heap = self._heap
            if len(entries) > len(heap):
                heap.extend(entries)
                heapq.heapify(heap)
            else:
                push = heapq.heappush
                for entry in entries:
                    push(heap, entry)

    def get_batch(self, n: int) -> list[Any]:
        with self._lock:
            heap = self._heap
            if n >= len(heap):
                heap.sort()
                out = [entry[2] for entry in heap]
                heap.clear()
                return out
            pop = heapq.heappop
            return [pop(heap)[2] for _ in range(n)]

    def __len__(self) -> int:
        return len(self._heap)


def batch_case(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    chunks = [(list(range(s, s + BATCH)), rng.random(BATCH)) for s in range(0, n, BATCH)]
    ours = PriorityQueue()
    theirs = LockedHeap()

    def run_ours() -> None:
        # Several passes per timed run, so a run of ours lasts long enough to time reliably.
        for _ in range(OURS_BATCH_PASSES):
            for items, priorities in chunks:
                ours.put_many(items, priorities)
                ours.get_batch(BATCH)

    def run_heapq() -> None:
        for items, priorities in chunks:
            theirs.put_many(items, priorities)
            theirs.get_batch(BATCH)

    total = len(chunks) * BATCH
    progress(f"batch: {len(chunks)} batches of {BATCH:,} per run")
    ours_rate, heapq_rate, spread = _rates(total, run_ours, run_heapq, ours_count=OURS_BATCH_PASSES * total)
    return make_case("batch", "items/s", ours_rate,
                     f"heapq (-priority, sequence, item) under one threading.Lock, a batch of {BATCH:,} "
                     "pushed and popped per lock hold, 1 thread", heapq_rate,
                     repeats=MIN_REPEATS, child_process=False, ratio_range=spread, items=total, batch=BATCH)


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
    progress(f"mpmc_2x2: {total:,} items through 2 producer + 2 consumer threads per run")
    ours_rate, stdlib_rate, spread = _rates(total, lambda: _mpmc_ours(per_producer),
                                            lambda: _mpmc_stdlib(per_producer))
    return make_case("mpmc_2x2", "items/s", ours_rate,
                     "queue.PriorityQueue(maxsize=1024) put/get per item, 2 producer + 2 consumer threads",
                     stdlib_rate, repeats=MIN_REPEATS, child_process=False, ratio_range=spread, items=total)


AGE_BOOST = 0.01


def core_native_case(ops: int, resident: int = 1000) -> dict[str, Any]:
    """One C++ loop of ``ops`` alternating put/get with ``resident`` items queued, driving our queue
    and std::priority_queue of (key, sequence) in turn (interleaved, one warm-up each, medians).

    ``ratio`` = our Mops/s over std's; ``ours`` is our Mops/s (wall clock), ``ours_cpu_time`` ops
    over our loop's thread CPU time. Both loops must pop the same payloads in the same order (equal
    checksums), else the case fails with ValueError.
    """
    progress(f"core_native: {ops:,} ops per run, {resident:,} resident")
    runs: dict[str, list[tuple[float, float, int]]] = {"ours": [], "std": []}
    for rep in range(MIN_REPEATS + 1):
        for which in ("ours", "std"):
            result = _core.queue.native_loop(ops, resident, AGE_BOOST, rep, which)
            if rep > 0:  # rep 0 is the warm-up
                runs[which].append(result)
    for (_, _, ours_sum), (_, _, std_sum) in zip(runs["ours"], runs["std"]):
        if ours_sum != std_sum:
            raise ValueError(f"core_native: our queue and std::priority_queue popped different orders "
                             f"(checksums {ours_sum} != {std_sum})")
    ours = ops / statistics.median(r[0] for r in runs["ours"]) / 1e6
    theirs = ops / statistics.median(r[0] for r in runs["std"]) / 1e6
    cpu = statistics.median(r[1] for r in runs["ours"])
    return make_case("core_native", "Mops/s", ours,
                     "std::priority_queue<(key, sequence)> put/pop in the same C++ loop, no lock, 1 thread",
                     theirs, repeats=MIN_REPEATS, child_process=False, ops=ops, resident=resident,
                     ratio_range=ratio_range([r[0] for r in runs["ours"]], [r[0] for r in runs["std"]]),
                     ours_cpu_time=ops / cpu / 1e6 if cpu > 0 else float("nan"))


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The four cases; ``quick`` shrinks every size (under 30 s in all)."""
    if quick:
        return [per_item_case(20_000), batch_case(50_000), mpmc_case(30_000), core_native_case(4_000_000)]
    return [per_item_case(100_000), batch_case(200_000), mpmc_case(50_000), core_native_case(10_000_000)]

