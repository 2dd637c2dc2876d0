"""SFT data: tokenized (prompt, response) pairs, curriculum stages, padded batches, length-bucketed epochs.

Used by :mod:`pangu_core.distill.sft` (which re-exports these names). The labels of a batch mask the
prompt and the padding with ``IGNORE_INDEX``, so the loss covers the response tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pangu_core.dual.chat_format import template_prompts

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTExample:
    """One tokenized pair; the loss covers ``response_ids`` only."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass(frozen=True)
class Stage:
    """One part of a curriculum: the trainer draws its batches from ``examples`` until step ``until_step``."""

    until_step: int
    examples: Sequence[SFTExample]


def as_stages(examples: Sequence[SFTExample] | Sequence[Stage], max_steps: int) -> list[Stage]:
    """``examples`` as a checked list of stages ending at ``max_steps`` (a plain list of examples is one stage)."""
    if not examples:
        raise ValueError("examples: expected at least one example")
    if not isinstance(examples[0], Stage):
        return [Stage(max_steps, list(examples))]
    stages, previous = [], 0
    for i, stage in enumerate(examples):
        if not isinstance(stage, Stage):
            raise TypeError(f"examples[{i}]: expected Stage like examples[0], got {type(stage).__name__}")
        end = stage.until_step
        if isinstance(end, bool) or not isinstance(end, int) or not previous < end <= max_steps:
            raise ValueError(f"examples[{i}].until_step: expected an int in ({previous}, {max_steps}], got {end!r}")
        if not stage.examples:
            raise ValueError(f"examples[{i}].examples: expected at least one example")
        stages.append(Stage(end, list(stage.examples)))
        previous = end
    if previous != max_steps:
        raise ValueError(f"examples[-1].until_step: expected the last stage to end at max_steps={max_steps}, got {previous}")
    return stages


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str, str]], max_length: int = 512) -> list[SFTExample]:
    """Tokenizes (user prompt, mode, response) triples with the tokenizer's chat template.

    The mode tag goes at the end of the user text (as openPangu and Qwen3 read it); the response
    gets the tokenizer's eos token appended. Pairs longer than ``max_length`` are an error.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer: expected a tokenizer with a chat template")
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer: expected an eos_token")
    prompt_texts = template_prompts(tokenizer, [(prompt, mode) for prompt, mode, _ in pairs])
    response_texts = [response + tokenizer.eos_token for _, _, response in pairs]
    # One batched call each: the Rust tokenizer is much faster on a list than item by item.
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"] if pairs else []
    response_ids = tokenizer(response_texts, add_special_tokens=False)["input_ids"] if pairs else []
    examples = []
    for index, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        if len(prompt) + len(response) > max_length:
            raise ValueError(f"pairs[{index}]: {len(prompt) + len(response)} tokens, more than max_length {max_length}")
        examples.append(SFTExample(tuple(prompt), tuple(response)))
    return examples


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels ([batch, longest]); labels mask the prompt."""
    longest = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example.prompt_ids + example.response_ids
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, len(example.prompt_ids):len(ids)] = torch.tensor(example.response_ids)
        attention_mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def epoch_batches(lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int, epoch: int,
                  stage: int = 0) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch of a curriculum stage, bucketed by length.

    Pure in its inputs.
    """
    rng = np.random.default_rng([seed, epoch] if stage == 0 else [seed, epoch, stage])
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool].tolist(), key=lambda i: (lengths[i], i))
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]
