"""Repetition self-repair: detect a decoding loop at the tail and break it with a control text.

A *loop* is a tail made of ``repeats`` consecutive copies of one p-gram of token ids, with the
period p in ``[min_period, max_period]`` (ours: p 8-64, 3 copies; the paper does not publish its
values). Generation with repair cuts the loop back to one copy, appends the control text, and lets
the model go on; at most ``max_repairs`` times per answer, after which the answer runs on as plain
generation would (a later loop is only recorded).

The streaming detector keeps, per row and per candidate period p, the length of the current run of
positions i with ``ids[i] == ids[i - p]``. The tail is r copies of a p-gram exactly when that run
is at least ``(r - 1) * p``, so each new token costs one comparison per candidate period (a
vectorised numpy step over the batch), whatever the length of the text: O(len x periods) in all,
never O(len^2).

Generation runs in rounds of ``model.generate``: a stopping criterion ends a row when it emits eos
(the tokenizer's, or any of the model's ``generation_config.eos_token_id``, as chat checkpoints list several),
spends its token budget, or loops. Rows that looped are cut, get the control text, and the next
round re-feeds them (prompt and text so far) until every row is done. Token counts cover every
round, including the copies that were cut away; the control text is not counted as generated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from pangu_core.config import Config, expect

# Ours (the paper's control text is not published): a short, plain sentence a model can learn to
# follow with "the correct rest"; newlines keep it off the line that looped.
DEFAULT_CONTROL_TEXT = "\nWait, I am repeating myself. Let me continue.\n"


@dataclass(frozen=True)
class RepairConfig(Config):
    """The loop detector and what generation does when it fires."""

    # Shortest loop period searched, in tokens.
    min_period: int = 8
    # Longest loop period searched, in tokens.
    max_period: int = 64
    # Copies of one p-gram at the tail that make a loop (r).
    repeats: int = 3
    # Text appended after the loop is cut to one copy.
    control_text: str = DEFAULT_CONTROL_TEXT
    # Repairs per answer at most; later loops are recorded and left alone.
    max_repairs: int = 3

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.min_period >= 1, "min_period", "an int >= 1", self.min_period)
        expect(problems, self.max_period >= self.min_period, "max_period", f"an int >= min_period={self.min_period}",
               self.max_period)
        expect(problems, self.repeats >= 2, "repeats", "an int >= 2", self.repeats)
        expect(problems, self.control_text != "", "control_text", "a non-empty string", self.control_text)
        expect(problems, self.max_repairs >= 0, "max_repairs", "an int >= 0", self.max_repairs)
        return problems


@dataclass(frozen=True)
class Loop:
    """A loop at the tail of a sequence: ``repeats`` copies of the ``period`` tokens starting at ``start``."""

    period: int
    start: int


def find_loop(ids: Sequence[int], config: RepairConfig = RepairConfig()) -> Loop | None:
    """The loop at the tail of ``ids`` with the shortest period, or None (direct check, O(repeats x max_period^2))."""
    ids = list(ids)
    for period in range(config.min_period, config.max_period + 1):
        span = period * config.repeats
        if span > len(ids):
            break
        tail = ids[len(ids) - span:]
        if all(tail[i] == tail[i - period] for i in range(period, span)):
            return Loop(period, len(ids) - span)
    return None


class LoopDetector:
    """Streaming loop detector over a batch of rows (see the module docstring for the method).

    ``push(tokens)`` takes one token per row and returns, per row, the period of the loop the tail now
    ends in (the shortest), or 0.
    """

    def __init__(self, batch_size: int, config: RepairConfig = RepairConfig()):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if not isinstance(config, RepairConfig):
            raise TypeError(f"config: expected RepairConfig, got {type(config).__name__}")
        self.config = config
        self.periods = np.arange(config.min_period, config.max_period + 1, dtype=np.int64)
        self.needed = (config.repeats - 1) * self.periods
        self.window = config.max_period
        self.history = np.zeros((batch_size, self.window), dtype=np.int64)
        self.runs = np.zeros((batch_size, len(self.periods)), dtype=np.int64)
        self.lengths = np.zeros(batch_size, dtype=np.int64)
        self._rows = np.arange(batch_size)

    def push(self, tokens) -> np.ndarray:
        """Appends ``tokens`` (one id per row) and returns the loop period per row (0 = no loop), int64 [batch]."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.shape[0] != len(self._rows):
            raise ValueError(f"tokens: expected {len(self._rows)} ids (one per row), got {tokens.shape[0]}")
        back = (self.lengths[:, None] - self.periods[None, :]) % self.window
        earlier = self.history[self._rows[:, None], back]
        match = (earlier == tokens[:, None]) & (self.lengths[:, None] >= self.periods[None, :])
        self.runs = np.where(match, self.runs + 1, 0)
        self.history[self._rows, self.lengths % self.window] = tokens
        self.lengths += 1
        fired = self.runs >= self.needed[None, :]
        first = fired.argmax(axis=1)
        return np.where(fired.any(axis=1), self.periods[first], 0)

    def extend(self, row: int, ids: Sequence[int]) -> None:
        """Feeds ``ids`` to one row only (to prime it with text generated earlier); loops in them are not reported."""
        for token in ids:
            back = (self.lengths[row] - self.periods) % self.window
            match = (self.history[row, back] == token) & (self.lengths[row] >= self.periods)
            self.runs[row] = np.where(match, self.runs[row] + 1, 0)
            self.history[row, self.lengths[row] % self.window] = token
            self.lengths[row] += 1


@dataclass(frozen=True)
class RepairedOutput:
    """One answer generated with repair.

    ``ids``: the continuation as it stands (loops cut, control texts in, eos last when it came);
    ``generated``: tokens the model produced over all rounds, cut copies included; ``repairs``: loops
    cut; ``looped``: a loop was found that was left alone (repairs used up or repair off);
    ``finished``: the answer ended with eos (not at the token budget).
    """

    ids: tuple[int, ...]
    generated: int
    repairs: int
    looped: bool
    finished: bool


class _RoundStop(StoppingCriteria):
    """Stopping criterion of one round: a row stops at eos, at its budget, or (if it may be repaired) at a loop."""

    def __init__(self, continuations: list[list[int]], budgets: list[int], repairable: list[bool],
                 eos_ids: frozenset[int], config: RepairConfig):
        self.detector = LoopDetector(len(continuations), config)
        for row, ids in enumerate(continuations):
            self.detector.extend(row, ids[-config.repeats * config.max_period:])
        self.budgets, self.repairable, self.eos_ids = budgets, repairable, eos_ids
        self.new: list[list[int]] = [[] for _ in continuations]
        self.reason: list[str | None] = [None] * len(continuations)
        self.period = [0] * len(continuations)
        self.seen_loop = [False] * len(continuations)

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        tokens = input_ids[:, -1].tolist()
        periods = self.detector.push(tokens).tolist()
        for row, (token, period) in enumerate(zip(tokens, periods)):
            if self.reason[row] is not None:
                continue
            self.new[row].append(token)
            if token in self.eos_ids:
                self.reason[row] = "eos"
            elif len(self.new[row]) >= self.budgets[row]:
                # No budget left to go on after a repair: the loop (if any) stays and is recorded.
                self.reason[row] = "budget"
            elif period and self.repairable[row]:
                self.reason[row], self.period[row] = "loop", period
            if period and self.reason[row] != "loop":
                self.seen_loop[row] = True
        return torch.tensor([r is not None for r in self.reason], device=input_ids.device)


ProcessorFactory = Callable[[int, int], Sequence]


def end_token_ids(model, tokenizer) -> frozenset[int]:
    """The ids that end an answer: the tokenizer's eos and those of the model's generation config."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(i for i in configured if isinstance(i, int))
    return frozenset(ids)


@torch.no_grad()
def generate_with_repair(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         config: RepairConfig = RepairConfig(), repair: bool = True, do_sample: bool = False,
                         temperature: float = 1.0, logits_processor: Sequence | ProcessorFactory = ()
                         ) -> list[RepairedOutput]:
    """Generates a continuation of each token-id prompt, repairing loops (see the module docstring).

    ``max_new_tokens`` bounds the tokens the model produces per prompt over all rounds (cut copies
    count; the control text does not). ``repair=False`` generates plainly and only records loops.
    ``logits_processor`` is a list of transformers logits processors used in every round, or a callable
    ``(round, padded input width) -> list`` for processors that depend on the round (round 0 holds the
    prompts alone; later rounds re-feed the text so far).
    """
    if not isinstance(config, RepairConfig):
        raise TypeError(f"config: expected RepairConfig, got {type(config).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts: expected at least one prompt, each with at least one token id")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("tokenizer: expected an eos_token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    eos_ids = end_token_ids(model, tokenizer)
    control = tokenizer(config.control_text, add_special_tokens=False)["input_ids"]
    limit = config.max_repairs if repair else 0
    continuation: list[list[int]] = [[] for _ in prompts]
    generated, repairs = [0] * len(prompts), [0] * len(prompts)
    looped, finished = [False] * len(prompts), [False] * len(prompts)
    active = list(range(len(prompts)))
    device = next(model.parameters()).device
    round_index = 0
    while active:
        inputs = [list(prompts[i]) + continuation[i] for i in active]
        width = max(len(ids) for ids in inputs)
        input_ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(inputs):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        budgets = [max_new_tokens - generated[i] for i in active]
        stop = _RoundStop([continuation[i] for i in active], budgets, [repairs[i] < limit for i in active],
                          eos_ids, config)
        processors = logits_processor(round_index, width) if callable(logits_processor) else logits_processor
        options = {"do_sample": do_sample}
        if do_sample:
            options.update(temperature=temperature, top_k=0, top_p=1.0)
        model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(budgets),
                       eos_token_id=sorted(eos_ids), pad_token_id=pad_id, stopping_criteria=StoppingCriteriaList([stop]),
                       logits_processor=LogitsProcessorList(list(processors)), **options)
        still = []
        for row, index in enumerate(active):
            new = stop.new[row]
            generated[index] += len(new)
            looped[index] = looped[index] or stop.seen_loop[row]
            text = continuation[index] + new
            if stop.reason[row] == "loop":
                # The loop may reach back into earlier rounds' text: cut on the whole continuation.
                keep = len(text) - (config.repeats - 1) * stop.period[row]
                continuation[index] = text[:keep] + control
                repairs[index] += 1
                still.append(index)
                continue
            continuation[index] = text
            finished[index] = stop.reason[row] == "eos"
        active = still
        round_index += 1
    return [RepairedOutput(tuple(continuation[i]), generated[i], repairs[i], looped[i], finished[i])
            for i in range(len(prompts))]
