"""Tiny models with the architecture of openPangu-Embedded, as transformers Llama causal LMs.

openPangu-Embedded-7B is a Llama-like decoder: grouped-query attention (32 query heads over 8 KV
heads, 4:1), bias on the q/k/v/o projections, RMSNorm with eps 1e-5, rotary position embeddings,
a SwiGLU MLP and untied input/output embeddings. The sizes here keep all of that and shrink the
widths and depth. RoPE theta defaults to 10,000 rather than the 7B's 1.6e7, which only pays off
at 32k context; pass ``rope_theta`` to change it.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import LlamaConfig, LlamaForCausalLM

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class TinySize:
    """Shape of one named size; head dim is hidden / heads, KV heads are heads / 4."""

    hidden: int
    layers: int
    heads: int
    intermediate: int


# Parameter counts (vocabulary ~110): nano ~0.8M, micro ~2.9M, mini ~6.8M, small ~19M.
SIZES = {
    "nano": TinySize(hidden=128, layers=4, heads=8, intermediate=384),
    "micro": TinySize(hidden=256, layers=4, heads=8, intermediate=704),
    "mini": TinySize(hidden=320, layers=6, heads=8, intermediate=896),
    "small": TinySize(hidden=512, layers=7, heads=8, intermediate=1408),
}


def tiny_config(
    size: str = "micro",
    vocab_size: int = 128,
    max_position_embeddings: int = 1024,
    rope_theta: float = 10000.0,
    attn_implementation: str = "sdpa",
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> LlamaConfig:
    """The LlamaConfig of a named size (see :data:`SIZES`)."""
    problems = []
    if size not in SIZES:
        problems.append(f"size: unknown {size!r}; known: {', '.join(SIZES)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        problems.append(f"vocab_size: expected an int >= 2, got {vocab_size!r}")
    if not isinstance(max_position_embeddings, int) or max_position_embeddings < 8:
        problems.append(f"max_position_embeddings: expected an int >= 8, got {max_position_embeddings!r}")
    if not isinstance(rope_theta, (int, float)) or rope_theta <= 0:
        problems.append(f"rope_theta: expected a positive number, got {rope_theta!r}")
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        problems.append(f"attn_implementation: expected one of {ATTENTION_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if problems:
        raise ValueError("; ".join(problems))
    shape = SIZES[size]
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads // 4,
        head_dim=shape.hidden // shape.heads,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        attention_bias=True,
        mlp_bias=False,
        tie_word_embeddings=False,
        initializer_range=0.02,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    config._attn_implementation = attn_implementation
    return config


def tiny_pangu(size: str = "micro", tokenizer=None, seed: int | None = 0, **config_overrides) -> LlamaForCausalLM:
    """A freshly initialised tiny Pangu-architecture causal LM.

    With ``tokenizer`` the vocabulary size and bos/eos/pad ids come from it. ``seed`` fixes the
    initial weights (None leaves torch's global generator alone).
    """
    import torch

    if tokenizer is not None:
        config_overrides.setdefault("vocab_size", len(tokenizer))
        config_overrides.setdefault("bos_token_id", tokenizer.bos_token_id)
        config_overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
        config_overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = tiny_config(size, **config_overrides)
    if seed is None:
        return LlamaForCausalLM(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def count_parameters(model) -> int:
    """Number of parameters (each tensor counted once)."""
    return sum(p.numel() for p in model.parameters())
