"""Inter-iteration merging for iterative distillation: successive rounds' deltas accumulated on the base.

Pangu Embedded merges the checkpoints of its distillation rounds so that a later round does not erase
what an earlier one learned. Here that is task arithmetic over the round deltas,

    theta = base + lambda * sum_t w_t (theta_t - base),

optionally with TIES (trim + sign election) or DARE (random drop and rescale) applied to the deltas.
The paper does not publish its coefficients, so they are configuration: by default every round gets
w_t = 1 / T (the mean of the rounds) and lambda = 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from pangu_core.merge import MergeConfig, ModelSpec, merge_state_dicts

ROUND_METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class RoundMergeConfig:
    """How rounds are merged. Validates itself and reports every problem at once.

    YAML twin::

        method: task_arithmetic   # task_arithmetic, ties, dare_linear or dare_ties
        weights: null             # one per round; null: 1 / rounds each
        lambda_: 1.0              # scale of the summed deltas
        density: 1.0              # kept fraction for ties / dare_*
        seed: 0                   # DARE draws
    """

    method: str = "task_arithmetic"
    weights: tuple[float, ...] | None = None
    lambda_: float = 1.0
    density: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.method not in ROUND_METHODS:
            problems.append(f"method: expected one of {', '.join(ROUND_METHODS)}, got {self.method!r}")
        if self.weights is not None and (not isinstance(self.weights, tuple) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.weights)):
            problems.append(f"weights: expected a tuple of numbers or None, got {self.weights!r}")
        if not isinstance(self.lambda_, (int, float)) or isinstance(self.lambda_, bool):
            problems.append(f"lambda_: expected a number, got {self.lambda_!r}")
        if not isinstance(self.density, (int, float)) or not 0.0 <= self.density <= 1.0:
            problems.append(f"density: expected a number in [0, 1], got {self.density!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed: expected an int >= 0, got {self.seed!r}")
        if problems:
            raise ValueError("invalid round merge config:\n  " + "\n  ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundMergeConfig":
        data = dict(data)
        if "lambda" in data:
            data["lambda_"] = data.pop("lambda")
        if data.get("weights") is not None:
            data["weights"] = tuple(data["weights"])
        return cls(**data)


def round_merge_config(base: str, rounds: Sequence[str], config: RoundMergeConfig | None = None) -> MergeConfig:
    """The :class:`MergeConfig` that merges ``rounds`` (names or folders, oldest first) onto ``base``."""
    config = config or RoundMergeConfig()
    if not rounds:
        raise ValueError("rounds: expected at least one round checkpoint")
    weights = config.weights if config.weights is not None else tuple(1.0 / len(rounds) for _ in rounds)
    if len(weights) != len(rounds):
        raise ValueError(f"weights: expected {len(rounds)} values (one per round), got {len(weights)}")
    models = tuple(ModelSpec(str(r), float(w)) for r, w in zip(rounds, weights))
    return MergeConfig(method=config.method, base_model=str(base), models=models, lambda_=float(config.lambda_),
                       density=float(config.density), normalize=False, seed=config.seed)


def merge_rounds(base: Mapping[str, torch.Tensor], rounds: Sequence[Mapping[str, torch.Tensor]],
                 config: RoundMergeConfig | None = None) -> dict[str, torch.Tensor]:
    """Merges in-memory round state dicts (oldest first) onto ``base``; returns a new state dict."""
    names = [f"round{t}" for t in range(len(rounds))]
    merge_config = round_merge_config("base", names, config)
    return merge_state_dicts({"base": base, **dict(zip(names, rounds))}, merge_config)


def merge_round_checkpoints(base: str | os.PathLike[str], rounds: Sequence[str | os.PathLike[str]],
                            out_dir: str | os.PathLike[str], config: RoundMergeConfig | None = None,
                            **kwargs: Any) -> str:
    """Merges round checkpoint folders onto the base folder into ``out_dir`` (streaming, atomic).

    ``kwargs`` go to :func:`pangu_core.merge_files.merge_checkpoints` (overwrite, threads, ...).
    """
    from pangu_core.merge_files import merge_checkpoints

    merge_config = round_merge_config(str(base), [str(r) for r in rounds], config)
    return merge_checkpoints(merge_config, out_dir, **kwargs)
