"""The report's measurement section from hand-made evaluation results: mixes, sweep, stress, targets."""

from __future__ import annotations

import pytest

from pangu_core.dual.report import mix_summary, stress_summary, sweep_summary, targets


def rec(level, correct, tokens, fast=False, looped=False, repairs=0):
    return {"level": level, "correct": correct, "tokens": tokens, "fast": fast, "looped": looped, "repairs": repairs}


# Two prompts per level. Fast is right on level 1 only (10 tokens); slow is right everywhere (100 on
# level 1, 200 on level 2); auto answers fast on level 1 and slow on level 2.
RESULT = {"records": {
    "slow": [rec(1, True, 100), rec(1, True, 100), rec(2, True, 200), rec(2, True, 200)],
    "fast": [rec(1, True, 10, True), rec(1, True, 10, True), rec(2, False, 10, True), rec(2, False, 10, True)],
    "auto": [rec(1, True, 10, True), rec(1, True, 10, True), rec(2, True, 200), rec(2, True, 200)],
}}


def test_mix_summary_by_hand():
    uniform = mix_summary(RESULT, "uniform")
    assert uniform["slow"] == {"accuracy": 1.0, "tokens": 150.0, "fast_share": 0.0}
    assert uniform["auto"]["tokens"] == 105.0 and uniform["auto"]["savings"] == pytest.approx(1 - 105 / 150)
    # the oracle routes exactly as auto does here
    assert uniform["oracle"]["savings"] == pytest.approx(uniform["auto"]["savings"])
    assert uniform["savings_vs_oracle"] == pytest.approx(1.0)
    # random mix at auto's 105 tokens: share (150 - 105) / (150 - 10) = 45/140, accuracy 1 - share * 0.5
    share = 45 / 140
    assert uniform["random_at_auto_tokens"]["fast_share"] == pytest.approx(share)
    assert uniform["auto_over_random"] == pytest.approx(1.0 - (1 - share * 0.5))
    # the oracle (here the same point as auto) has the same margin over the random line
    assert uniform["oracle_over_random"] == pytest.approx(uniform["auto_over_random"])
    # easy-heavy over levels 1-2: weights 5/7 and 2/7
    heavy = mix_summary(RESULT, "easy_heavy")
    assert heavy["auto"]["tokens"] == pytest.approx(10 * 5 / 7 + 200 * 2 / 7)
    assert heavy["slow"]["tokens"] == pytest.approx(100 * 5 / 7 + 200 * 2 / 7)
    with pytest.raises(KeyError, match="records of mode 'auto'"):
        mix_summary({"records": {"slow": [], "fast": []}}, "uniform")


def test_sweep_summary_flags_a_non_monotone_frontier():
    def point(bias, accuracy, tokens):
        return {"bias": bias, "result": {name: {"auto": {"1": value}} for name, value in
                                          (("accuracy", accuracy), ("tokens", tokens), ("fast_share", 0.5))}}
    good = sweep_summary([point(2.0, 0.5, 10), point(-2.0, 0.9, 100), point(0.0, 0.8, 50)])
    assert [p["bias"] for p in good["points"]] == [-2.0, 0.0, 2.0] and good["monotone"]
    bad = sweep_summary([point(2.0, 0.85, 10), point(0.0, 0.8, 50)])
    assert not bad["monotone"] and bad["frontier_violation"] == pytest.approx(0.05)


def test_stress_summary_by_hand():
    # Greedy: without repair 2 of 4 answers loop (one of them right); with repair none is left looping,
    # the two clean prompts keep their verdicts and tokens fall.
    plain = {"records": {"auto": [rec(4, True, 50), rec(4, False, 60), rec(5, False, 300, looped=True),
                                  rec(5, True, 300, looped=True)]}}
    fixed = {"records": {"auto": [rec(4, True, 50), rec(4, False, 60), rec(5, True, 120, repairs=1),
                                  rec(5, False, 150, repairs=1)]}}
    summary = stress_summary({"greedy": {"plain": plain, "repair": fixed}}, "auto")
    greedy = summary["decodings"]["greedy"]
    assert greedy["plain"]["loop_rate"] == 0.5 and greedy["repair"]["loop_rate"] == 0.0
    assert greedy["repair"]["repairs"] == 0.5 and greedy["loop_rate_drop"] == 1.0
    assert greedy["accuracy_change_not_looping"] == 0.0
    assert greedy["token_overhead"] == pytest.approx(380 / 710 - 1)
    assert summary["plain_loop_rate"] == 0.5 and not summary["few_loops"] and "note" not in summary
    quiet = stress_summary({"greedy": {"plain": fixed, "repair": fixed}}, "auto")
    assert quiet["few_loops"] and "loops on 0.00% of the stress set (0 of 4 answers)" in quiet["note"]
    assert quiet["decodings"]["greedy"]["loop_rate_drop"] is None


def test_targets_by_hand():
    start = {"accuracy": {"slow": {"1": 1.0, "2": 0.9, "3": 0.5}}}
    final = {"accuracy": {"slow": {"1": 1.0, "2": 0.85, "3": 0.5}, "auto": {"1": 1.0, "2": 0.84, "3": 0.4}},
             "mode_follow": {"slow": {"1": 1.0, "2": 1.0, "3": 1.0}, "fast": {"1": 1.0, "2": 0.98, "3": 1.0}},
             "fast_share": {"auto": {"1": 0.95, "2": 0.5, "3": 0.1}}}
    mixes = {"uniform": {"savings_vs_oracle": 0.9, "auto_over_random": 0.06, "oracle_over_random": 0.08}}
    sweep = {"frontier_violation": 0.0, "monotone": True}
    stress = {"decodings": {"greedy": {"loop_rate_drop": None, "accuracy_change_not_looping": 0.0,
                                       "token_overhead": -0.2}}}
    got = targets(start, final, mixes, sweep, stress)
    assert got["mode_follow_min"]["value"] == 0.98 and got["mode_follow_min"]["met"] is False
    assert got["slow_accuracy_drop_max"]["value"] == pytest.approx(0.05) and not got["slow_accuracy_drop_max"]["met"]
    assert got["auto_minus_slow_min"]["value"] == pytest.approx(-0.1) and not got["auto_minus_slow_min"]["met"]
    assert got["fast_share_level_1"]["met"] and got["fast_share_levels_3_5_max"]["value"] == 0.1
    assert not got["fast_share_levels_3_5_max"]["met"]
    assert got["savings_vs_oracle_uniform"]["met"] and got["auto_over_random_uniform"]["met"]
    assert got["auto_over_random_uniform"]["oracle"] == 0.08
    assert got["bias_sweep_monotone"]["met"] and got["stress_greedy_loop_rate_drop"]["met"] is None
    assert got["stress_greedy_token_overhead"]["met"]


def test_targets_count_a_gap_of_exactly_two_points_as_met():
    # 0.98 - 0.96 is 0.020000000000000018 in floats: still within 0.02, for both the drop and the gap.
    start = {"accuracy": {"slow": {"1": 0.98}}}
    final = {"accuracy": {"slow": {"1": 0.96}, "auto": {"1": 0.94}},
             "mode_follow": {"slow": {"1": 1.0}, "fast": {"1": 1.0}}, "fast_share": {"auto": {"1": 1.0}}}
    stress = {"decodings": {}}
    got = targets(start, final, {}, {"frontier_violation": 0.0, "monotone": True}, stress)
    assert got["slow_accuracy_drop_max"] == {"value": 0.02, "target": "<= 0.02 below the start checkpoint, per level",
                                             "met": True}
    assert got["auto_minus_slow_min"]["value"] == -0.02 and got["auto_minus_slow_min"]["met"]
    final["accuracy"]["auto"]["1"] = 0.93
    assert not targets(start, final, {}, {"frontier_violation": 0.0, "monotone": True}, stress)[
        "auto_minus_slow_min"]["met"]
