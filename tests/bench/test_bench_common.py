"""make_case's failure path (NaN ratio, failed flag), the recorded fields (ratio_range among them),
ratio_range's per-repetition ratios, and the table's flags and spread column."""

from __future__ import annotations

import math

import pytest

from pangu_core import bench
from pangu_core.bench import common


def _doc(*cases):
    return {"bench": "demo", "machine": common.machine_info(), "seconds": 0.1, "quick": True, "cases": list(cases)}


def test_a_good_case_records_repeats_and_child_process():
    case = common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=True,
                            ceiling="memcpy", ceiling_value=20.0)
    assert case["ratio"] == 2.5 and case["ceiling_fraction"] == 0.5
    assert case["repeats"] == 5 and case["child_process"] is True
    assert "failed" not in case and common.case_status(case) == ""


def test_repeats_and_child_process_are_required_and_checked():
    with pytest.raises(TypeError, match="repeats"):
        common.make_case("c", "GB/s", 1.0, "b", 1.0, child_process=False)
    with pytest.raises(TypeError, match="child_process"):
        common.make_case("c", "GB/s", 1.0, "b", 1.0, repeats=5)
    with pytest.raises(ValueError, match="repeats: expected an int >= 1, got 0"):
        common.make_case("c", "GB/s", 1.0, "b", 1.0, repeats=0, child_process=False)
    with pytest.raises(ValueError, match="child_process: expected a bool, got 1"):
        common.make_case("c", "GB/s", 1.0, "b", 1.0, repeats=5, child_process=1)


@pytest.mark.parametrize("ours, theirs, why", [
    (0.0, 4.0, "ours is 0 (zero or negative)"),
    (10.0, 0.0, "baseline_value is 0 (zero or negative)"),
    (float("nan"), 4.0, "ours is nan"),
    (10.0, float("inf"), "baseline_value is inf"),
    (None, 4.0, "ours is not a number (None)"),
    (-1.0, 4.0, "ours is -1 (zero or negative)"),
])
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_failed_or_zero_measurement_gives_nan_and_fails(ours, theirs, why, higher_is_better):
    case = common.make_case("c", "s", ours, "b", theirs, repeats=5, child_process=False,
                            higher_is_better=higher_is_better)
    assert math.isnan(case["ratio"])
    assert case["failed"] is True and why in case["failure"]
    assert common.case_status(case).startswith("FAILED: ")
    assert bench.failed_cases(_doc(case)) == ["c"]


def test_a_zero_ceiling_fails_instead_of_hiding():
    case = common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False,
                            ceiling="memcpy", ceiling_value=0.0)
    assert case["ratio"] == 2.5 and math.isnan(case["ceiling_fraction"])
    assert case["failed"] is True and "ceiling_value is 0" in case["failure"]


def test_the_table_flags_a_ceiling_exceeded_and_failures():
    over = common.make_case("over", "GB/s", 10.6, "b", 4.0, repeats=5, child_process=False,
                            ceiling="memcpy", ceiling_value=10.0)
    at = common.make_case("at_limit", "GB/s", 10.5, "b", 4.0, repeats=5, child_process=False,
                          ceiling="memcpy", ceiling_value=10.0)
    bad = common.make_case("bad", "GB/s", 0.0, "b", 4.0, repeats=5, child_process=False)
    lines = bench.format_table(_doc(over, at, bad)).splitlines()
    assert "status" in lines[1]
    row = {line.split()[0]: line for line in lines[3:]}
    assert row["over"].endswith("ceiling exceeded") and "106%" in row["over"]
    assert "ceiling exceeded" not in row["at_limit"] and "105%" in row["at_limit"]
    assert "FAILED: ours is 0" in row["bad"] and "nanx" in row["bad"]
    # A wrong ceiling is flagged but is not a failed measurement.
    assert bench.failed_cases(_doc(over, at, bad)) == ["bad"]


def test_the_table_shows_repeats_child_process_and_peak_memory():
    case = common.make_case("mem", "seconds", 2.0, "b", 6.0, repeats=3, child_process=True,
                            higher_is_better=False, ours_peak_mb=512.0, baseline_peak_mb=2048.0,
                            rss_ratio=4.0, items=7)
    assert bench.memory_figures(case) == "ours_peak_mb=512 baseline_peak_mb=2,048 rss_ratio=4"
    line = bench.format_table(_doc(case)).splitlines()[3]
    assert "3 child" in line and "ours_peak_mb=512 baseline_peak_mb=2,048 rss_ratio=4" in line
    assert "items" not in line


def test_a_skipped_case_shows_its_reason_and_is_not_a_failure():
    case = common.skipped_case("decode_npu", "GB/s", "torch math attention", "no NPU: torch_npu not installed")
    assert math.isnan(case["ratio"]) and case["skipped"] == "no NPU: torch_npu not installed"
    assert bench.failed_cases(_doc(case)) == []
    assert "skipped: no NPU: torch_npu not installed" in bench.format_table(_doc(case))


def test_each_case_reports_a_progress_line(monkeypatch, capsys):
    monkeypatch.setattr(common, "progress_stream", None)
    common.make_case("quiet", "GB/s", 1.0, "b", 1.0, repeats=5, child_process=False)
    assert capsys.readouterr().err == ""
    import sys

    monkeypatch.setattr(common, "progress_stream", sys.stderr)
    common.make_case("loud", "GB/s", 0.0, "b", 1.0, repeats=5, child_process=False)
    err = capsys.readouterr().err
    assert err.startswith("[bench] loud: ours 0 GB/s, baseline 1, ratio nanx") and "[FAILED: ours is 0" in err


def test_ratio_range_pairs_repetitions_of_times():
    # Seconds: ratio_i = baseline_i / ours_i, so ours' slow repetition 3 gives the lowest ratio.
    assert common.ratio_range([1.0, 2.0, 4.0], [2.0, 3.0, 4.0]) == [1.0, 2.0]
    # Paired by index, not sorted: the same values in another order pair differently.
    assert common.ratio_range([4.0, 2.0, 1.0], [2.0, 3.0, 4.0]) == [0.5, 4.0]


def test_ratio_range_of_rates_is_that_of_the_times_behind_them():
    ours_s, base_s = [0.5, 0.25, 0.4], [1.0, 1.0, 0.6]
    work = 8.0
    rates = common.ratio_range([work / t for t in ours_s], [work / t for t in base_s], higher_is_better=True)
    assert rates == pytest.approx(common.ratio_range(ours_s, base_s))
    assert rates == pytest.approx([1.5, 4.0])
    # Unequal work per run (e.g. more items in a run of ours) counts through the rates.
    assert common.ratio_range([30.0, 20.0], [10.0, 5.0], higher_is_better=True) == [3.0, 4.0]


@pytest.mark.parametrize("ours, baseline", [
    ([], []),                          # nothing measured
    ([1.0, 2.0], [1.0]),               # unequal counts: nothing to pair
    ([1.0, 0.0], [1.0, 1.0]),          # a zero time
    ([1.0, float("nan")], [1.0, 1.0]),
    ([1.0, 1.0], [float("inf"), 1.0]),
    ([1.0, -1.0], [1.0, 1.0]),
])
def test_ratio_range_is_none_without_usable_pairs(ours, baseline):
    assert common.ratio_range(ours, baseline) is None
    assert common.ratio_range(ours, baseline, higher_is_better=True) is None


def test_make_case_records_ratio_range_as_floats():
    case = common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False, ratio_range=(2, 3))
    assert case["ratio_range"] == [2.0, 3.0] and all(isinstance(v, float) for v in case["ratio_range"])
    assert "ratio_range" not in common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False)
    assert common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False,
                            ratio_range=None).keys() == case.keys() - {"ratio_range"}


def test_a_failed_case_records_no_ratio_range():
    zero = common.make_case("c", "GB/s", 0.0, "b", 4.0, repeats=5, child_process=False, ratio_range=[2.0, 3.0])
    bad_ceiling = common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False,
                                   ceiling="memcpy", ceiling_value=float("nan"), ratio_range=[2.0, 3.0])
    for case in (zero, bad_ceiling):
        assert case["failed"] is True and "ratio_range" not in case


@pytest.mark.parametrize("bad", [
    [1.0], [1.0, 2.0, 3.0], [], [3.0, 2.0], [float("nan"), 2.0], [1.0, float("inf")], ["1", 2.0],
    [True, 2.0], [None, 2.0], 2.0, "12", {1.0: 2.0},
])
def test_make_case_refuses_a_malformed_ratio_range(bad):
    with pytest.raises(ValueError, match="ratio_range: expected \\[lo, hi\\], two finite numbers with lo <= hi"):
        common.make_case("c", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False, ratio_range=bad)


def test_the_table_shows_the_spread():
    spread = common.make_case("spread", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False,
                              ratio_range=[2.1, 2.6])
    plain = common.make_case("plain", "GB/s", 10.0, "b", 4.0, repeats=5, child_process=False)
    lines = bench.format_table(_doc(spread, plain)).splitlines()
    header = lines[1]
    start, end = header.index("spread"), header.index("ceiling %")
    row = {line.split()[0]: line for line in lines[3:]}
    assert row["spread"][start:end].strip() == "2.1-2.6x"
    assert row["plain"][start:end].strip() == ""
