"""The measurement maths: savings, oracle router, random-mix line, test mixes, frontier, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pangu_core.dual.metrics import (
    frontier_violation,
    level_differences,
    mix_mean,
    mix_weights,
    oracle_router,
    per_level_means,
    random_mix,
    random_mix_at_tokens,
    savings,
)


def test_savings_by_hand():
    # auto spends 30 tokens where slow spends 120: a quarter, so S = 0.75
    assert savings(30.0, 120.0) == pytest.approx(0.75)
    assert savings(120.0, 120.0) == 0.0 and savings(150.0, 100.0) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="tokens_slow: expected a number > 0"):
        savings(1.0, 0.0)


def test_mixes_by_hand():
    assert mix_weights("uniform", [1, 2, 3, 4]) == {"1": 0.25, "2": 0.25, "3": 0.25, "4": 0.25}
    assert mix_weights("easy_heavy", ["1", "2", "3", "4", "5"]) == pytest.approx(
        {"1": 0.5, "2": 0.2, "3": 0.1, "4": 0.1, "5": 0.1})
    # levels 1-3 only: 0.5 / 0.2 / 0.1 renormalised by 0.8
    assert mix_weights("easy_heavy", [1, 2, 3]) == pytest.approx({"1": 0.625, "2": 0.25, "3": 0.125})
    accuracy = {"1": 1.0, "2": 0.5, "3": 0.0, "4": 0.0, "5": 0.0}
    assert mix_mean(accuracy, mix_weights("uniform", accuracy)) == pytest.approx(0.3)
    assert mix_mean(accuracy, mix_weights("easy_heavy", accuracy)) == pytest.approx(0.5 + 0.1)
    with pytest.raises(ValueError, match="mix: expected one of uniform, easy_heavy"):
        mix_weights("hard", [1])
    with pytest.raises(ValueError, match="easy_heavy mix has levels 1-5"):
        mix_weights("easy_heavy", [6])
    with pytest.raises(KeyError, match="no value for level"):
        mix_mean({"1": 1.0}, {"1": 0.5, "2": 0.5})


def test_oracle_router_by_hand():
    # prompt 0: fast right (takes fast, 5 tokens); 1: fast wrong, slow right (slow, 50);
    # 2: both wrong (slow, 60); 3: fast right, slow wrong (fast, 4: the oracle gains accuracy).
    correct, tokens, fast = oracle_router([1, 0, 0, 1], [1, 1, 0, 0], [5, 6, 7, 4], [40, 50, 60, 45])
    assert correct.tolist() == [True, True, False, True]
    assert tokens.tolist() == [5.0, 50.0, 60.0, 4.0]
    assert fast.tolist() == [True, False, False, True]
    # over the four prompts: S = 1 - (5 + 50 + 60 + 4) / (40 + 50 + 60 + 45) = 1 - 119/195
    assert savings(tokens.mean(), np.mean([40, 50, 60, 45])) == pytest.approx(1 - 119 / 195)
    with pytest.raises(ValueError, match="slow_tokens: expected 4 values like fast_correct, got 3"):
        oracle_router([1, 0, 0, 1], [1, 1, 0, 0], [5, 6, 7, 4], [1, 2, 3])


def test_level_differences_by_hand():
    # Levels of the subtrahend that the minuend has; 0.96 - 0.98 is -0.02, not -0.020000000000000018.
    assert level_differences({"1": 0.96, "2": 0.5, "3": 1.0}, {"1": 0.98, "2": 0.25, "4": 1.0}) == {"1": -0.02,
                                                                                               "2": 0.25}
    assert level_differences({}, {"1": 1.0}) == {}


def test_per_level_means_by_hand():
    assert per_level_means([1, 2, 1, 10], [1.0, 4.0, 0.0, 2.0]) == {"1": 0.5, "2": 4.0, "10": 2.0}
    with pytest.raises(ValueError, match="values: expected 2 values"):
        per_level_means([1, 2], [1.0])


def test_random_mix_line_by_hand():
    fast, slow = (0.4, 10.0), (0.9, 110.0)
    assert random_mix(0.0, fast, slow) == slow and random_mix(1.0, fast, slow) == fast
    assert random_mix(0.3, fast, slow) == pytest.approx((0.3 * 0.4 + 0.7 * 0.9, 0.3 * 10 + 0.7 * 110))
    # 60 tokens is half-way between 10 and 110: share 0.5, accuracy 0.65
    assert random_mix_at_tokens(60.0, fast, slow) == pytest.approx((0.5, 0.65))
    # beyond the ends the share is clipped
    assert random_mix_at_tokens(500.0, fast, slow) == (0.0, 0.9)
    assert random_mix_at_tokens(1.0, fast, slow) == (1.0, 0.4)
    with pytest.raises(ValueError, match="share: expected a number in \\[0, 1\\]"):
        random_mix(1.5, fast, slow)


def test_frontier_violation_by_hand():
    assert frontier_violation([10, 20, 30], [0.5, 0.6, 0.9]) == 0.0
    # in token order the accuracies are 0.5, 0.8, 0.7: a drop of 0.1
    assert frontier_violation([30, 10, 20], [0.7, 0.5, 0.8]) == pytest.approx(0.1)
    # equal tokens are not a violation whatever their order
    assert frontier_violation([10, 10], [0.9, 0.2]) == 0.0
    with pytest.raises(ValueError, match="accuracy: expected 2 values"):
        frontier_violation([1, 2], [0.1])
