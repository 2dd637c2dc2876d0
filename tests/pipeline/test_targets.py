"""The pipeline's targets on the final model, from hand-made figures."""

from __future__ import annotations

from pangu_core.pipeline.report import targets


def final_figures(slow, auto, share):
    return {"accuracy": {"slow": dict(enumerate(slow, 1)), "auto": dict(enumerate(auto, 1))},
            "fast_share": {"auto": {"1": share}}}


def mixes(auto_tokens, slow_tokens):
    return {"easy_heavy": {"auto": {"tokens": auto_tokens}, "slow": {"tokens": slow_tokens}}}


def test_targets_by_hand():
    got = targets(final_figures([1.0, 0.98, 0.9], [1.0, 0.96, 0.95], 0.95), mixes(40.0, 50.0))
    # 0.96 - 0.98 is -0.020000000000000018 in floats: a gap of exactly 0.02 is met.
    assert got["auto_minus_slow_min"] == {"value": -0.02, "target": ">= -0.02 on every level", "met": True}
    assert got["slow_accuracy_min"]["value"] == 0.9 and got["slow_accuracy_min"]["met"]
    assert got["fast_share_level_1"]["met"] and got["auto_tokens_over_slow_easy_heavy"]["value"] == 0.8
    assert got["auto_tokens_over_slow_easy_heavy"]["met"]
    bad = targets(final_figures([1.0, 0.89], [0.9, 0.89], 0.5), mixes(45.0, 50.0))
    assert [bad[name]["met"] for name in ("slow_accuracy_min", "auto_minus_slow_min", "fast_share_level_1",
                                          "auto_tokens_over_slow_easy_heavy")] == [False, False, False, False]
    empty = targets({"accuracy": {"slow": {"1": 1.0}, "auto": {"1": 1.0}}, "fast_share": {"auto": {}}},
                    mixes(0.0, 0.0))
    assert empty["fast_share_level_1"]["met"] is None and empty["auto_tokens_over_slow_easy_heavy"]["met"] is None
