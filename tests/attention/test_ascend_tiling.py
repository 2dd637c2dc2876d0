"""Tiling of the Ascend C flash-attention kernel: buffers fit, the schedule covers every (query, key)
pair exactly once (or as causality requires), cores get balanced contiguous ranges, bad input is
named."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pangu_core.config import ConfigError
from pangu_core.attention.npu import AscendHardware, plan_tiling


def _round32(x: int) -> int:
    return (x + 31) // 32 * 32


def _visible(causal: bool, q: np.ndarray, q_len: int, kv_len: int) -> np.ndarray:
    if not causal:
        return np.full(q.shape, kv_len)
    return np.clip(kv_len - q_len + q + 1, 0, kv_len)


def _check_plan(plan: dict, batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int,
                causal: bool, kv_lens: list[int] | None, hw: AscendHardware, elem_bytes: int = 2) -> None:
    group = heads // kv_heads
    bq, bkv = plan["block_q"], plan["block_kv"]
    # Every buffer the kernel allocates fits, with both K and V queues holding two blocks.
    assert plan["ub"]["total"] <= hw.ub_bytes
    assert plan["ub"]["k_in"] == 2 * _round32(bkv * head_dim * elem_bytes)
    assert plan["ub"]["v_in"] == 2 * _round32(bkv * head_dim * elem_bytes)
    assert plan["ub"]["total"] == sum(v for key, v in plan["ub"].items() if key != "total")
    assert plan["l1_bytes"] <= hw.l1_bytes and plan["l0a_bytes"] <= hw.l0a_bytes
    assert plan["l0b_bytes"] <= hw.l0b_bytes and plan["l0c_bytes"] <= hw.l0c_bytes
    # Block shapes the kernel can execute: 16-key multiples, one vector repeat per key.
    assert bkv % 16 == 0 and 16 <= bkv <= 255
    assert bq >= 1 and plan["rows"] == group * bq and plan["group"] == group
    assert plan["chunks"] == (head_dim + 63) // 64
    # Cores take contiguous, ordered ranges that partition the units.
    begin = plan["core_begin"]
    assert len(begin) == hw.num_cores + 1 and begin[0] == 0 and begin[-1] == plan["num_units"]
    assert all(a <= b for a, b in zip(begin, begin[1:]))
    sizes = np.diff(begin)
    assert plan["used_cores"] == int((sizes > 0).sum()) <= min(hw.num_cores, plan["num_units"])
    # Balance: no core carries more than its share plus one unit.
    cost = np.asarray(plan["unit_cost"], dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(cost)])
    per_core = cumulative[np.asarray(begin[1:])] - cumulative[np.asarray(begin[:-1])]
    cores_used = min(hw.num_cores, plan["num_units"])
    assert per_core.max() <= cost.sum() / cores_used + cost.max() + 1
    # Coverage: each (batch, kv_head, query) row belongs to exactly one unit, and the unit's KV blocks
    # reach every key the row may see without visiting a block no row of the unit needs.
    lens = kv_lens if kv_lens is not None else [kv_len] * batch
    seen = np.zeros((batch, kv_heads, q_len), dtype=np.int64)
    for b, kvh, q0, q1, length, blocks in plan["units"]:
        assert length == lens[b] and 0 <= q0 < q1 <= q_len and q1 - q0 <= bq
        seen[b, kvh, q0:q1] += 1
        vis = _visible(causal, np.arange(q0, q1), q_len, length)
        assert blocks * bkv >= vis.max()
        assert blocks == 0 or (blocks - 1) * bkv < vis.max()
        assert blocks * bkv < length + bkv or blocks == 0
    assert (seen == 1).all()
    # Pairs computed = pairs visible: blocks are disjoint, so each visible pair is covered once.
    assert plan["num_units"] == batch * kv_heads * -(-q_len // bq)


# The grid the issue names: awkward lengths, head dims 64/80/128, GQA ratios 1/4/8, causal and not.
@pytest.mark.parametrize("q_len,kv_len", [(1, 1), (7, 7), (97, 97), (1025, 1025), (1, 1025), (7, 97), (97, 7)])
@pytest.mark.parametrize("head_dim", [64, 80, 128])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_plan_invariants(q_len: int, kv_len: int, head_dim: int, group: int) -> None:
    hw = AscendHardware()
    for causal in (False, True):
        plan = plan_tiling(2, 2 * group, 2, q_len, kv_len, head_dim, causal=causal, hardware=hw)
        _check_plan(plan, 2, 2 * group, 2, q_len, kv_len, head_dim, causal, None, hw)


# Ragged caches: per-sequence lengths (including an empty cache) bound each unit's KV walk.
@pytest.mark.parametrize("causal", [False, True])
def test_plan_ragged_kv_lens(causal: bool) -> None:
    hw = AscendHardware(num_cores=7)
    lens = [0, 1, 7, 97, 1025]
    for q_len in (1, 7):
        plan = plan_tiling(5, 8, 2, q_len, 1025, 128, causal=causal, kv_lens=lens, hardware=hw)
        _check_plan(plan, 5, 8, 2, q_len, 1025, 128, causal, lens, hw)
        empty = [u for u in plan["units"] if u[0] == 0]
        assert all(u[5] == 0 for u in empty)


# Smaller buffers force smaller tiles that still fit; the budget is what the buffers allow.
@pytest.mark.parametrize("ub_kib", [48, 96, 192, 256])
def test_plan_respects_smaller_buffers(ub_kib: int) -> None:
    hw = AscendHardware(ub_bytes=ub_kib * 1024, l0a_bytes=16 * 1024, l0c_bytes=32 * 1024)
    plan = plan_tiling(1, 32, 8, 1025, 1025, 128, causal=True, hardware=hw)
    _check_plan(plan, 1, 32, 8, 1025, 1025, 128, True, None, hw)


# Larger UB never makes the chosen tile smaller in both dimensions.
def test_plan_grows_with_ub() -> None:
    small = plan_tiling(1, 8, 8, 1025, 1025, 64, hardware=AscendHardware(ub_bytes=64 * 1024))
    large = plan_tiling(1, 8, 8, 1025, 1025, 64, hardware=AscendHardware(ub_bytes=256 * 1024))
    assert large["rows"] * large["block_kv"] >= small["rows"] * small["block_kv"]


# Decode with GQA puts the whole query-head group of a KV head into one tile (K/V loaded once).
def test_decode_tile_holds_the_group() -> None:
    plan = plan_tiling(4, 32, 4, 1, 16384, 128)
    assert plan["block_q"] == 1 and plan["rows"] == 8 and plan["num_units"] == 16


# Float32 tiles (the simulation's input width) are budgeted with 4-byte elements.
def test_plan_float32_budget() -> None:
    plan = plan_tiling(1, 4, 4, 97, 97, 64, dtype=torch.float32)
    _check_plan(plan, 1, 4, 4, 97, 97, 64, False, None, AscendHardware(), elem_bytes=4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(heads=6, kv_heads=4), "kv_heads: expected a divisor of heads=6"),
        (dict(head_dim=72), "head_dim: expected a multiple of 16"),
        (dict(head_dim=512), "head_dim: expected a multiple of 16 in \\[16, 256\\]"),
        (dict(head_dim=0), "head_dim"),
        (dict(q_len=0), "q_len: expected >= 1"),
        (dict(kv_len=0), "kv_len: expected >= 1"),
        (dict(batch=0), "batch: expected >= 1"),
        (dict(kv_lens=[1, 2, 3]), "kv_lens: expected one length per batch entry"),
        (dict(kv_lens=[5, 98]), "kv_lens\\[1\\]: expected in \\[0, kv_len=97\\]"),
        (dict(kv_lens=[-1, 3]), "kv_lens\\[0\\]"),
    ],
)
def test_plan_errors_name_the_argument(kwargs: dict, match: str) -> None:
    args = dict(batch=2, heads=8, kv_heads=2, q_len=7, kv_len=97, head_dim=64)
    args.update(kwargs)
    lens = args.pop("kv_lens", None)
    with pytest.raises(ValueError, match=match):
        plan_tiling(*args.values(), kv_lens=lens)


# Every problem is reported at once, not only the first.
def test_plan_reports_all_problems() -> None:
    with pytest.raises(ValueError) as err:
        plan_tiling(0, 8, 3, 0, 97, 70)
    message = str(err.value)
    for part in ("batch", "kv_heads", "q_len", "head_dim"):
        assert part in message


def test_plan_hardware_errors() -> None:
    with pytest.raises(ValueError, match="num_cores: expected in \\[1, 128\\]"):
        plan_tiling(1, 1, 1, 1, 1, 64, hardware=AscendHardware(num_cores=500))
    with pytest.raises(ValueError, match="no tile fits the on-chip buffers"):
        plan_tiling(1, 64, 1, 1, 1, 256, hardware=AscendHardware(ub_bytes=32 * 1024))


# AscendHardware is a typed config: every problem at once, unknown keys listed, round trip.
def test_hardware_config_errors_and_round_trip(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        AscendHardware(ub_bytes=0, num_cores=-1)
    assert err.value.problems == ["ub_bytes: expected a positive int, got 0", "num_cores: expected a positive int, got -1"]
    with pytest.raises(ConfigError, match="l1_bytes: expected an int, got 1.5"):
        AscendHardware(l1_bytes=1.5)
    with pytest.raises(ConfigError, match="num_cores: expected an int, got True"):
        AscendHardware(num_cores=True)
    with pytest.raises(ConfigError, match="ub: unknown key; known: ub_bytes, l1_bytes, l0a_bytes"):
        AscendHardware.from_dict({"ub": 1})
    hw = AscendHardware.from_dict({"num_cores": 20})
    assert hw.num_cores == 20 and AscendHardware.from_dict(hw.to_dict()) == hw
    path = tmp_path / "hw.yaml"
    hw.to_yaml(path)
    assert AscendHardware.from_yaml(path) == hw
    path.write_text("ub_bytes: -4\n")
    with pytest.raises(ConfigError, match="hw.yaml:1: ub_bytes: expected a positive int, got -4"):
        AscendHardware.from_yaml(path)


def test_plan_type_errors() -> None:
    with pytest.raises(TypeError, match="q_len: expected an int"):
        plan_tiling(1, 1, 1, 1.5, 1, 64)
    with pytest.raises(TypeError, match="dtype"):
        plan_tiling(1, 1, 1, 1, 1, 64, dtype=torch.int32)
    with pytest.raises(TypeError, match="causal"):
        plan_tiling(1, 1, 1, 1, 1, 64, causal=1)


# The Python defaults are the C++ defaults (one set of Atlas A2 numbers).
def test_defaults_agree() -> None:
    from pangu_core import _core

    assert dict(_core.ascend.ATLAS_A2_DEFAULTS) == AscendHardware().to_dict()


# Unit decoding is exhaustive over small grids: no two units describe the same rows.
def test_units_distinct_small_grid() -> None:
    for batch, kv_heads, q_len in itertools.product((1, 3), (1, 2), (1, 5, 33)):
        plan = plan_tiling(batch, kv_heads * 2, kv_heads, q_len, 40, 16, causal=True)
        keys = {(u[0], u[1], u[2]) for u in plan["units"]}
        assert len(keys) == plan["num_units"]


# The device record carries the plan unchanged (what the kernel reads is what was tested here).
def test_kernel_record_matches_plan() -> None:
    from pangu_core import _core

    plan = plan_tiling(3, 16, 4, 97, 1025, 80, causal=True, kv_lens=[1025, 5, 0], hardware=AscendHardware(num_cores=20))
    record = _core.ascend.kernel_record(3, 16, 4, 97, 1025, 80, True, [1025, 5, 0], 0.125, 20)
    for key in ("block_q", "block_kv", "group", "rows", "q_blocks", "chunks", "num_units", "used_cores"):
        assert record[key] == plan[key], key
    assert record["core_begin"] == plan["core_begin"][: plan["used_cores"] + 1]
    assert record["has_kv_lens"] == 1 and record["causal"] == 1 and record["scale"] == 0.125
    assert record["nbytes"] == 4 * (18 + 129)


# Random problems and buffer sizes: either a plan that keeps every invariant or a clear ValueError.
@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    kv_heads=st.integers(1, 3),
    group=st.sampled_from([1, 2, 4, 8]),
    q_len=st.integers(1, 300),
    kv_len=st.integers(1, 600),
    head_dim=st.sampled_from([16, 48, 64, 80, 96, 128, 192, 256]),
    causal=st.booleans(),
    ub_kib=st.integers(16, 256),
    cores=st.integers(1, 64),
)
def test_plan_random_problems(batch, kv_heads, group, q_len, kv_len, head_dim, causal, ub_kib, cores) -> None:
    hw = AscendHardware(ub_bytes=ub_kib * 1024, num_cores=cores)
    heads = kv_heads * group
    try:
        plan = plan_tiling(batch, heads, kv_heads, q_len, kv_len, head_dim, causal=causal, hardware=hw)
    except ValueError as err:
        # The refusal is honest: some buffer of the smallest tile really exceeds its size.
        message = str(err)
        assert "no tile fits the on-chip buffers" in message
        needs = [(int(a), int(b)) for a, b in re.findall(r"(\d+) of (\d+)", message)]
        assert any(a > b for a, b in needs), message
        return
    _check_plan(plan, batch, heads, kv_heads, q_len, kv_len, head_dim, causal, None, hw)
