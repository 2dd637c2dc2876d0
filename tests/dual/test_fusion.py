"""Fusion training data: labels, explicit and auto pairs, the progressive schedule, self-repair pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pangu_core.config import ConfigError
from pangu_core.distill.sft import IGNORE_INDEX, collate
from pangu_core.dual.fusion import (
    FusionConfig,
    FusionItem,
    Pair,
    RepairPair,
    auto_pairs,
    encode_fusion_pairs,
    explicit_pairs,
    label_modes,
    mode_shares,
    progressive_pairs,
    repair_pair,
    repair_pairs,
    teacher_items,
    to_stages,
)
from pangu_core.dual.response import ThinkingMarkers

SLOW = "<think>a1\nb2\nc3\n</think>\\boxed{{{}}}"
FAST = "<think></think>\\boxed{{{}}}"


def items(n):
    return [FusionItem(f"q{i}", SLOW.format(i), FAST.format(i)) for i in range(n)]


def test_label_modes_by_hand():
    # Fast-suited: fast pass rate >= tau and not below the slow one by more than delta.
    p_fast = [1.0, 0.75, 0.75, 0.5, 0.9, 0.8]
    p_slow = [1.0, 0.75, 1.0, 0.5, 0.95, 0.0]
    assert label_modes(p_fast, p_slow).tolist() == [True, True, False, False, False, True]
    assert label_modes(p_fast, p_slow, tau=0.75, delta=0.05).tolist() == [True, True, False, False, True, True]
    assert label_modes(p_fast, p_slow, tau=0.5, delta=0.25).tolist() == [True, True, True, True, True, True]
    # Rates counted as c / k compare as the fractions they are (3/4 is not below 0.75).
    assert label_modes([3 / 4], [1.0], tau=0.75, delta=0.25).tolist() == [True]
    # Any shape, vectorised.
    assert label_modes(np.ones((2, 3)), np.zeros((2, 3))).shape == (2, 3)


def test_label_modes_errors():
    with pytest.raises(ValueError, match=r"p_slow: expected the shape of p_fast \(2,\), got \(3,\)"):
        label_modes([1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match=r"p_fast: expected pass rates in \[0, 1\], got 1.5"):
        label_modes([1.5], [1])
    with pytest.raises(ValueError, match=r"p_slow: expected pass rates in \[0, 1\], got nan"):
        label_modes([1], [float("nan")])
    with pytest.raises(TypeError, match=r"p_fast: expected numbers in \[0, 1\]"):
        label_modes(["high"], [1])
    with pytest.raises(ValueError, match=r"tau: expected a number in \[0, 1\], got 2"):
        label_modes([1], [1], tau=2)
    with pytest.raises(ValueError, match=r"delta: expected a number in \[0, 1\], got -0.1"):
        label_modes([1], [1], delta=-0.1)


def test_config_round_trip_and_errors():
    config = FusionConfig(tau=0.5, fast_shares=(0.2, 0.4), loop_copies=(2,), repair_mode="auto", seed=3)
    assert FusionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError) as error:
        FusionConfig(tau=1.5, fast_shares=(0.1, 1.2), min_mode_share=0.6, loop_copies=(0,), control_text="")
    assert error.value.problems == [
        "tau: expected a number in [0, 1], got 1.5",
        "fast_shares[1]: expected a number in [0, 1], got 1.2",
        "min_mode_share: expected a number in [0, 0.5], got 0.6",
        "loop_copies[0]: expected an int >= 1, got 0",
        "control_text: expected a non-empty string, got '' (str)",
    ]
    with pytest.raises(ConfigError, match=r"repair_mode: expected one of"):
        FusionConfig(repair_mode="fast")
    with pytest.raises(ConfigError, match=r"share: unknown key"):
        FusionConfig.from_dict({"share": 0.1})


def test_explicit_pairs():
    pairs = explicit_pairs(items(2))
    assert pairs == [Pair("q0", "slow", SLOW.format(0)), Pair("q0", "fast", FAST.format(0)),
                     Pair("q1", "slow", SLOW.format(1)), Pair("q1", "fast", FAST.format(1))]
    with pytest.raises(ValueError, match="modes: expected 'slow' or 'fast' items, got 'auto'"):
        explicit_pairs(items(1), ("auto",))
    with pytest.raises(TypeError, match=r"items\[0\]: expected FusionItem, got tuple"):
        explicit_pairs([("q", "s", "f")])
    with pytest.raises(ValueError, match="items: expected at least one item"):
        explicit_pairs([])


def test_progressive_stages_raise_the_fast_share_with_slow_replay():
    pool = items(20)
    stages = progressive_pairs(pool, FusionConfig(fast_shares=(0.1, 0.3, 0.5)))
    # Every prompt once per stage: 2, 6, 10 fast pairs, the rest slow replay, each with its own answer.
    assert [Counter(p.mode for p in stage) for stage in stages] == [
        {"fast": 2, "slow": 18}, {"fast": 6, "slow": 14}, {"fast": 10, "slow": 10}]
    for stage in stages:
        assert [p.prompt for p in stage] == [item.prompt for item in pool]
        for pair, item in zip(stage, pool):
            assert pair.response == (item.fast if pair.mode == "fast" else item.slow)
    # The draws differ between stages and repeat under the same seed.
    assert {p.prompt for p in stages[1] if p.mode == "fast"} != {p.prompt for p in stages[2] if p.mode == "fast"}
    assert progressive_pairs(pool) == progressive_pairs(pool)


def test_progressive_stages_ask_a_share_of_the_slow_replay_in_auto_mode():
    pool = items(20)
    plain = progressive_pairs(pool, FusionConfig(fast_shares=(0.1, 0.5)))
    mixed = progressive_pairs(pool, FusionConfig(fast_shares=(0.1, 0.5), auto_slow_share=0.5))
    # 18 and 10 slow prompts: 9 and 5 of them asked in auto mode, with the slow answer; the fast draw
    # is the same as without the auto share.
    assert [Counter(p.mode for p in stage) for stage in mixed] == [
        {"fast": 2, "slow": 9, "auto": 9}, {"fast": 10, "slow": 5, "auto": 5}]
    for before, after in zip(plain, mixed):
        for a, b in zip(before, after):
            assert a.response == b.response and (a.mode == b.mode or (a.mode, b.mode) == ("slow", "auto"))
    every = progressive_pairs(pool, FusionConfig(fast_shares=(0.1,), auto_slow_share=1.0))
    assert Counter(p.mode for p in every[0]) == {"fast": 2, "auto": 18}
    with pytest.raises(ConfigError, match=r"auto_slow_share: expected a number in \[0, 1\], got -0.1"):
        FusionConfig(auto_slow_share=-0.1)


def test_auto_pairs_follow_labels_and_keep_each_mode_above_the_floor():
    pool = items(10)
    labels = np.array([True] + [False] * 9)
    pairs = auto_pairs(pool, labels, FusionConfig(explicit_replay=0.0, min_mode_share=0.2))
    # 9 slow-suited prompts need ceil(0.2 * 9 / 0.8) = 3 fast pairs: the one fast prompt, three times.
    auto = [p for p in pairs if p.mode == "auto"]
    assert len(auto) == 12 and mode_shares(pairs) == {"fast": 0.25, "slow": 0.75}
    assert Counter(p.prompt for p in auto if p.response.startswith("<think></think>")) == {"q0": 3}
    assert sorted(p.prompt for p in auto if not p.response.startswith("<think></think>")) == sorted(
        f"q{i}" for i in range(1, 10))
    # Balanced labels are left as they are: one auto pair per prompt.
    balanced = auto_pairs(pool, np.arange(10) % 2 == 0, FusionConfig(explicit_replay=0.0))
    assert sorted(p.prompt for p in balanced) == sorted(item.prompt for item in pool)
    for pair in balanced:
        assert pair.response == (FAST if int(pair.prompt[1:]) % 2 == 0 else SLOW).format(pair.prompt[1:])


def test_the_floor_holds_for_every_split():
    # Exactly at or just above min_mode_share for any number of fast-suited prompts.
    pool = items(25)
    for fast in range(1, 25):
        labels = np.arange(25) < fast
        shares = mode_shares(auto_pairs(pool, labels, FusionConfig(explicit_replay=0.0)))
        assert min(shares.values()) >= 0.2 - 1e-12
        if 0.2 <= fast / 25 <= 0.8:
            assert shares["fast"] == fast / 25


def test_auto_pairs_replay_explicit_tags_and_refuse_one_mode():
    pool = items(8)
    pairs = auto_pairs(pool, np.arange(8) < 4, FusionConfig(explicit_replay=0.5))
    assert Counter(p.mode for p in pairs) == {"auto": 8, "slow": 2, "fast": 2}
    with pytest.raises(ValueError, match=r"fast_suited: no fast-suited item; auto pairs need both modes"):
        auto_pairs(pool, np.zeros(8, dtype=bool))
    assert {p.response for p in auto_pairs(pool, np.zeros(8, bool), FusionConfig(min_mode_share=0.0))
            if p.mode == "auto"} == {SLOW.format(i) for i in range(8)}
    with pytest.raises(ValueError, match=r"fast_suited: expected 8 bools \(one per item\)"):
        auto_pairs(pool, [1, 0])


def test_fast_replay_can_be_drawn_from_the_fast_suited_prompts_only():
    pool = items(10)
    labels = np.arange(10) < 3
    pairs = auto_pairs(pool, labels, FusionConfig(explicit_replay=1.0, min_mode_share=0.0, fast_replay="fast_suited"))
    # 10 auto pairs, then 10 replay pairs: 5 slow from every prompt, 5 fast from q0-q2 only.
    assert Counter(p.mode for p in pairs) == {"auto": 10, "slow": 5, "fast": 5}
    assert {p.prompt for p in pairs if p.mode == "fast"} <= {"q0", "q1", "q2"}
    assert all(p.response == FAST.format(p.prompt[1:]) for p in pairs if p.mode == "fast")
    assert all(p.response == SLOW.format(p.prompt[1:]) for p in pairs if p.mode == "slow")
    everywhere = auto_pairs(pool, labels, FusionConfig(explicit_replay=1.0, min_mode_share=0.0))
    assert len({p.prompt for p in everywhere if p.mode == "fast"} - {"q0", "q1", "q2"}) > 0
    # No fast-suited prompt (a pool of one mode): the fast replay comes from every prompt.
    none = auto_pairs(pool, np.zeros(10, bool), FusionConfig(explicit_replay=1.0, min_mode_share=0.0,
                                                             fast_replay="fast_suited"))
    assert Counter(p.mode for p in none) == {"auto": 10, "slow": 5, "fast": 5}
    with pytest.raises(ConfigError, match=r"fast_replay"):
        FusionConfig.from_dict({"fast_replay": "some"})


def test_repair_pair_by_hand():
    item = FusionItem("q", "<think>a1\nb2\nc3\n</think>\\boxed{3}", FAST.format(3))
    pair = repair_pair(item, line=1, copies=3, config=FusionConfig(control_text="<W>"))
    # The masked part: open marker, lines up to the looped one, that line twice more, the control text;
    # the response: the correct rest, close marker and answer.
    assert pair == RepairPair("q", "slow", "<think>a1\nb2\nb2\nb2\n<W>", "c3\n</think>\\boxed{3}")
    assert repair_pair(item, 2, 1, FusionConfig(control_text="<W>")).response == "</think>\\boxed{3}"
    with pytest.raises(ValueError, match=r"line: expected an int in \[0, 3\), got 3"):
        repair_pair(item, 3, 1)
    with pytest.raises(ValueError, match=r"copies: expected an int >= 1, got 0"):
        repair_pair(item, 0, 0)
    with pytest.raises(ValueError, match=r"item.slow: expected a closed, non-empty thinking block"):
        repair_pair(FusionItem("q", FAST.format(1), FAST.format(1)), 0, 1)


def test_teacher_repair_pairs_rebuild_the_slow_answer():
    from pangu_core.tasks import generate_math_tasks

    tasks = generate_math_tasks(12, levels=(2, 3, 4), seed=1)
    pool = teacher_items(tasks)
    config = FusionConfig(loop_copies=(1, 3))
    for i, (item, pair) in enumerate(zip(pool, repair_pairs(pool, config))):
        copies = (1, 3)[i % 2]
        looped, _, _ = pair.prefix.partition(config.control_text)
        lines = looped[len("<think>"):].splitlines(keepends=True)
        # The last line is repeated `copies` times at the tail of the trace ...
        assert lines[len(lines) - copies:] == [lines[-1]] * copies
        # ... and with the extra copies and the control text taken out, prefix + response is the slow answer.
        assert looped[:len(looped) - len(lines[-1]) * (copies - 1)] + pair.response == item.slow
        assert pair.prefix.endswith(config.control_text) and pair.mode == "slow"
    assert repair_pairs(pool, config) == repair_pairs(pool, config)


def test_encoding_masks_the_looped_trace(tokenizer):
    # The loss covers the correct rest only: the looped trace and the control text sit in the masked part.
    pool = items(2)
    pairs = [repair_pair(pool[0], 1, 3), Pair("q1", "fast", pool[1].fast)]
    repair_example, plain_example = encode_fusion_pairs(tokenizer, pairs)
    batch = collate([repair_example], tokenizer.pad_token_id)
    targets = [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]
    assert tokenizer.decode(targets) == pairs[0].response + tokenizer.eos_token
    assert tokenizer.decode(repair_example.prompt_ids).endswith("b2\nb2\nb2\n" + FusionConfig().control_text)
    from pangu_core.distill.sft import encode_pairs

    assert plain_example == encode_pairs(tokenizer, [pairs[1]])[0]
    with pytest.raises(ValueError, match=r"pairs\[0\]: \d+ tokens, more than max_length 10"):
        encode_fusion_pairs(tokenizer, pairs, max_length=10)


def test_to_stages_feed_the_sft_trainer(tokenizer, one_torch_thread):
    from pangu_core.distill.sft import SFTConfig, SFTTrainer
    from pangu_core.tasks.model import tiny_pangu

    pool = items(6)
    stage_pairs = progressive_pairs(pool, FusionConfig(fast_shares=(0.0, 0.5)))
    stage_pairs[1] = stage_pairs[1] + repair_pairs(pool[:2])
    stages = to_stages(tokenizer, stage_pairs, max_steps=5)
    assert [s.until_step for s in stages] == [3, 5] and [len(s.examples) for s in stages] == [6, 8]
    trainer = SFTTrainer(tiny_pangu("nano", tokenizer), tokenizer, stages,
                         SFTConfig(max_steps=5, batch_size=4, warmup_steps=1, max_length=64))
    assert len(trainer.train(progress=False).losses) == 5
    with pytest.raises(ValueError, match=r"max_steps: expected an int >= the number of stages 2, got 1"):
        to_stages(tokenizer, stage_pairs, max_steps=1)
    with pytest.raises(ValueError, match=r"stage_pairs\[1\]: expected at least one pair"):
        to_stages(tokenizer, [stage_pairs[0], []], max_steps=4)


def test_custom_markers():
    markers = ThinkingMarkers("[[T]]", "[[/T]]")
    item = FusionItem("q", "[[T]]x1\ny2\n[[/T]]\\boxed{2}", "[[T]][[/T]]\\boxed{2}")
    assert repair_pair(item, 0, 2, FusionConfig(control_text="!"), markers).prefix == "[[T]]x1\nx1\n!"
    assert mode_shares([Pair("q", "auto", item.fast), Pair("q", "auto", item.slow)], markers) == {
        "fast": 0.5, "slow": 0.5}
