"""`pangu-core bench queue` builds its four cases with the documented ids and fields (tiny sizes)."""

from __future__ import annotations

from pangu_core.bench import queue as bench_queue


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
    assert cases[3]["ours_cpu_time"] > 0
