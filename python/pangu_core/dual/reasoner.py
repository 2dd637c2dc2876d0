"""The dual-system reasoner users call: one model that answers fast, slow, or chooses (auto).

    reasoner = Reasoner.from_pretrained("checkpoints/dual")
    for answer in reasoner.answer(["47+38-19", "7+5"], mode="auto"):
        print(answer.mode, answer.tokens, answer.final_answer)

Prompts are rendered by the tokenizer's chat template with the mode tag at the end of the user turn
(no tag = slow, " /no_think" = fast, " /auto_think" = the model chooses), generated with repetition
self-repair (:mod:`.self_repair`) and split into the thinking and the answer by the thinking markers
(configurable: openPangu writes its own marker tokens). The mode used is fast when the thinking
came back empty. A template whose generation prompt already opens the thinking block (or writes an
empty one, as Qwen3's does for fast mode) is read as if the response had begun with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pangu_core.dual.chat_format import template_prompts
from pangu_core.dual.response import DEFAULT_MARKERS, MODES, ThinkingMarkers, extract_final_answer, split_thinking
from pangu_core.dual.self_repair import RepairConfig, end_token_ids, generate_with_repair


@dataclass(frozen=True)
class Answer:
    """One answer of :meth:`Reasoner.answer`.

    ``final_answer``: the final result (the last ``\\boxed{}`` of the visible answer, ...), None when
    there is none (also when the thinking never closed); ``thinking``: the thinking text, "" when
    empty or absent; ``answer``: the visible answer text; ``mode``: "fast" (empty thinking; a response
    without any thinking block counts too, as nothing was thought) or "slow";
    ``requested``: the mode asked for; ``tokens``: tokens generated, over every repair round, eos
    included; ``repairs``: loops cut; ``closed``: the thinking block was closed; ``looped``: a loop was
    left in (repairs used up or off); ``text``: the response as generated (prefilled part included).
    """

    final_answer: str | None
    thinking: str
    answer: str
    mode: str
    requested: str
    tokens: int
    repairs: int
    closed: bool
    looped: bool
    text: str


def _prefilled(prompt: str, markers: ThinkingMarkers) -> str:
    """The part of the thinking block the generation prompt already wrote ("" when it wrote none)."""
    stripped = prompt.rstrip()
    if stripped.endswith(markers.open):
        return prompt[stripped.rfind(markers.open):]
    if stripped.endswith(markers.close):
        start = stripped.rfind(markers.open, 0, len(stripped) - len(markers.close))
        if start >= 0:
            return prompt[start:]
    return ""


class Reasoner:
    """A causal LM and its tokenizer (with a chat template) answering in fast, slow or auto mode."""

    def __init__(self, model, tokenizer, markers: ThinkingMarkers = DEFAULT_MARKERS,
                 repair_config: RepairConfig = RepairConfig()):
        if not isinstance(markers, ThinkingMarkers):
            raise TypeError(f"markers: expected ThinkingMarkers, got {type(markers).__name__}")
        if not isinstance(repair_config, RepairConfig):
            raise TypeError(f"repair_config: expected RepairConfig, got {type(repair_config).__name__}")
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate"):
            raise TypeError(f"model: expected a transformers causal LM, got {type(model).__name__}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("tokenizer: expected a tokenizer with a chat template")
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer: expected an eos_token")
        self.model, self.tokenizer, self.markers, self.repair_config = model.eval(), tokenizer, markers, repair_config

    @classmethod
    def from_pretrained(cls, path: str | Path, markers: ThinkingMarkers = DEFAULT_MARKERS,
                        repair_config: RepairConfig = RepairConfig(), device: str | torch.device | None = None,
                        **model_kwargs) -> Reasoner:
        """Loads a model folder written by ``save_pretrained`` (weights, config, tokenizer with its chat template)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"path: expected a model directory, got {str(path)!r}")
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), **model_kwargs)
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, markers, repair_config)

    def answer(self, prompts: str | Sequence[str], mode: str = "auto", max_new_tokens: int = 512, repair: bool = True,
               bias: float = 0.0, batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0,
               logits_processor: Sequence = ()) -> list[Answer]:
        """Answers each user prompt (untagged text) in ``mode``; one :class:`Answer` per prompt, in order.

        ``max_new_tokens`` bounds the tokens generated per prompt over all repair rounds; ``repair``
        turns self-repair on or off; ``bias`` (auto mode only) is added to the close marker's logit at
        the mode decision (> 0 favours fast); ``logits_processor`` are extra transformers processors
        used at every step.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: expected a str or a non-empty sequence of str")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or bias != bias:
            raise ValueError(f"bias: expected a number, got {bias!r}")
        if bias and mode != "auto":
            raise ValueError(f"bias: only auto mode has a mode decision to bias; got bias={bias} with mode {mode!r}")
        texts = template_prompts(self.tokenizer, [(prompt, mode) for prompt in prompts])
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        extra = list(logits_processor)
        processors = extra
        if bias:
            from pangu_core.dual.selector import decision_bias

            first = decision_bias(self.tokenizer, bias, self.markers)
            processors = lambda round_index, width: first(round_index, width) + extra  # noqa: E731
        order = sorted(range(len(prompts)), key=lambda i: (len(ids[i]), i))
        answers: list[Answer | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            outputs = generate_with_repair(self.model, self.tokenizer, [ids[i] for i in batch], max_new_tokens,
                                           self.repair_config, repair=repair, do_sample=do_sample,
                                           temperature=temperature, logits_processor=processors)
            for i, output in zip(batch, outputs):
                answers[i] = self._read(texts[i], output, mode)
        return answers

    def _read(self, prompt: str, output, requested: str) -> Answer:
        ids = list(output.ids)
        if output.finished and ids and ids[-1] in end_token_ids(self.model, self.tokenizer):
            ids = ids[:-1]
        text = _prefilled(prompt, self.markers) + self.tokenizer.decode(ids, skip_special_tokens=False)
        parsed = split_thinking(text, self.markers)
        thinking = parsed.thinking or ""
        final = extract_final_answer(text, self.markers) if parsed.closed else None
        return Answer(final_answer=final, thinking=thinking, answer=parsed.answer,
                      mode="fast" if thinking == "" else "slow", requested=requested, tokens=output.generated,
                      repairs=output.repairs, closed=parsed.closed, looped=output.looped, text=text)

    def fast_probability(self, prompts: Sequence[str]):
        """P(fast | prompt) of auto mode per prompt (see :func:`pangu_core.dual.selector.fast_probability`)."""
        from pangu_core.dual.selector import fast_probability

        return fast_probability(self.model, self.tokenizer, prompts, self.markers)
