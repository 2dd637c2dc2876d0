"""`pangu-core bench queue` builds its four cases with the documented ids and fields (tiny sizes),
and each baseline does the same work as ours (same pop order, same checksum)."""

from __future__ import annotations

import numpy as np
import pytest

from pangu_core import _core
from pangu_core.bench import queue as bench_queue
from pangu_core.queue import PriorityQueue


# Case ids and metrics are fixed by the benchmark contract; values are rates, never asserted on.
def test_queue_bench_cases_shape():
    cases = [
        bench_queue.per_item_case(500),
        bench_queue.batch_case(2_000),
        bench_queue.mpmc_case(500),
        bench_queue.core_native_case(20_000, resident=100),
    ]
    assert [c["case"] for c in cases] == ["per_item", "batch", "mpmc_2x2", "core_native"]
    assert [c["metric"] for c in cases] == ["items/s", "items/s", "items/s", "Mops/s"]
    for c in cases:
        assert c["ours"] > 0 and c["baseline_value"] > 0
        assert c["ratio"] == c["ours"] / c["baseline_value"]
        assert c["repeats"] == bench_queue.MIN_REPEATS and c["child_process"] is False
        assert "failed" not in c
    assert "threading.Lock" in cases[1]["baseline"] and "std::priority_queue" in cases[3]["baseline"]
    assert cases[3]["ours_cpu_time"] > 0


@pytest.mark.parametrize("queued_before", [0, 3000])
def test_the_heapq_baseline_pops_the_same_order_as_ours(queued_before):
    rng = np.random.default_rng(7)
    ours, theirs = PriorityQueue(), bench_queue.LockedHeap()
    # Coarse priorities make many ties, which both must break oldest first.
    if queued_before:
        items, priorities = list(range(-queued_before, 0)), rng.integers(0, 20, queued_before) / 20
        ours.put_many(items, priorities)
        theirs.put_many(items, priorities)
    for start in range(0, 5000, 1000):
        items, priorities = list(range(start, start + 1000)), rng.integers(0, 20, 1000) / 20
        ours.put_many(items, priorities)
        theirs.put_many(items, priorities)
        assert theirs.get_batch(700) == ours.get_batch(700)
    assert len(theirs) == len(ours)
    assert theirs.get_batch(len(theirs)) == ours.get_batch(len(ours))


@pytest.mark.parametrize("age_boost", [0.0, 0.01, 0.5])
def test_the_std_priority_queue_loop_pops_the_same_order_as_ours(age_boost):
    ours = _core.queue.native_loop(50_000, 500, age_boost, 11, "ours")
    theirs = _core.queue.native_loop(50_000, 500, age_boost, 11, "std")
    assert ours[2] == theirs[2] != 0
    # A different seed gives a different order, so equal checksums are not a coincidence.
    assert _core.queue.native_loop(50_000, 500, age_boost, 12, "std")[2] != theirs[2]
    assert ours[0] > 0 and theirs[0] > 0


def test_the_native_loop_checks_its_arguments():
    with pytest.raises(ValueError, match="queue: expected 'ours' or 'std', got 'heapq'"):
        _core.queue.native_loop(100, 10, 0.0, 0, "heapq")
    with pytest.raises(ValueError, match="ops: expected an integer >= 2, got 1"):
        _core.queue.native_loop(1, 10, 0.0, 0, "std")
    with pytest.raises(ValueError, match="age_boost: expected a finite number >= 0"):
        _core.queue.native_loop(100, 10, -1.0, 0, "std")
