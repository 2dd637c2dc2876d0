"""Tensor interop: zero-copy views, exact float conversions on every ISA path, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pangu_core
from pangu_core import _core, tensors

ALL_16BIT = torch.arange(65536, dtype=torch.int32).to(torch.int16)


@pytest.fixture(params=pangu_core.available_isas())
def isa(request):
    # Every dispatch path this CPU has runs the same checks.
    pangu_core.set_isa(request.param)
    yield request.param
    pangu_core.reset_isa()


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal bit patterns, except that any NaN matches any NaN (payloads are not compared)."""
    nan = torch.isnan(a.float())
    assert torch.equal(nan, torch.isnan(b.float()))
    a_bits = a[~nan].view(torch.int16) if a.element_size() == 2 else a[~nan].view(torch.int32)
    b_bits = b[~nan].view(torch.int16) if b.element_size() == 2 else b[~nan].view(torch.int32)
    assert torch.equal(a_bits, b_bits)


@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_16bit_pattern_widens_exactly(isa, dtype):
    # All 65,536 patterns, to float32: bit-identical with torch (NaN payloads aside).
    halves = ALL_16BIT.view(dtype)
    ours = tensors.cast(halves, torch.float32)
    _same_bits(ours, halves.float())


def _rounding_cases() -> torch.Tensor:
    """Float32 inputs that exercise every rounding decision of a 16-bit result.

    For each upper 16-bit pattern, the lower halves 0, 1, 0x7fff, 0x8000 (a tie), 0x8001 and 0xffff,
    plus a sweep through the float16 range (where the cut falls at bit 13) and its subnormals.
    """
    hi = torch.arange(65536, dtype=torch.int64) << 16
    lows = torch.tensor([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=torch.int64)
    bits = (hi[:, None] | lows[None, :]).flatten()
    generator = torch.Generator().manual_seed(0)
    f16_range = torch.randint(0x33000000, 0x47800000, (200_000,), generator=generator, dtype=torch.int64)
    ties = (torch.arange(0x38000000, 0x47800000, 1 << 13, dtype=torch.int64) | 0x1000)
    bits = torch.cat([bits, f16_range, -f16_range - 1, ties])
    return (bits & 0xFFFFFFFF).to(torch.uint32).view(torch.int32).view(torch.float32)


@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_rounds_to_nearest_even_like_torch(isa, dtype):
    x = _rounding_cases()
    _same_bits(tensors.cast(x, dtype), x.to(dtype))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1023, 100_003])
def test_conversion_handles_every_tail_length(isa, n):
    x = torch.randn(n) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(tensors.cast(x, dtype).view(torch.int16), x.to(dtype).view(torch.int16))
        assert torch.equal(tensors.cast(x.to(dtype), torch.float32), x.to(dtype).float())


def test_half_to_half_goes_through_float32():
    x = torch.randn(5000).to(torch.bfloat16)
    assert torch.equal(tensors.cast(x, torch.float16), x.float().half())


def test_cast_writes_into_out_in_place():
    x = torch.randn(100)
    out = torch.empty(100, dtype=torch.bfloat16)
    result = tensors.cast(x, torch.bfloat16, out=out)
    assert result is out
    assert torch.equal(out, x.bfloat16())


def test_a_write_through_the_core_is_seen_by_torch_and_numpy():
    # Zero copy: the C++ view aliases the caller's memory, whatever its strides.
    t = torch.zeros(4, 6, dtype=torch.bfloat16)
    _core.testing.fill(t[:, 2], 3.0)
    assert t[:, 2].eq(3).all() and t[:, [0, 1, 3, 4, 5]].eq(0).all()
    a = np.zeros((3, 5), dtype=np.float32)
    _core.testing.fill(a[::2, 1:4], -1.5)
    assert (a[::2, 1:4] == -1.5).all() and a[1].sum() == 0
    view = torch.from_numpy(a)
    _core.testing.fill(view, 7.0)
    assert (a == 7.0).all()


def test_views_report_the_same_memory_shape_and_strides():
    t = torch.zeros(3, 8, dtype=torch.float16)[:, ::2]
    d = _core.testing.describe(t)
    assert d["data_ptr"] == t.data_ptr()
    assert d["shape"] == [3, 4] and d["strides"] == [8, 2]
    assert d["dtype"] == "float16" and not d["contiguous"]
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert _core.testing.describe(a)["data_ptr"] == a.ctypes.data


def test_tensors_that_require_grad_are_viewed_without_copy():
    t = torch.zeros(5, requires_grad=True)
    assert _core.testing.describe(t)["data_ptr"] == t.data_ptr()


def test_read_only_numpy_arrays_are_viewed_but_never_written():
    a = np.zeros(4, dtype=np.float32)
    a.flags.writeable = False
    assert _core.testing.describe(a)["readonly"]
    with pytest.raises(ValueError, match="tensor: expected a writable array"):
        _core.testing.fill(a, 1.0)


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="src: expected float32 or float16 or bfloat16, got int32"):
        _core.common.convert(torch.zeros(3, dtype=torch.int32), torch.zeros(3))
    with pytest.raises(ValueError, match="dst: expected 3 elements like src, got 4"):
        _core.common.convert(torch.zeros(3), torch.zeros(4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="src: expected a contiguous tensor"):
        _core.common.convert(torch.zeros(4, 4).t(), torch.zeros(16, dtype=torch.bfloat16))
    with pytest.raises(TypeError):
        _core.common.convert([1.0, 2.0], torch.zeros(2))


# Dtype names reach the core through one parser (common/dtype.h): an unknown name is a ValueError that
# names the argument and lists the names the core knows.
def test_dtype_names_are_parsed_in_one_place():
    known = "float32, float16, bfloat16, float64, int8, uint8, int16, int32, int64, bool"
    with pytest.raises(ValueError, match=rf"dtypes\[1\] \(b\): unknown dtype 'float8', expected one of {known}$"):
        _core.sync.FlatLayout(["a", "b"], ["float32", "float8"], [1, 1], 64)
    with pytest.raises(ValueError, match=f"dtype: unknown dtype 'half', expected one of {known}$"):
        _core.ascend.plan(1, 4, 4, 97, 97, 64, False, None, "half")


def test_python_front_door_checks_name_the_argument():
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
        tensors.cast([1.0], torch.float16)
    with pytest.raises(TypeError, match="x: expected float32 or float16 or bfloat16, got int64"):
        tensors.cast(torch.zeros(2, dtype=torch.int64), torch.float16)
    with pytest.raises(TypeError, match="dtype: expected"):
        tensors.cast(torch.zeros(2), torch.int8)
    with pytest.raises(TypeError, match="out: expected float16, got float32"):
        tensors.cast(torch.zeros(2), torch.float16, out=torch.zeros(2))
    with pytest.raises(ValueError, match="out: expected 2 elements like x, got 3"):
        tensors.cast(torch.zeros(2), torch.float16, out=torch.zeros(3, dtype=torch.float16))
    with pytest.raises(ValueError, match="q: expected 4 dimensions, got 2"):
        tensors.check_tensor(torch.zeros(2, 2), "q", ndim=4)
    with pytest.raises(ValueError, match="k: expected a tensor on cuda, got one on cpu"):
        tensors.check_tensor(torch.zeros(2), "k", device="cuda")
    with pytest.raises(ValueError, match="v: expected a contiguous tensor"):
        tensors.check_tensor(torch.zeros(3, 3).t(), "v", contiguous=True)


def test_meta_tensors_are_refused_by_name():
    # A tensor on another device converts to a view whose device check names the argument.
    with pytest.raises((ValueError, TypeError, RuntimeError, BufferError)):
        _core.common.convert(torch.zeros(2, device="meta"), torch.zeros(2))
