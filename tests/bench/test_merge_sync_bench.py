"""The merge and sync benchmarks: their torch baselines do the same work as ours, on small sizes,
and every case carries the fields the benchmark JSON promises. No timing is asserted."""

from __future__ import annotations

import math

import pytest
import torch

from pangu_core import _core
from pangu_core.bench import common
from pangu_core.bench import merge as bench_merge
from pangu_core.bench import sync as bench_sync

MB = 1 << 20
CASE_FIELDS = {"case", "metric", "ours", "baseline", "baseline_value", "ratio", "repeats", "child_process"}


def _bf16_close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: a and b within one bf16 ulp of the larger magnitude."""
    a, b = a.float(), b.float()
    return (a - b).abs() <= torch.maximum(a.abs(), b.abs()) * 2.0**-7 + 1e-30


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with common.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), common.torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_interleaved_medians_alternates_and_counts_rounds():
    calls: list[str] = []
    checked: list[str] = []
    ours_s, theirs_s, spread = common.interleaved_medians(lambda: calls.append("o"), lambda: calls.append("t"),
                                                          repeats=3, warmup=1, between=checked.append)
    assert calls == ["o", "t"] * 4
    assert checked == ["ours", "theirs"] * 4
    assert ours_s >= 0 and theirs_s >= 0
    assert spread is None or spread[0] <= spread[1]


def test_interleaved_medians_gives_the_range_of_paired_repetitions(monkeypatch):
    seconds = {"ours": [1.0, 2.0, 4.0], "theirs": [2.0, 3.0, 4.0]}  # per-repetition ratios 2, 1.5, 1
    monkeypatch.setattr(common, "interleaved_times", lambda *_, **__: [seconds["ours"], seconds["theirs"]])
    assert common.interleaved_medians(lambda: None, lambda: None, repeats=3) == (2.0, 3.0, [1.0, 2.0])


@pytest.mark.parametrize("method, streams", [("linear", 4), ("ties", 5)])
def test_inmem_baseline_merges_the_same(method, streams):
    dicts = bench_merge._state_dicts(1 << 18, bench_merge.N_MODELS)
    base, models = dicts[0], dicts[1:]
    ours, baseline, counted = bench_merge.inmem_sides(method, base, models)
    assert counted == streams  # N models (+ base for TIES) read, one output written
    mine, theirs = ours(), baseline()
    assert set(mine) == set(theirs) == set(base)
    for name in base:
        close = _bf16_close(mine[name], theirs[name])
        if method == "ties":  # top-k may keep either of equal magnitudes at the threshold: those aside
            k_keep = int(0.5 * base[name].numel())
            for m in models:
                value = _core.merge.kth_magnitude(base[name], m[name], k_keep)[0]
                close |= (m[name].float() - base[name].float()).abs() == value
        assert bool(close.all()), name
        assert mine[name].dtype == theirs[name].dtype == torch.bfloat16


def test_inmem_cases_fields(check_spread):
    cases = bench_merge._inmem_cases(quick=True, ceiling=10.0, threads=1)
    assert [c["case"] for c in cases] == ["inmem_linear_bf16_n3", "inmem_ties_bf16_n3"]
    for c, streams in zip(cases, (4, 5)):
        assert CASE_FIELDS <= set(c)
        assert c["streams_read_written"] == streams
        assert c["bytes_moved"] == streams * c["bytes_per_model_mb"] * 2**20
        assert c["repeats"] >= 5 and c["child_process"] is False
        assert "1 torch threads" in c["baseline"]
        assert c["ours"] > 0 and c["baseline_value"] > 0
        check_spread(c)


def test_file_cases_name_sizes_and_mergekit(capfd, check_spread):
    cases = bench_merge._file_cases(quick=True, threads=1)
    assert [c["case"] for c in cases] == ["file_linear_n3", "file_ties_n3"]
    missing = bench_merge._mergekit_available()
    for c in cases:
        assert CASE_FIELDS <= set(c)
        assert c["child_process"] is True and c["repeats"] >= 3
        assert "parameters" in c["sizes"] and "MB" in c["sizes"]
        if missing:  # honest: no baseline figure, the reason in the case
            assert math.isnan(c["baseline_value"]) and "not installed" in c["baseline"]
            assert c["baseline_note"] == missing and "ratio_range" not in c
        else:
            assert c["outputs_equal_within_rounding"], c
            check_spread(c)
            assert c["baseline_repeats"] == c["repeats"] and "1 torch threads" in c["baseline"]
    assert "[bench merge] file_ties_n3: round 1/" in capfd.readouterr().err



def test_flatten_baseline_and_ours_deliver_the_state(check_spread):
    case = bench_sync.bench_flatten(2 * MB, repeats=1)  # raises if either side's output differs
    assert CASE_FIELDS <= set(case)
    check_spread(case)
    assert case["case"] == "flatten_1g" and case["child_process"] is False and case["repeats"] == 1
    assert "torch.cat(out=preallocated)" in case["baseline"]
    assert case["ceiling_value"] > 0


def test_flatten_check_catches_a_wrong_copy(monkeypatch):
    real = bench_sync.state_matches
    monkeypatch.setattr(bench_sync, "state_matches", lambda state: False)
    with pytest.raises(RuntimeError, match="flatten_1g: ours delivered wrong values"):
        bench_sync.bench_flatten(2 * MB, repeats=1)
    state = bench_sync.make_state(2 * MB)
    assert real(state)
    next(iter(state.values())).view(-1)[0] += 1
    assert not real(state)


def test_publish_pull_both_sides_deliver_the_state(check_spread):
    case = bench_sync.bench_publish_pull(2 * MB, repeats=1)  # the reader checks after every call
    assert CASE_FIELDS <= set(case)
    check_spread(case)
    assert case["child_process"] is True and case["device"] == "cpu" and case["repeats"] == 1
    assert "share_memory_()" in case["baseline"]
    assert case["ours"] > 0 and case["baseline_value"] > 0


def test_publish_pull_device_skipped_with_reason():
    case = bench_sync.bench_publish_pull_device(2 * MB, None)
    assert case["case"] == "publish_pull_shm_1g_device" and math.isnan(case["ours"])
    assert "no --device" in case["skipped"] and case["repeats"] == 0
    case = bench_sync.bench_publish_pull_device(2 * MB, "cpu")
    assert "publish_pull_shm_1g" in case["skipped"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_publish_pull_cuda_round_trip():
    case = bench_sync.bench_publish_pull_device(2 * MB, "cuda", repeats=1)
    assert "skipped" not in case and case["device"] == "cuda" and case["ours"] > 0


def test_bucketed_broadcast_buckets():
    tensors = [torch.zeros(n, dtype=torch.bfloat16) for n in (100, 200, 5000, 50, 50)]
    buckets = bench_sync._buckets(tensors, 1000)  # bytes: 200, 400 | 10,000 alone | 100, 100
    assert [[t.numel() for t in g] for g in buckets] == [[100, 200], [5000], [50, 50]]


def test_gloo_both_sides_deliver_the_state(check_spread):
    case = bench_sync.bench_gloo(2 * MB, repeats=1, bucket_mb=1)  # rank 1 checks after every call
    assert CASE_FIELDS <= set(case)
    check_spread(case)
    assert case["child_process"] is True and case["repeats"] == 1
    assert "async_op=True" in case["baseline"] and "1 MB" in case["baseline"]
    assert case["baseline_buckets"] > 1
