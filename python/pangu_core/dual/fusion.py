"""Fusion training data of the dual system: mode labels, explicit and auto pairs, the progressive schedule,
self-repair pairs.

Everything here builds ``(prompt, mode, response)`` pairs (:class:`Pair`, a named tuple that
:func:`pangu_core.distill.sft.encode_pairs` takes as is) or :class:`RepairPair` (whose masked part
reaches into the response), and :func:`to_stages` turns lists of them into the SFT trainer's
curriculum :class:`~pangu_core.distill.sft_data.Stage` list.

- **Labels** (:func:`label_modes`): a prompt is fast-suited when its fast pass rate is at least
  ``tau`` and not below its slow pass rate by more than ``delta`` (ours: 0.75 and 0).
- **Phase 1, explicit modes** (:func:`progressive_pairs`): starting from the slow thinker, one
  curriculum stage per share in ``fast_shares`` (ours 0.1, 0.3, 0.5); each stage holds every prompt
  once, that share of them as a fast pair (" /no_think" -> the fast answer) and the rest as slow
  replay (no tag -> the slow answer), drawn afresh per stage by the seed. ``auto_slow_share`` of
  the slow replay is asked with " /auto_think" instead (the same slow answer): auto mode starts out
  as slow mode, so phase 2 mostly has to teach where a fast answer suffices.
- **Phase 2, auto** (:func:`auto_pairs`): "prompt /auto_think" -> the fast answer when fast-suited,
  else the slow one; the minority mode's auto pairs are repeated (seeded, as evenly as possible)
  until it makes ``min_mode_share`` of the auto pairs (ours 0.2), so no data is dropped; a pool with
  no prompt of one mode is an error. Explicit-tag replay (``explicit_replay`` per auto pair, half
  slow, half fast) keeps manual switching alive; with ``fast_replay: fast_suited`` its fast half
  comes from the fast-suited prompts only (from every prompt when none is), so fast mode is not
  trained on answers it cannot reach without thinking.
- **Self-repair pairs** (:func:`repair_pairs`): the masked part is the prompt, the open marker, the
  slow thinking up to a seeded line, that line again ``copies - 1`` more times (a loop) and the
  control text; the response is the correct rest. ``copies = 1`` is what generation with repair
  leaves in the context (the loop cut to one copy); more copies are the loop as the detector saw it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from pangu_core.config import Config, expect
from pangu_core.dual.response import DEFAULT_MARKERS, ThinkingMarkers, split_thinking
from pangu_core.dual.self_repair import DEFAULT_CONTROL_TEXT


class Pair(NamedTuple):
    """One SFT pair: the user prompt (untagged), the mode whose tag the chat template adds, the response."""

    prompt: str
    mode: str
    response: str


@dataclass(frozen=True)
class RepairPair:
    """A self-repair pair: ``prefix`` (the looped trace and control text) follows the rendered prompt
    inside the masked part; the loss covers ``response`` only."""

    prompt: str
    mode: str
    prefix: str
    response: str


@dataclass(frozen=True)
class FusionItem:
    """One prompt with its slow response (thinking, then answer) and its fast response (empty thinking)."""

    prompt: str
    slow: str
    fast: str


@dataclass(frozen=True)
class FusionConfig(Config):
    """Labels, pair mixing and the progressive schedule of fusion training."""

    # Fast-suited needs a fast pass rate >= tau ...
    tau: float = 0.75
    # ... and a fast pass rate >= slow pass rate - delta.
    delta: float = 0.0
    # Phase 1: the share of fast pairs in each curriculum stage, raised stage by stage.
    fast_shares: tuple[float, ...] = (0.1, 0.3, 0.5)
    # Phase 1: the share of the slow replay asked in auto mode (with the slow answer).
    auto_slow_share: float = 0.0
    # Phase 2: explicit-tag replay pairs per auto pair (half slow, half fast).
    explicit_replay: float = 0.5
    # Phase 2: the prompts of the fast replay: every prompt ("all") or the fast-suited ones.
    fast_replay: Literal["all", "fast_suited"] = "all"
    # Phase 2: the least share of auto pairs each mode gets (its pairs are repeated to reach it).
    min_mode_share: float = 0.2
    # Self-repair pairs: copies of the looped line before the control text, cycled over the items.
    loop_copies: tuple[int, ...] = (1, 3)
    # Self-repair pairs: the text that follows the loop (the same as generation with repair uses).
    control_text: str = DEFAULT_CONTROL_TEXT
    # Self-repair pairs: the mode tag of their prompts.
    repair_mode: Literal["slow", "auto"] = "slow"
    # Seed of every draw (which prompts get fast pairs, repeats, replay, looped lines).
    seed: int = 0

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, 0.0 <= self.tau <= 1.0, "tau", "a number in [0, 1]", self.tau)
        expect(problems, 0.0 <= self.delta <= 1.0, "delta", "a number in [0, 1]", self.delta)
        expect(problems, len(self.fast_shares) > 0, "fast_shares", "at least one share", self.fast_shares)
        for i, share in enumerate(self.fast_shares):
            expect(problems, 0.0 <= share <= 1.0, f"fast_shares[{i}]", "a number in [0, 1]", share)
        expect(problems, 0.0 <= self.auto_slow_share <= 1.0, "auto_slow_share", "a number in [0, 1]",
               self.auto_slow_share)
        expect(problems, self.explicit_replay >= 0.0, "explicit_replay", "a number >= 0", self.explicit_replay)
        expect(problems, 0.0 <= self.min_mode_share <= 0.5, "min_mode_share", "a number in [0, 0.5]",
               self.min_mode_share)
        expect(problems, len(self.loop_copies) > 0, "loop_copies", "at least one count", self.loop_copies)
        for i, copies in enumerate(self.loop_copies):
            expect(problems, copies >= 1, f"loop_copies[{i}]", "an int >= 1", copies)
        expect(problems, self.control_text != "", "control_text", "a non-empty string", self.control_text)
        expect(problems, self.seed >= 0, "seed", "an int >= 0", self.seed)
        return problems


def _rates(name: str, values) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected numbers in [0, 1], got {type(values).__name__}") from error
    if np.isnan(array).any() or (array < 0).any() or (array > 1).any():
        bad = float(array[np.isnan(array) | (array < 0) | (array > 1)][0])
        raise ValueError(f"{name}: expected pass rates in [0, 1], got {bad}")
    return array


def label_modes(p_fast, p_slow, tau: float = 0.75, delta: float = 0.0) -> np.ndarray:
    """Bool array, True where a prompt is fast-suited: ``p_fast >= tau`` and ``p_fast >= p_slow - delta``.

    ``p_fast`` and ``p_slow`` are pass rates in [0, 1] of the same shape (any shape).
    """
    fast, slow = _rates("p_fast", p_fast), _rates("p_slow", p_slow)
    if fast.shape != slow.shape:
        raise ValueError(f"p_slow: expected the shape of p_fast {fast.shape}, got {slow.shape}")
    for name, value in (("tau", tau), ("delta", delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    # A hair of slack so that rates computed as c / k compare as the fractions they are.
    eps = 1e-12
    return (fast >= tau - eps) & (fast >= slow - delta - eps)


def teacher_items(tasks, markers: ThinkingMarkers = DEFAULT_MARKERS) -> list[FusionItem]:
    """Items of generated math tasks with the embedded teacher's slow and fast responses."""
    from pangu_core.tasks.teacher import teacher_response

    return [FusionItem(task.prompt, teacher_response(task, "slow", markers), teacher_response(task, "fast", markers))
            for task in tasks]


def _check_items(items: Sequence[FusionItem]) -> None:
    if not items:
        raise ValueError("items: expected at least one item")
    for i, item in enumerate(items):
        if not isinstance(item, FusionItem):
            raise TypeError(f"items[{i}]: expected FusionItem, got {type(item).__name__}")


def explicit_pairs(items: Sequence[FusionItem], modes: Sequence[str] = ("slow", "fast")) -> list[Pair]:
    """For each item, one pair per mode in ``modes``: slow (no tag) -> slow answer, fast -> fast answer."""
    _check_items(items)
    for mode in modes:
        if mode not in ("slow", "fast"):
            raise ValueError(f"modes: expected 'slow' or 'fast' items, got {mode!r}")
    return [Pair(item.prompt, mode, item.slow if mode == "slow" else item.fast) for item in items for mode in modes]


def progressive_pairs(items: Sequence[FusionItem], config: FusionConfig = FusionConfig()) -> list[list[Pair]]:
    """Phase 1: one list of pairs per stage of ``config.fast_shares`` (see the module docstring)."""
    _check_items(items)
    stages = []
    for stage, share in enumerate(config.fast_shares):
        rng = np.random.default_rng([config.seed, 1, stage])
        order = rng.permutation(len(items)).tolist()
        count = round(share * len(items))
        fast = set(order[:count])
        # The auto share is taken from the slow prompts, so the fast draw does not depend on it.
        auto = set(order[count:][:round(config.auto_slow_share * (len(items) - count))])
        stages.append([Pair(item.prompt, "fast", item.fast) if i in fast
                       else Pair(item.prompt, "auto" if i in auto else "slow", item.slow)
                       for i, item in enumerate(items)])
    return stages


def _repeat_to(indices: list[int], total: int, rng: np.random.Generator) -> list[int]:
    """``total`` indices drawn from ``indices``: each as often as the others, give or take one, seeded."""
    whole, rest = divmod(total, len(indices))
    return indices * whole + [indices[i] for i in rng.permutation(len(indices))[:rest].tolist()]


def auto_pairs(items: Sequence[FusionItem], fast_suited, config: FusionConfig = FusionConfig()) -> list[Pair]:
    """Phase 2: balanced auto pairs followed by explicit replay (see the module docstring)."""
    _check_items(items)
    labels = np.asarray(fast_suited)
    if labels.dtype != np.bool_ or labels.shape != (len(items),):
        raise ValueError(f"fast_suited: expected {len(items)} bools (one per item), got {labels.dtype} {labels.shape}")
    rng = np.random.default_rng([config.seed, 2])
    fast = [i for i in range(len(items)) if labels[i]]
    slow = [i for i in range(len(items)) if not labels[i]]
    share = config.min_mode_share
    if share > 0:
        for name, group in (("fast-suited", fast), ("slow-suited", slow)):
            if not group:
                raise ValueError(f"fast_suited: no {name} item; auto pairs need both modes "
                                 f"(min_mode_share={share})")
    # The least count m of the minority with m / (m + majority) >= share.
    need_fast = math.ceil(round(share * len(slow) / (1 - share), 9)) if share > 0 else 0
    need_slow = math.ceil(round(share * len(fast) / (1 - share), 9)) if share > 0 else 0
    fast = _repeat_to(fast, max(len(fast), need_fast), rng) if fast else []
    slow = _repeat_to(slow, max(len(slow), need_slow), rng) if slow else []
    pairs = [Pair(items[i].prompt, "auto", items[i].fast) for i in fast]
    pairs += [Pair(items[i].prompt, "auto", items[i].slow) for i in slow]
    replay = round(config.explicit_replay * len(pairs))
    chosen = _repeat_to(list(range(len(items))), replay, rng) if replay else []
    # Even places are slow replay, odd places fast; "fast_suited" redraws the fast ones from the
    # fast-suited prompts (from every prompt when there is none, as "all" does).
    suited = [i for i in range(len(items)) if labels[i]]
    if config.fast_replay == "fast_suited" and suited and len(chosen) > 1:
        chosen[1::2] = _repeat_to(suited, len(chosen) // 2, rng)
    for n, i in enumerate(chosen):
        mode = "slow" if n % 2 == 0 else "fast"
        pairs.append(Pair(items[i].prompt, mode, items[i].slow if mode == "slow" else items[i].fast))
    return pairs


def mode_shares(pairs: Sequence[Pair], markers: ThinkingMarkers = DEFAULT_MARKERS) -> dict[str, float]:
    """Among the auto pairs of ``pairs``: the share whose response is fast (empty thinking) and slow."""
    auto = [p for p in pairs if p.mode == "auto"]
    if not auto:
        raise ValueError("pairs: expected at least one auto pair")
    fast = sum(split_thinking(p.response, markers).thinking == "" for p in auto)
    return {"fast": fast / len(auto), "slow": 1 - fast / len(auto)}


def _thinking_lines(item: FusionItem, markers: ThinkingMarkers) -> tuple[int, int, list[str]]:
    """(index of the open marker, index of the close marker, thinking lines with their newlines)."""
    start = item.slow.find(markers.open)
    end = item.slow.find(markers.close, start + len(markers.open)) if start >= 0 else -1
    lines = item.slow[start + len(markers.open):end].splitlines(keepends=True) if end >= 0 else []
    if not any(line.strip() for line in lines):
        raise ValueError(f"item.slow: expected a closed, non-empty thinking block, got {item.slow[:60]!r}")
    return start, end, lines


def repair_pair(item: FusionItem, line: int, copies: int, config: FusionConfig = FusionConfig(),
                markers: ThinkingMarkers = DEFAULT_MARKERS) -> RepairPair:
    """The self-repair pair of ``item`` whose loop repeats thinking line ``line`` (0-based) ``copies`` times."""
    start, end, lines = _thinking_lines(item, markers)
    if isinstance(line, bool) or not isinstance(line, int) or not 0 <= line < len(lines):
        raise ValueError(f"line: expected an int in [0, {len(lines)}), got {line!r}")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies: expected an int >= 1, got {copies!r}")
    looped = "".join(lines[:line + 1]) + lines[line] * (copies - 1)
    prefix = item.slow[:start + len(markers.open)] + looped + config.control_text
    rest = "".join(lines[line + 1:]) + item.slow[end:]
    return RepairPair(item.prompt, config.repair_mode, prefix, rest)


def repair_pairs(items: Sequence[FusionItem], config: FusionConfig = FusionConfig(),
                 markers: ThinkingMarkers = DEFAULT_MARKERS) -> list[RepairPair]:
    """One self-repair pair per item: a seeded non-blank thinking line, ``config.loop_copies`` cycled over the items."""
    _check_items(items)
    rng = np.random.default_rng([config.seed, 3])
    pairs = []
    for i, item in enumerate(items):
        lines = _thinking_lines(item, markers)[2]
        candidates = [n for n, text in enumerate(lines) if text.strip()]
        line = candidates[int(rng.integers(0, len(candidates)))]
        pairs.append(repair_pair(item, line, config.loop_copies[i % len(config.loop_copies)], config, markers))
    return pairs


def encode_fusion_pairs(tokenizer, pairs: Sequence[Pair | RepairPair], max_length: int = 512):
    """:class:`SFTExample` list of ``pairs`` in order: plain pairs by ``encode_pairs``; repair pairs with
    their prefix tokenized with the rendered prompt (masked) and the response plus eos as targets."""
    from pangu_core.distill.sft_data import SFTExample, encode_pairs
    from pangu_core.dual.chat_format import template_prompts

    plain = [(i, tuple(p)) for i, p in enumerate(pairs) if not isinstance(p, RepairPair)]
    repair = [(i, p) for i, p in enumerate(pairs) if isinstance(p, RepairPair)]
    out: list = [None] * len(pairs)
    for (i, _), example in zip(plain, encode_pairs(tokenizer, [p for _, p in plain], max_length)):
        out[i] = example
    if repair:
        heads = template_prompts(tokenizer, [(p.prompt, p.mode) for _, p in repair])
        prompt_ids = tokenizer([h + p.prefix for h, (_, p) in zip(heads, repair)], add_special_tokens=False)["input_ids"]
        targets = tokenizer([p.response + tokenizer.eos_token for _, p in repair], add_special_tokens=False)["input_ids"]
        for (i, _), head, target in zip(repair, prompt_ids, targets):
            if len(head) + len(target) > max_length:
                raise ValueError(f"pairs[{i}]: {len(head) + len(target)} tokens, more than max_length {max_length}")
            out[i] = SFTExample(tuple(head), tuple(target))
    return out


def to_stages(tokenizer, stage_pairs: Sequence[Sequence[Pair | RepairPair]], max_steps: int, max_length: int = 512):
    """Curriculum stages for :class:`pangu_core.distill.sft.SFTTrainer`: the steps split evenly over
    ``stage_pairs`` (earlier stages get the remainder), the last ending at ``max_steps``."""
    from pangu_core.distill.sft_data import Stage

    if not stage_pairs:
        raise ValueError("stage_pairs: expected at least one stage")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < len(stage_pairs):
        raise ValueError(f"max_steps: expected an int >= the number of stages {len(stage_pairs)}, got {max_steps!r}")
    base, extra = divmod(max_steps, len(stage_pairs))
    stages, until = [], 0
    for index, pairs in enumerate(stage_pairs):
        if not pairs:
            raise ValueError(f"stage_pairs[{index}]: expected at least one pair")
        until += base + (index < extra)
        stages.append(Stage(until, encode_fusion_pairs(tokenizer, pairs, max_length)))
    return stages
