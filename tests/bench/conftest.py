"""Checks shared by the benchmark tests."""

from __future__ import annotations

from typing import Any, Callable

import pytest


def _check_spread(case: dict[str, Any]) -> None:
    """The case records ``ratio_range`` [lo, hi] and its median ratio lies in it: every repetition's
    ratio is at least lo and at most hi, so the ratio of the sides' medians is too (up to rounding)."""
    lo, hi = case["ratio_range"]
    assert isinstance(lo, float) and isinstance(hi, float) and 0 < lo <= hi
    assert lo * (1 - 1e-9) <= case["ratio"] <= hi * (1 + 1e-9)


@pytest.fixture
def check_spread() -> Callable[[dict[str, Any]], None]:
    return _check_spread
