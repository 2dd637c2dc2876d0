"""Selection maths of distillation against hand-computed values, and its error paths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pangu_core.distill.selection import (
    complexity,
    gaussian_weights,
    histogram,
    mid_share,
    select,
    steps_for_tokens,
)
from pangu_core.distill.sft import SFTExample


def test_complexity_is_one_minus_the_pass_rate():
    assert complexity([0, 1, 3, 4], 4).tolist() == [1.0, 0.75, 0.25, 0.0]
    with pytest.raises(ValueError, match="correct: expected integer counts in \\[0, k=4\\]"):
        complexity([5], 4)
    with pytest.raises(ValueError, match="correct"):
        complexity([1.5], 4)
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        complexity([0], 0)


def test_gaussian_weights_match_hand_computed_values():
    got = gaussian_weights([0.5, 0.3, 0.0, 1.0], mu=0.5, sigma=0.2, floor=0.05)
    # 0.95 * exp(-(C - 0.5)^2 / 0.08) + 0.05, written out
    want = [1.0, 0.95 * math.exp(-0.5) + 0.05, 0.95 * math.exp(-3.125) + 0.05, 0.95 * math.exp(-3.125) + 0.05]
    assert np.allclose(got, want, rtol=0, atol=1e-15)
    assert np.allclose(want[1:3], [0.6262041272, 0.0917400849], atol=1e-9)
    assert gaussian_weights([0.9], mu=0.9, sigma=1.0, floor=1.0).tolist() == [1.0]
    for kwargs, name in (({"sigma": 0.0}, "sigma"), ({"floor": 1.5}, "floor"), ({"mu": math.nan}, "mu")):
        with pytest.raises(ValueError, match=f"{name}: expected"):
            gaussian_weights([0.5], **kwargs)
    with pytest.raises(ValueError, match="C: expected complexities in \\[0, 1\\]"):
        gaussian_weights([1.2])


def test_gaussian_draw_takes_only_positive_weights_first():
    # With no floor and a very narrow bump, every C away from mu has weight 0 (exp underflows).
    c = [1.0, 0.5, 0.0, 0.5, 1.0, 0.0]
    for seed in range(20):
        assert select(c, 2, "gaussian", seed=seed, sigma=1e-4, floor=0.0).tolist() == [1, 3]
    # Asking for more than the positive weights fills up with the rest; all distinct.
    picked = select(c, 4, "gaussian", seed=0, sigma=1e-4, floor=0.0)
    assert {1, 3} <= set(picked.tolist()) and len(set(picked.tolist())) == 4


def test_gaussian_first_draw_follows_the_weights():
    # P(first pick = i) = w_i / sum(w): over 4,000 seeded draws the shares sit near the weights.
    c = np.array([0.5, 0.3, 0.0])
    weights = gaussian_weights(c)
    counts = np.bincount([select(c, 1, "gaussian", seed=s)[0] for s in range(4000)], minlength=3)
    assert np.allclose(counts / 4000, weights / weights.sum(), atol=0.03)


def test_random_level_matched_and_fixed_levels():
    rng = np.random.default_rng(0)
    c = rng.uniform(size=200).round(2)
    levels = np.repeat([1, 2, 3, 4, 5], 40)
    uniform = select(c, 50, "random", levels, seed=1)
    assert len(set(uniform.tolist())) == 50 and uniform.tolist() == sorted(uniform.tolist())
    assert select(c, 50, "random", seed=1).tolist() == uniform.tolist()  # deterministic in the seed
    assert select(c, 50, "random", seed=2).tolist() != uniform.tolist()
    gaussian = select(c, 50, "gaussian", levels, seed=4)
    matched = select(c, 50, "level_matched_random", levels, seed=4)
    assert np.bincount(levels[matched], minlength=6).tolist() == np.bincount(levels[gaussian], minlength=6).tolist()
    assert matched.tolist() != gaussian.tolist()
    fixed = select(c, 30, "fixed_levels", levels, seed=0, fixed=[2, 4])
    assert len(fixed) == 30 and set(levels[fixed].tolist()) <= {2, 4}
    assert len(select(c, 100, "fixed_levels", levels, seed=0, fixed=[5])) == 40  # fewer candidates: all
    assert len(select(c, 500, "random", seed=0)) == 200


def test_selection_errors_name_the_argument():
    with pytest.raises(ValueError, match="strategy: expected one of gaussian, random"):
        select([0.5], 1, "best")
    with pytest.raises(ValueError, match="n: expected an int >= 0"):
        select([0.5], -1)
    with pytest.raises(ValueError, match="levels: strategy 'level_matched_random' needs"):
        select([0.5], 1, "level_matched_random")
    with pytest.raises(ValueError, match="levels: expected 2 values"):
        select([0.5, 0.5], 1, "random", levels=[1])
    with pytest.raises(ValueError, match="fixed: strategy 'fixed_levels' needs at least one level"):
        select([0.5], 1, "fixed_levels", levels=[1])
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        select([0.5], 1, seed=-3)


def test_histogram_and_mid_share():
    assert histogram([0.0, 0.05, 0.1, 0.95, 1.0]) == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert histogram([0.5], bins=4) == [0, 0, 1, 0]
    assert mid_share([0.25, 0.5, 0.75, 0.8, 0.2]) == pytest.approx(3 / 5)
    assert math.isnan(mid_share([]))


def test_steps_for_tokens_gives_equal_token_budgets():
    def example(n: int) -> SFTExample:
        return SFTExample(prompt_ids=(1, 2), response_ids=tuple(range(n)))

    # mean response 20 tokens, batches of 4: 800 tokens are 10 steps
    assert steps_for_tokens([example(10), example(30)], batch_size=4, tokens=800) == 10
    # longer answers, fewer steps for the same budget
    assert steps_for_tokens([example(40)], batch_size=4, tokens=800) == 5
    assert steps_for_tokens([7, 9], batch_size=2, tokens=1) == 1  # counts work too; at least one step
    with pytest.raises(ValueError, match="examples: expected at least one example"):
        steps_for_tokens([], 4, 100)
    with pytest.raises(ValueError, match="tokens: expected an int >= 1"):
        steps_for_tokens([example(3)], 4, 0)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        steps_for_tokens([example(3)], 0, 10)
