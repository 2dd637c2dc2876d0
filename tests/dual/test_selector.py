"""The auto-mode selector against brute force: the fast probability and the decision bias."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from pangu_core.dual.chat_format import render_prompt
from pangu_core.dual.response import ThinkingMarkers
from pangu_core.dual.selector import (
    CloseMarkerBias,
    decision_bias,
    decision_prompts,
    fast_probability,
    marker_id,
)
from pangu_core.dual.self_repair import generate_with_repair

PROMPTS = ["7+5", "47+38-19", "(47+38)-(19+26) is a longer one", "1"]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from pangu_core.tasks.model import tiny_pangu

    return tiny_pangu("nano", tokenizer, seed=3).eval()


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decision_logits(model, ids):
    """Brute force: a plain forward of one unpadded sequence, the logits of its next token."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_decision_context_is_the_auto_prompt_and_the_open_marker(tokenizer):
    (ids,) = decision_prompts(tokenizer, ["7+5"])
    assert tokenizer.decode(ids) == render_prompt("7+5", "auto") + "<think>"


def test_fast_probability_equals_a_plain_forward(tiny, tokenizer, one_torch_thread):
    # One padded forward of the batch gives each prompt's exp(log-softmax) of the close marker.
    close = marker_id(tokenizer, "</think>")
    got = fast_probability(tiny, tokenizer, PROMPTS)
    assert got.shape == (len(PROMPTS),) and got.dtype.name == "float64"
    for prompt, p in zip(PROMPTS, got):
        (ids,) = decision_prompts(tokenizer, [prompt])
        expected = torch.log_softmax(decision_logits(tiny, ids), -1)[close].exp().item()
        assert p == pytest.approx(expected, rel=1e-5)


def test_a_template_that_opens_the_block_gets_no_second_open_marker(tiny, tokenizer, one_torch_thread):
    from pangu_core.tasks.tokenizer import build_tokenizer

    opening = build_tokenizer()
    opening.chat_template += "{{- '<think>' if add_generation_prompt else '' -}}"
    assert decision_prompts(opening, PROMPTS) == decision_prompts(tokenizer, PROMPTS)
    assert fast_probability(tiny, opening, PROMPTS) == pytest.approx(fast_probability(tiny, tokenizer, PROMPTS))


class OpenFirst(LogitsProcessor):
    """Forces the open marker as the first generated token."""

    def __init__(self, open_id, width):
        self.open_id, self.width = open_id, width

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] != self.width:
            return scores
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.open_id] = 0.0
        return forced


def greedy(model, tokenizer, rows, new_tokens, processors=()):
    from transformers import LogitsProcessorList

    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=pad,
                         logits_processor=LogitsProcessorList(list(processors)))
    return out[:, width:].tolist(), width


@pytest.mark.parametrize("prompt_has_open", [True, False])
def test_bias_picks_fast_exactly_when_biased_close_is_the_argmax(tiny, tokenizer, prompt_has_open, one_torch_thread):
    # For each prompt the critical bias is max(other logits) - logit(close); just below it greedy
    # decoding does not pick the close marker, just above it does. The decision is the first
    # generated token when the prompt ends with the open marker, else the second.
    open_id, close = marker_id(tokenizer, "<think>"), marker_id(tokenizer, "</think>")
    contexts = decision_prompts(tokenizer, PROMPTS)
    critical = []
    for ids in contexts:
        logits = decision_logits(tiny, ids)
        others = torch.cat([logits[:close], logits[close + 1:]])
        critical.append((others.max() - logits[close]).item())
    rows = contexts if prompt_has_open else [ids[:-1] for ids in contexts]
    at = 0 if prompt_has_open else 1
    width = max(len(r) for r in rows)
    # Without the open marker in the prompt, the untrained model is made to write it first.
    opener = [] if prompt_has_open else [OpenFirst(open_id, width)]
    for shift in (-0.05, 0.05):
        biases = [c + shift for c in critical]
        for bias in biases:
            out, _ = greedy(tiny, tokenizer, rows, at + 1, opener + [CloseMarkerBias(open_id, close, bias, width)])
            assert all(o[0] == open_id for o in out) or prompt_has_open
            assert [o[at] == close for o in out] == [bias > c for c in critical]


def test_bias_zero_changes_nothing_and_later_positions_are_untouched(tiny, tokenizer, one_torch_thread):
    open_id, close = marker_id(tokenizer, "<think>"), marker_id(tokenizer, "</think>")
    contexts = decision_prompts(tokenizer, PROMPTS)
    width = max(len(r) for r in contexts)
    plain, _ = greedy(tiny, tokenizer, contexts, 12)
    assert greedy(tiny, tokenizer, contexts, 12, [CloseMarkerBias(open_id, close, 0.0, width)])[0] == plain
    # A huge bias forces fast at the decision; what follows is plain greedy decoding after
    # "<think></think>": the bias acts at one position only.
    forced, _ = greedy(tiny, tokenizer, contexts, 12, [CloseMarkerBias(open_id, close, 1e4, width)])
    after, _ = greedy(tiny, tokenizer, [ids + [close] for ids in contexts], 11)
    assert [o[0] for o in forced] == [close] * len(PROMPTS)
    assert [o[1:] for o in forced] == after


def test_decision_rows_of_the_processor():
    # Rows whose next token is the decision: last token the open marker, at the right step only.
    bias = CloseMarkerBias(open_id=5, close_id=6, bias=2.0, prompt_length=3)
    assert bias.decision_rows(torch.tensor([[1, 2, 5], [1, 2, 3]])).tolist() == [True, False]
    assert bias.decision_rows(torch.tensor([[1, 2, 3, 5], [1, 2, 5, 5]])).tolist() == [True, False]
    assert bias.decision_rows(torch.tensor([[1, 2, 3, 4, 5]])).tolist() == [False]
    scores = torch.zeros(2, 8)
    out = bias(torch.tensor([[1, 2, 5], [1, 2, 3]]), scores)
    assert out[0, 6] == 2.0 and out.abs().sum() == 2.0 and scores.abs().sum() == 0


def test_decision_bias_in_generation_with_repair(tiny, tokenizer, one_torch_thread):
    close = marker_id(tokenizer, "</think>")
    contexts = decision_prompts(tokenizer, PROMPTS)
    outputs = generate_with_repair(tiny, tokenizer, contexts, 6, logits_processor=decision_bias(tokenizer, 1e4))
    assert all(o.ids[0] == close for o in outputs)
    plain = generate_with_repair(tiny, tokenizer, contexts, 6, logits_processor=decision_bias(tokenizer, 0.0))
    assert plain == generate_with_repair(tiny, tokenizer, contexts, 6)


def test_bad_inputs(tiny, tokenizer):
    with pytest.raises(ValueError, match=r"markers.close: expected '</end>' to be one token"):
        fast_probability(tiny, tokenizer, ["1"], ThinkingMarkers("<think>", "</end>"))
    with pytest.raises(TypeError, match="prompts: expected a sequence of str"):
        fast_probability(tiny, tokenizer, "7+5")
    with pytest.raises(ValueError, match="prompts: expected at least one prompt"):
        decision_prompts(tokenizer, [])
    with pytest.raises(ValueError, match="bias: expected a number, got nan"):
        CloseMarkerBias(1, 2, float("nan"), 0)
    with pytest.raises(ValueError, match="prompt_length: expected an int >= 0"):
        CloseMarkerBias(1, 2, 0.0, -1)
    with pytest.raises(ValueError, match="bias: expected a number"):
        decision_bias(tokenizer, "big")
