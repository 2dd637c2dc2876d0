"""Sampling rollouts for GRPO: the generator protocol, its transformers implementation, and log-probs.

A generator samples ``n`` responses per prompt and returns, beside the token ids, the log-probability
of each sampled token under the distribution it was sampled from (the *behaviour* log-probs that the
off-policy corrections of :mod:`pangu_core.rl.grpo` need)::

    generation = generator.generate(prompt_ids, n=8, temperature=1.0, max_new_tokens=256)
    generation.responses[p * 8 + j]      # token ids of answer j to prompt p (eos included when emitted)
    generation.log_probs[p * 8 + j]      # float32 tensor of the same length

Any object with that ``generate`` method is a :class:`Generator` (a vLLM engine can be wrapped the same
way). :class:`TransformersGenerator` samples with :func:`pangu_core.evaluation.generate` (left-padded
batches, each answer cut after its first eos) and then scores the sampled tokens with one forward
pass of the same weights (:func:`response_log_probs`), which the learner also uses for its own
log-probs. The sampling distribution is softmax(logits / temperature) over the whole vocabulary;
the generator refuses a model whose generation config would change it (repetition penalty, min-p,
suppressed tokens, ...), since its behaviour log-probs would then be wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from pangu_core.evaluation import generate as sample_continuations
from pangu_core.rl.grpo import token_log_probs

__all__ = ["Generation", "Generator", "TransformersGenerator", "response_log_probs", "check_generate_args"]


class Generation(NamedTuple):
    """What a generator returns for P prompts and n samples each (P * n rows, prompt-major).

    ``responses``: list of token-id lists, rows ``p * n`` to ``p * n + n - 1`` answer prompt ``p``.
    ``log_probs``: list of float32 CPU tensors, one per response and of its length: log pi_behav of
    each sampled token at the sampling temperature.
    """

    responses: list[list[int]]
    log_probs: list[torch.Tensor]


@runtime_checkable
class Generator(Protocol):
    """Anything that samples ``n`` responses per prompt with their behaviour log-probs."""

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, temperature: float,
                 max_new_tokens: int) -> Generation:
        """Samples ``n`` responses to each token-id prompt; see :class:`Generation` for the result."""
        ...


def check_generate_args(prompt_ids: Any, n: Any, temperature: Any, max_new_tokens: Any) -> list[list[int]]:
    """Checks the arguments of ``Generator.generate`` (errors name the argument); returns the prompts as lists."""
    if isinstance(prompt_ids, (str, bytes)) or not isinstance(prompt_ids, Sequence) or not prompt_ids:
        raise ValueError("prompt_ids: expected a non-empty sequence of token-id lists")
    prompts = []
    for index, prompt in enumerate(prompt_ids):
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.tolist()
        if (isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt
                or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)):
            raise ValueError(f"prompt_ids[{index}]: expected a non-empty list of token ids >= 0")
        prompts.append(list(prompt))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")
    return prompts


def response_log_probs(model, prompt_ids: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                       temperature: float = 1.0, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each response's tokens after its prompt, by one forward pass of ``model``.

    ``prompt_ids[i]`` is the prompt of ``responses[i]`` (repeat a prompt for its n responses). The rows
    are right-padded with ``pad_id`` (masked out, so real tokens keep positions 0..L-1 and never see
    padding). Returns ``(log_probs, mask)``, both (B, T) with T the longest response, on the model's
    device: float32 log softmax(logits / temperature) at each response token, 0 where ``mask`` is
    False. Differentiable (wrap in ``torch.no_grad()`` for behaviour or old log-probs). An empty
    response gives an all-False row.
    """
    if len(prompt_ids) != len(responses):
        raise ValueError(f"responses: expected {len(prompt_ids)} rows like prompt_ids, got {len(responses)}")
    if not responses:
        raise ValueError("responses: expected at least one row")
    device = next(model.parameters()).device
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, responses)]
    if any(not p for p in prompt_ids):
        raise ValueError("prompt_ids: expected non-empty prompts (the first response token needs a prefix)")
    width, longest = max(lengths), max(len(r) for r in responses)
    input_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    targets = torch.zeros((len(responses), max(longest, 1)), dtype=torch.long)
    mask = torch.zeros_like(targets, dtype=torch.bool)
    starts = []
    for row, (prompt, response) in enumerate(zip(prompt_ids, responses)):
        input_ids[row, :lengths[row]] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention[row, :lengths[row]] = 1
        targets[row, :len(response)] = torch.tensor(list(response), dtype=torch.long)
        mask[row, :len(response)] = True
        starts.append(len(prompt) - 1)   # the logits at the prompt's last token predict response token 0
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    # Gather, per row, the T logits that predict its response tokens (padding rows read position 0).
    offsets = torch.arange(targets.shape[1])
    index = (torch.tensor(starts)[:, None] + offsets[None, :]).clamp(max=width - 1)
    index = torch.where(mask, index, 0).to(device)
    picked = logits.gather(1, index[:, :, None].expand(-1, -1, logits.shape[-1]))
    mask = mask.to(device)
    return token_log_probs(picked, targets.to(device), mask, temperature), mask


# Generation-config fields that change the sampling distribution, with their neutral values.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "min_p": (None, 0.0),
    "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,),
    "no_repeat_ngram_size": (None, 0), "min_length": (None, 0), "min_new_tokens": (None, 0),
    "bad_words_ids": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0), "watermarking_config": (None,),
}


class TransformersGenerator:
    """:class:`Generator` for a transformers causal LM and its tokenizer (pad and eos ids needed).

    ``batch_size``: prompts sampled per ``model.generate`` call (None: all at once). Sampling uses
    torch's global random generator (seed it with ``torch.manual_seed`` for repeatable rollouts).
    """

    def __init__(self, model, tokenizer, batch_size: int | None = None) -> None:
        if getattr(tokenizer, "pad_token_id", None) is None or getattr(tokenizer, "eos_token_id", None) is None:
            raise ValueError("tokenizer: expected pad_token_id and eos_token_id to be set")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size: expected None or an int >= 1, got {batch_size!r}")
        config = getattr(model, "generation_config", None)
        changed = [f"{name}={getattr(config, name)!r}" for name, neutral in _NEUTRAL.items()
                   if config is not None and getattr(config, name, None) not in neutral]
        if changed:
            raise ValueError(f"model: generation_config sets {', '.join(changed)}, which change the sampling "
                             f"distribution; behaviour log-probs would not match it (reset them to neutral)")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, temperature: float,
                 max_new_tokens: int) -> Generation:
        """Samples ``n`` answers per prompt at ``temperature``; see :class:`Generation`."""
        prompts = check_generate_args(prompt_ids, n, temperature, max_new_tokens)
        was_training = self.model.training
        self.model.eval()
        responses: list[list[int]] = []
        log_probs: list[torch.Tensor] = []
        step = self.batch_size or len(prompts)
        try:
            for start in range(0, len(prompts), step):
                chunk = prompts[start:start + step]
                sampled = sample_continuations(self.model, self.tokenizer, chunk, max_new_tokens, do_sample=True,
                                               temperature=float(temperature), num_return_sequences=n)
                repeated = [prompt for prompt in chunk for _ in range(n)]
                scores, mask = response_log_probs(self.model, repeated, sampled, float(temperature),
                                                  self.tokenizer.pad_token_id)
                scores = scores.float().cpu()
                for row, response in enumerate(sampled):
                    responses.append(response)
                    log_probs.append(scores[row, :len(response)].clone())
        finally:
            self.model.train(was_training)
        return Generation(responses, log_probs)
