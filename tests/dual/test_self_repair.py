"""Repetition self-repair: the loop detector on constructed loops, and repair on a model forced to loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor

from pangu_core.config import ConfigError
from pangu_core.dual.self_repair import (
    DEFAULT_CONTROL_TEXT,
    Loop,
    LoopDetector,
    RepairConfig,
    find_loop,
    generate_with_repair,
)


def stream(ids, config=RepairConfig()):
    """The detector's answer after each token of one row."""
    detector = LoopDetector(1, config)
    return [int(detector.push([t])[0]) for t in ids]


def distinct(n, offset=0):
    return list(range(1000 + offset, 1000 + offset + n))


@pytest.mark.parametrize("period", [8, 9, 31, 64])
def test_fires_exactly_when_the_third_copy_completes(period):
    # A loop is r=3 whole copies at the tail: nothing before the last token of the third copy.
    gram = distinct(period)
    ids = distinct(5, offset=500) + gram * 3
    out = stream(ids)
    assert out[:-1] == [0] * (len(ids) - 1) and out[-1] == period
    assert find_loop(ids) == Loop(period, 5)
    assert find_loop(ids[:-1]) is None


@pytest.mark.parametrize("period", [7, 65])
def test_periods_outside_the_range_do_not_fire(period):
    gram = distinct(period)
    assert set(stream(gram * 3)) == {0} and find_loop(gram * 3) is None


def test_short_period_fires_once_its_multiple_is_in_range():
    # Six copies of a 7-gram are three copies of a 14-gram: a loop of period 14, not before.
    gram = distinct(7)
    out = stream(gram * 6)
    assert out[:-1] == [0] * 41 and out[-1] == 14


def test_two_copies_and_near_loops_do_not_fire():
    gram = distinct(10)
    assert set(stream(gram * 2)) == {0}
    for position in (0, 13, 29):  # one token off in the first, second or last copy
        ids = gram * 3
        ids[position] = 7
        assert set(stream(ids)) == {0}, position
        assert find_loop(ids) is None


def test_repeats_is_configurable():
    config = RepairConfig(min_period=3, max_period=5, repeats=4)
    gram = distinct(4)
    out = stream(gram * 4, config)
    assert out[:-1] == [0] * 15 and out[-1] == 4


def test_streaming_matches_the_direct_check_on_random_text():
    # Random text over 3 symbols is full of short loops: the streaming answer after every token
    # equals the direct check of that prefix, on every row of a batch.
    config = RepairConfig(min_period=2, max_period=6, repeats=3)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 3, size=(4, 300))
    detector = LoopDetector(4, config)
    for t in range(rows.shape[1]):
        got = detector.push(rows[:, t])
        for row in range(4):
            loop = find_loop(rows[row, :t + 1].tolist(), config)
            assert got[row] == (loop.period if loop else 0), (row, t)


def test_detector_state_does_not_grow_with_the_text():
    # Each token costs one comparison per candidate period against a window of max_period tokens:
    # the state stays the same size however long the text, so checking every tail is O(len) in all.
    detector = LoopDetector(2)
    rng = np.random.default_rng(1)
    for _ in range(3000):
        detector.push(rng.integers(0, 50, size=2))
    assert detector.history.shape == (2, 64) and detector.runs.shape == (2, 57)
    assert detector.lengths.tolist() == [3000, 3000]


def test_priming_a_row_equals_streaming_it():
    gram = distinct(9)
    detector = LoopDetector(2)
    detector.extend(0, gram * 2 + gram[:-1])
    for t in gram * 2 + gram[:-1]:
        detector.push([t, t])
    assert detector.push([gram[-1], gram[-1]]).tolist() == [9, 9]


def test_config_round_trip_and_errors():
    config = RepairConfig(min_period=4, max_period=16, repeats=2, control_text="\nStop.\n", max_repairs=1)
    assert RepairConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"max_period: expected an int >= min_period=8, got 4"):
        RepairConfig(max_period=4)
    with pytest.raises(ConfigError, match=r"repeats: expected an int >= 2, got 1"):
        RepairConfig(repeats=1)
    with pytest.raises(ConfigError, match=r"control_text: expected a non-empty string"):
        RepairConfig(control_text="")
    with pytest.raises(ConfigError, match=r"max_repairs: expected an int >= 0, got -1"):
        RepairConfig(max_repairs=-1)
    with pytest.raises(ConfigError, match=r"period: unknown key"):
        RepairConfig.from_dict({"period": 3})
    with pytest.raises(ValueError, match=r"tokens: expected 2 ids"):
        LoopDetector(2).push([1])
    with pytest.raises(ValueError, match=r"batch_size: expected an int >= 1"):
        LoopDetector(0)


class ForcedLoop(LogitsProcessor):
    """Rigs a model: each row writes the successor in ``pattern`` of its last token (a loop of period
    len(pattern)); a row whose prompt holds ``quit_id`` emits eos at once; unless ``stubborn``, a row
    emits eos once the control text is in it."""

    def __init__(self, pattern, control, eos_id, quit_id, stubborn):
        self.pattern, self.control, self.eos_id = pattern, control, eos_id
        self.quit_id, self.stubborn = quit_id, stubborn

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        for row, ids in enumerate(input_ids.tolist()):
            text = "," + ",".join(map(str, ids)) + ","
            repaired = ("," + ",".join(map(str, self.control)) + ",") in text
            if self.quit_id in ids or (repaired and not self.stubborn):
                token = self.eos_id
            elif ids[-1] in self.pattern:
                token = self.pattern[(self.pattern.index(ids[-1]) + 1) % len(self.pattern)]
            else:
                token = self.pattern[0]
            forced[row, token] = 0.0
        return forced


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from pangu_core.tasks.model import tiny_pangu

    return tiny_pangu("nano", tokenizer).eval()


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def rigged(tokenizer, stubborn):
    pattern = ids_of(tokenizer, "0123456789")
    control = ids_of(tokenizer, DEFAULT_CONTROL_TEXT)
    return pattern, control, [ForcedLoop(pattern, control, tokenizer.eos_token_id, ids_of(tokenizer, "Q")[0], stubborn)]


def test_repair_cuts_the_loop_and_the_model_recovers(tiny, tokenizer, one_torch_thread):
    pattern, control, processors = rigged(tokenizer, stubborn=False)
    eos = tokenizer.eos_token_id
    prompts = [ids_of(tokenizer, "<|user|>loop<|assistant|>"), ids_of(tokenizer, "<|user|>Q<|assistant|>")]
    looping, quitting = generate_with_repair(tiny, tokenizer, prompts, 100, logits_processor=processors)
    # Three copies (30 tokens) fire the detector; the loop is cut to one copy, the control text
    # follows, and the rigged model then ends: 30 generated + eos.
    assert looping.ids == tuple(pattern + control + [eos])
    assert (looping.generated, looping.repairs, looping.looped, looping.finished) == (31, 1, False, True)
    assert quitting.ids == (eos,) and (quitting.generated, quitting.repairs, quitting.finished) == (1, 0, True)
    assert DEFAULT_CONTROL_TEXT in tokenizer.decode(looping.ids)


def test_repairs_stop_at_the_limit_and_tokens_count_across_rounds(tiny, tokenizer, one_torch_thread):
    pattern, control, processors = rigged(tokenizer, stubborn=True)
    prompt = ids_of(tokenizer, "<|user|>loop<|assistant|>")
    config = RepairConfig(max_repairs=2)
    (out,) = generate_with_repair(tiny, tokenizer, [prompt], 200, config, logits_processor=processors)
    # Two repairs of 30 tokens each, then plain generation to the budget: 140 more tokens.
    assert out.ids == tuple(pattern + control + pattern + control + pattern * 14)
    assert (out.generated, out.repairs, out.looped, out.finished) == (200, 2, True, False)
    (plain,) = generate_with_repair(tiny, tokenizer, [prompt], 200, config, repair=False, logits_processor=processors)
    assert plain.ids == tuple(pattern * 20) and (plain.generated, plain.repairs, plain.looped) == (200, 0, True)


def test_a_loop_at_the_budget_is_not_repaired(tiny, tokenizer, one_torch_thread):
    # With no token left to go on, cutting and appending the control text would only hide the loop.
    pattern, _, processors = rigged(tokenizer, stubborn=False)
    (out,) = generate_with_repair(tiny, tokenizer, [ids_of(tokenizer, "x")], 30, logits_processor=processors)
    assert out.ids == tuple(pattern * 3) and (out.repairs, out.looped, out.finished) == (0, True, False)


def test_rows_of_a_batch_are_repaired_independently(tiny, tokenizer, one_torch_thread):
    # Prompts of different lengths and behaviours in one batch give what each gives alone.
    _, _, processors = rigged(tokenizer, stubborn=False)
    prompts = [ids_of(tokenizer, "a"), ids_of(tokenizer, "Q is longer"), ids_of(tokenizer, "ccc")]
    together = generate_with_repair(tiny, tokenizer, prompts, 80, logits_processor=processors)
    alone = [generate_with_repair(tiny, tokenizer, [p], 80, logits_processor=processors)[0] for p in prompts]
    assert together == alone


def test_plain_model_without_loops_matches_greedy_generate(tiny, tokenizer, one_torch_thread):
    # Without a loop, generation with repair is ordinary greedy generation cut at eos.
    from pangu_core.evaluation import generate

    prompts = [ids_of(tokenizer, "<|bos|><|user|>7+5<|end|><|assistant|>"), ids_of(tokenizer, "hello")]
    config = RepairConfig(min_period=60, max_period=64)
    outputs = generate_with_repair(tiny, tokenizer, prompts, 40, config)
    assert [list(o.ids) for o in outputs] == generate(tiny, tokenizer, prompts, 40)
    assert all(o.generated == len(o.ids) and o.repairs == 0 for o in outputs)


def test_any_end_token_of_the_generation_config_ends_a_row(tokenizer, one_torch_thread):
    # Chat checkpoints list several end tokens in generation_config.eos_token_id: each ends an answer.
    from pangu_core.tasks.model import tiny_pangu

    model = tiny_pangu("nano", tokenizer).eval()
    other = ids_of(tokenizer, "#")[0]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, other]
    _, control, _ = rigged(tokenizer, stubborn=False)
    ends = [ForcedLoop(ids_of(tokenizer, "0123456789"), control, other, ids_of(tokenizer, "Q")[0], False)]
    (out,) = generate_with_repair(model, tokenizer, [ids_of(tokenizer, "loop")], 100, logits_processor=ends)
    assert out.ids == tuple(ids_of(tokenizer, "0123456789") + control + [other]) and out.finished


def test_bad_inputs(tiny, tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 1"):
        generate_with_repair(tiny, tokenizer, [[1]], 0)
    with pytest.raises(ValueError, match="prompts: expected at least one prompt"):
        generate_with_repair(tiny, tokenizer, [[]], 5)
    with pytest.raises(ValueError, match="temperature: expected a number > 0, got 0"):
        generate_with_repair(tiny, tokenizer, [[1]], 5, do_sample=True, temperature=0)
    with pytest.raises(TypeError, match="config: expected RepairConfig"):
        generate_with_repair(tiny, tokenizer, [[1]], 5, config={"repeats": 3})
