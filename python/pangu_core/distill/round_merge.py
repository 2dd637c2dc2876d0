"""Inter-iteration merging for iterative distillation: successive rounds' deltas accumulated on the base.

Pangu Embedded merges the checkpoints of its distillation rounds so that a later round does not erase
what an earlier one learned. Here that is task arithmetic over the round deltas,

    theta = base + lambda * sum_t w_t (theta_t - base),

optionally with TIES (trim + sign election) or DARE (random drop and rescale) applied to the deltas.
The paper does not publish its coefficients, so they are configuration: by default every round gets
w_t = 1 / T (the mean of the rounds) and lambda = 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch

from pangu_core.config import Config, expect, is_number
from pangu_core.merge.config import InputHash, MergeConfig, ModelSpec
from pangu_core.merge.files import merge_checkpoints
from pangu_core.merge.in_memory import merge_state_dicts

RoundMethod = Literal["task_arithmetic", "ties", "dare_linear", "dare_ties"]


@dataclass(frozen=True)
class RoundMergeConfig(Config):
    """How rounds are merged. Checks itself on construction and reports every problem at once.

    YAML twin::

        method: task_arithmetic   # task_arithmetic, ties, dare_linear or dare_ties
        weights: null             # one per round; null: 1 / rounds each
        lambda_: 1.0              # scale of the summed deltas
        density: 1.0              # kept fraction for ties / dare_*
        seed: 0                   # DARE draws
    """

    # merge method applied to the round deltas
    method: RoundMethod = "task_arithmetic"
    # w_t, one per round (oldest first); None: 1 / rounds each
    weights: tuple[float, ...] | None = None
    # scale of the summed deltas
    lambda_: float = 1.0
    # kept fraction of each delta for ties / dare_*, in [0, 1]
    density: float = 1.0
    # seed of DARE's random drops
    seed: int = 0

    def validate(self) -> list[str]:
        # runs also when a field has the wrong type (problems for it are dropped), so it never raises
        problems: list[str] = []
        if self.weights is not None:
            expect(problems, len(self.weights) > 0 and all(is_number(w) and math.isfinite(w) for w in self.weights),
                   "weights", "a non-empty list of finite numbers or null", self.weights)
        expect(problems, is_number(self.lambda_) and math.isfinite(self.lambda_), "lambda_", "a finite number",
               self.lambda_)
        expect(problems, is_number(self.density) and 0.0 <= self.density <= 1.0, "density", "a number in [0, 1]",
               self.density)
        expect(problems, isinstance(self.seed, int) and 0 <= self.seed < 2**64, "seed", "an int in [0, 2**64)",
               self.seed)
        return problems


def round_merge_config(base: str, rounds: Sequence[str], config: RoundMergeConfig | None = None) -> MergeConfig:
    """The :class:`MergeConfig` that merges ``rounds`` (names or folders, oldest first) onto ``base``."""
    config = config or RoundMergeConfig()
    if not rounds:
        raise ValueError("rounds: expected at least one round checkpoint")
    weights = config.weights if config.weights is not None else tuple(1.0 / len(rounds) for _ in rounds)
    if len(weights) != len(rounds):
        raise ValueError(f"weights: expected {len(rounds)} values (one per round), got {len(weights)}")
    models = tuple(ModelSpec(str(r), float(w)) for r, w in zip(rounds, weights))
    return MergeConfig(method=config.method, base_model=str(base), models=models, lambda_=config.lambda_,
                       density=config.density, normalize=False, seed=config.seed)


def merge_rounds(base: Mapping[str, torch.Tensor], rounds: Sequence[Mapping[str, torch.Tensor]],
                 config: RoundMergeConfig | None = None) -> dict[str, torch.Tensor]:
    """Merges in-memory round state dicts (oldest first) onto ``base``; returns a new state dict in
    the base's dtypes (float32 accumulation)."""
    names = [f"round{t}" for t in range(len(rounds))]
    merge_config = round_merge_config("base", names, config)
    return merge_state_dicts({"base": base, **dict(zip(names, rounds))}, merge_config)


def merge_round_checkpoints(base: str | os.PathLike[str], rounds: Sequence[str | os.PathLike[str]],
                            out_dir: str | os.PathLike[str], config: RoundMergeConfig | None = None, *,
                            overwrite: bool = False, threads: int | None = None, progress: bool = True,
                            durable: bool = True, input_hash: InputHash | None = None) -> str:
    """Merges round checkpoint folders onto the base folder into ``out_dir`` (streaming, atomic);
    returns its path. The keyword arguments are :func:`pangu_core.merge.merge_checkpoints`'s."""
    merge_config = round_merge_config(str(base), [str(r) for r in rounds], config)
    return merge_checkpoints(merge_config, out_dir, overwrite=overwrite, threads=threads, progress=progress,
                             durable=durable, input_hash=input_hash)
