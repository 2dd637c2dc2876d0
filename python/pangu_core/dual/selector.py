"""The auto-mode selector: the probability of the fast decision, and a bias on that one decision.

In auto mode the response opens the thinking block, so the model's choice is the one token after
the open marker: the close marker there means an empty thinking block, the fast answer.
:func:`fast_probability` reads P(close marker | prompt in auto mode, open marker) for a batch of
prompts in one forward pass. :class:`CloseMarkerBias` adds ``bias`` to the close marker's logit at
that position only, so sweeping the bias moves auto mode along its accuracy / tokens frontier
(``bias = 0`` is plain auto; large positive is always fast, large negative always slow).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from pangu_core.dual.chat_format import template_prompts
from pangu_core.dual.response import DEFAULT_MARKERS, ThinkingMarkers


def marker_id(tokenizer, text: str, name: str = "marker") -> int:
    """The id of ``text``, which must encode to exactly one token of ``tokenizer``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{name}: expected {text!r} to be one token of the tokenizer, got {len(ids)} tokens {ids}")
    return ids[0]


def decision_prompts(tokenizer, prompts: Sequence[str], markers: ThinkingMarkers = DEFAULT_MARKERS) -> list[list[int]]:
    """Token ids of each user prompt in auto mode followed by the open marker: the context of the decision.

    A chat template whose generation prompt already ends with the open marker gets no second one.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts: expected a sequence of str")
    if not prompts:
        raise ValueError("prompts: expected at least one prompt")
    texts = template_prompts(tokenizer, [(prompt, "auto") for prompt in prompts])
    texts = [text if text.endswith(markers.open) else text + markers.open for text in texts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def fast_probability(model, tokenizer, prompts: Sequence[str], markers: ThinkingMarkers = DEFAULT_MARKERS
                     ) -> np.ndarray:
    """P(close marker | prompt in auto mode, open marker) per prompt, float64 [len(prompts)], one forward.

    The batch is right-padded and each row's next-token distribution read at its last real token.
    """
    close = marker_id(tokenizer, markers.close, "markers.close")
    ids = decision_prompts(tokenizer, prompts, markers)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), longest), pad if pad is not None else 0, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(ids):
        input_ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    last = torch.tensor([len(tokens) - 1 for tokens in ids], device=device)
    decision = logits[torch.arange(len(ids), device=device), last].float()
    return torch.log_softmax(decision, dim=-1)[:, close].exp().double().cpu().numpy()


class CloseMarkerBias(LogitsProcessor):
    """Adds ``bias`` to the close marker's logit at the decision position only.

    The decision position of a row is the first token after the open marker that starts the
    response: the first generated token when the prompt (``prompt_length`` columns, the padded
    input width of the ``generate`` call) ends with the open marker, else the second one when the
    first generated token is the open marker. Nothing else is touched.
    """

    def __init__(self, open_id: int, close_id: int, bias: float, prompt_length: int):
        for name, value in (("open_id", open_id), ("close_id", close_id), ("prompt_length", prompt_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or bias != bias:
            raise ValueError(f"bias: expected a number, got {bias!r}")
        self.open_id, self.close_id, self.bias, self.prompt_length = open_id, close_id, float(bias), prompt_length

    def decision_rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool [batch]: rows whose next token is the mode decision."""
        generated = input_ids.shape[1] - self.prompt_length
        at_open = input_ids[:, -1] == self.open_id
        if generated == 0:
            return at_open
        if generated == 1:
            return at_open & (input_ids[:, -2] != self.open_id)
        return torch.zeros_like(at_open)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = self.decision_rows(input_ids)
        if self.bias == 0.0 or not bool(rows.any()):
            return scores
        scores = scores.clone()
        scores[rows, self.close_id] += self.bias
        return scores


def decision_bias(tokenizer, bias: float, markers: ThinkingMarkers = DEFAULT_MARKERS):
    """A ``logits_processor`` for :func:`pangu_core.dual.self_repair.generate_with_repair`: the bias in
    the first round (where the decision is), nothing in the rounds after a repair."""
    open_id = marker_id(tokenizer, markers.open, "markers.open")
    close_id = marker_id(tokenizer, markers.close, "markers.close")
    CloseMarkerBias(open_id, close_id, bias, 0)  # checks the bias now, not at the first round

    def processors(round_index: int, width: int) -> list[LogitsProcessor]:
        return [CloseMarkerBias(open_id, close_id, bias, width)] if round_index == 0 else []

    return processors
