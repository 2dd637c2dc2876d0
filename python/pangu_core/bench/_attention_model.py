"""Model cases of `pangu-core bench attention`: a tiny Llama with attn_implementation="pangu" vs "sdpa".

The model (~31M parameters) is built locally from a LlamaConfig shaped like openPangu-Embedded
(grouped-query attention, q/k/v/o bias); both sides load the same weights and get the same inputs,
run at the same threads, and their repetitions are interleaved (pangu, sdpa, pangu, ...):

- generate_micro_ctx2k: generated tokens/s of ``model.generate`` (greedy, KV cache, batch 8,
  2,048-token prompt, 128 new tokens; the time includes the prompt's prefill).
- sft_step_micro: training tokens/s of an SFT step (forward + backward + AdamW, batch 8 x 1,024).

``--quick`` keeps these shapes and measures fewer repetitions (recorded in ``repeats``).
"""

from __future__ import annotations

import copy
import statistics
from typing import Callable

import torch

from pangu_core import attention as attn
from pangu_core.bench.common import interleaved_times, make_case, ratio_range, torch_threads

CASE_NAMES = ("generate_micro_ctx2k", "sft_step_micro")
BASELINE = 'transformers attn_implementation="sdpa" (torch SDPA), same model, weights, inputs and threads'
SHAPES = {
    "generate_micro_ctx2k": dict(batch=8, prompt=2048, new_tokens=128),
    "sft_step_micro": dict(batch=8, seq=1024),
}


def model_config(vocab_size: int = 4096, hidden_size: int = 512, layers: int = 8, max_positions: int = 2304):
    """The LlamaConfig of the benchmark model: 8 heads of 64, 2 KV heads, q/k/v/o bias, untied head."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 7 // 2,
                       num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2, attention_bias=True,
                       max_position_embeddings=max_positions, tie_word_embeddings=False, pad_token_id=0,
                       bos_token_id=None, eos_token_id=None)


def build_pair(config, device: str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """(pangu model, sdpa model) with identical float32 weights (seed 0), on ``device``."""
    from transformers import AutoModelForCausalLM

    attn.register_transformers()
    torch.manual_seed(0)
    sdpa = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa")
    pangu = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="pangu")
    pangu.load_state_dict(sdpa.state_dict())
    if pangu.config._attn_implementation != "pangu" or sdpa.config._attn_implementation != "sdpa":
        raise RuntimeError("attn_implementation: transformers did not keep pangu / sdpa")
    return pangu.to(device), sdpa.to(device)


def generate_fn(model, ids: torch.Tensor, new_tokens: int) -> Callable[[], torch.Tensor]:
    """Greedy generation of exactly ``new_tokens`` tokens with a KV cache (no early stop)."""
    mask = torch.ones_like(ids)

    def fn():
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, use_cache=True, pad_token_id=0)
    return fn


def sft_step_fn(model, lr: float = 1e-4) -> Callable[[torch.Tensor], float]:
    """fn(ids): one SFT step (causal LM loss on ``ids``, backward, AdamW step); returns the loss."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def fn(ids: torch.Tensor) -> float:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
    return fn


def _interleave(fns: list[Callable[[], object]], repeats: int, sync: Callable[[], None], name: str,
                report: Callable[[str], None]) -> tuple[list[list[float]], list[object]]:
    """Per-fn seconds of each repetition (no warm-up round: the caller warms up at a small shape) and
    each fn's first result, with a progress line as each repetition starts."""
    first: list[object] = [None] * len(fns)
    current = {"round": 0}

    def keep_first(i: int, fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            result = fn()
            if current["round"] == 0:
                first[i] = result
        return call

    def on_round(r: int) -> None:
        current["round"] = r
        report(f"{name}: repetition {r + 1}/{repeats} (pangu, then sdpa)")

    times = interleaved_times([keep_first(i, fn) for i, fn in enumerate(fns)], repeats, warmup=0, sync=sync,
                              on_round=on_round)
    return times, first


def run_case(name: str, quick: bool, device: str = "cpu") -> dict:
    """Measures one model case (quick: 3 repetitions per side instead of 5; same shapes).

    torch runs with as many threads as pangu_core's pool (recorded in ``threads``).
    """
    if name not in SHAPES:
        raise ValueError(f"name: unknown model case {name!r}; known: {', '.join(CASE_NAMES)}")
    with torch_threads() as threads:
        return _measure(name, quick, device, threads)


def _measure(name: str, quick: bool, device: str, threads: int) -> dict:
    from pangu_core.bench.attention import progress, synchronizer

    repeats = 3 if quick else 5
    shape = SHAPES[name]
    config = model_config()
    pangu, sdpa = build_pair(config, device)
    params = sum(p.numel() for p in pangu.parameters())
    g = torch.Generator().manual_seed(1)
    sync = synchronizer(device)
    fields = dict(repeats=repeats, child_process=False, threads=threads, device=device, dtype="float32",
                  parameters=params, shape=shape,
                  model="LlamaConfig hidden 512, 8 layers, 8 heads x 64, 2 KV heads, q/k/v/o bias, vocab 4096",
                  quick_changes="repetitions only (3 per side instead of 5)" if quick else "")
    if name == "generate_micro_ctx2k":
        ids = torch.randint(1, config.vocab_size, (shape["batch"], shape["prompt"]), generator=g).to(device)
        warm = ids[:, :64]
        for model in (pangu, sdpa):
            model.eval()
            generate_fn(model, warm, 4)()  # warm-up at a small shape, same for both
        fns = [generate_fn(pangu, ids, shape["new_tokens"]), generate_fn(sdpa, ids, shape["new_tokens"])]
        times, outs = _interleave(fns, repeats, sync, name, progress)
        tokens = shape["batch"] * shape["new_tokens"]
        new_a, new_b = outs[0][:, shape["prompt"]:], outs[1][:, shape["prompt"]:]
        same = float((new_a == new_b).float().mean()) if new_a.shape == new_b.shape else 0.0
        fields.update(generated_tokens_equal=same, metric_note="generated tokens (batch x 128) / generate() seconds")
    else:
        ids = torch.randint(1, config.vocab_size, (shape["batch"], shape["seq"]), generator=g).to(device)
        steps = [sft_step_fn(pangu), sft_step_fn(sdpa)]
        for step in steps:  # warm-up: one step at a small shape (creates the AdamW state)
            step(ids[:1, :128])
        pangu.load_state_dict(sdpa.state_dict())  # identical weights again after the warm-up steps
        times, losses = _interleave([lambda: steps[0](ids), lambda: steps[1](ids)], repeats, sync, name, progress)
        tokens = shape["batch"] * shape["seq"]
        fields.update(first_loss_ours=losses[0], first_loss_baseline=losses[1],
                      metric_note="trained tokens (8 x 1024) / step seconds (forward, backward, AdamW)")
    t_ours, t_base = statistics.median(times[0]), statistics.median(times[1])
    return make_case(name, "tokens/s", tokens / t_ours, BASELINE, tokens / t_base,
                     ratio_range=ratio_range(times[0], times[1]), seconds_ours=t_ours, seconds_baseline=t_base,
                     **fields)
