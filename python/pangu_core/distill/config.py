"""The typed configuration of a distillation run (`pangu-core distill`), and its built-in YAML files.

See :mod:`pangu_core.distill.loop` for what each part drives and ``configs/distill_default.yaml``
for every field with its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pangu_core.config import Config, expect
from pangu_core.distill.sft import SFTConfig
from pangu_core.distill.sft_cli import SFTRunConfig
from pangu_core.distill.teachers import TeacherConfig
from pangu_core.evaluation import EvalConfig
from pangu_core.runs import builtin_yaml

CONFIG_DIR = Path(__file__).parent / "configs"
MERGE_METHODS = ("none", "task_arithmetic", "ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class SelectionConfig(Config):
    """How each round scores its candidate prompts and picks the ones to train on."""

    # gaussian (weights around mu), random, level_matched_random or fixed_levels.
    strategy: Literal["gaussian", "random", "level_matched_random", "fixed_levels"] = "gaussian"
    # Candidate prompts drawn fresh each round (P).
    pool_size: int = 600
    # Prompts selected per round (N).
    select: int = 200
    # Centre, width and floor of the Gaussian weights over complexity C = 1 - pass rate.
    mu: float = 0.5
    sigma: float = 0.2
    floor: float = 0.05
    # Levels per round for fixed_levels (round t uses entry t-1; the last entry repeats).
    fixed_levels: tuple[tuple[int, ...], ...] = ()
    # Sampled answers per prompt when scoring (k), their temperature and length limit.
    k: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 160
    # Prompts per generate call when scoring.
    batch_size: int = 64

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("pool_size", "select", "k", "max_new_tokens", "batch_size"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        expect(problems, self.select <= self.pool_size, "select", f"at most pool_size={self.pool_size}", self.select)
        expect(problems, math.isfinite(self.mu), "mu", "a finite number", self.mu)
        expect(problems, math.isfinite(self.sigma) and self.sigma > 0, "sigma", "a finite number > 0", self.sigma)
        expect(problems, 0.0 <= self.floor <= 1.0, "floor", "a number in [0, 1]", self.floor)
        expect(problems, math.isfinite(self.temperature) and self.temperature > 0, "temperature",
               "a finite number > 0", self.temperature)
        if self.strategy == "fixed_levels":
            expect(problems, len(self.fixed_levels) > 0 and all(len(levels) > 0 for levels in self.fixed_levels),
                   "fixed_levels", "one non-empty list of levels per round for strategy fixed_levels",
                   [list(levels) for levels in self.fixed_levels])
        return problems

    def levels_for(self, round_index: int) -> tuple[int, ...]:
        """The fixed levels of round ``round_index`` (1-based)."""
        return self.fixed_levels[min(round_index, len(self.fixed_levels)) - 1]


@dataclass(frozen=True)
class MergingConfig(Config):
    """How the rounds' checkpoints are merged, and which model the next round starts from."""

    # none (no merge: the chain of round models), task_arithmetic, ties, dare_linear or dare_ties.
    method: Literal["none", "task_arithmetic", "ties", "dare_linear", "dare_ties"] = "task_arithmetic"
    # Deltas against the start checkpoint ("base": start + lambda * mean of every round's delta) or
    # against the previous merged model ("previous": previous + lambda * delta of the newest round).
    delta_reference: Literal["base", "previous"] = "base"
    # Scale of the merged deltas.
    lambda_: float = 1.0
    # Kept fraction of each delta for ties / dare_*.
    density: float = 1.0
    # Seed of DARE's drops.
    seed: int = 0
    # Whether the next round starts from the merged model (else from the last round's model).
    feed_merged: bool = True

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, math.isfinite(self.lambda_), "lambda_", "a finite number", self.lambda_)
        expect(problems, 0.0 < self.density <= 1.0, "density", "a number in (0, 1]", self.density)
        expect(problems, self.seed >= 0, "seed", "an int >= 0", self.seed)
        return problems


def level_problems(problems: list[str], name: str, levels: tuple[int, ...]) -> None:
    """Appends a problem unless ``levels`` are distinct task levels (at least one)."""
    from pangu_core.tasks.math_tasks import LEVELS

    expect(problems, len(levels) > 0 and len(set(levels)) == len(levels) and all(lv in LEVELS for lv in levels),
           name, f"distinct levels from {list(LEVELS)}", list(levels))


def run_problems(config) -> list[str]:
    """Problems with the fields a stage run with a warm start has (DistillConfig, DualConfig): levels,
    test_per_level, test_share, data_seed, seed, num_threads, and warm_start's levels."""
    problems: list[str] = []
    level_problems(problems, "levels", config.levels)
    for name, low in (("test_per_level", 1), ("data_seed", 0), ("seed", 0), ("num_threads", 1)):
        expect(problems, getattr(config, name) >= low, name, f"an int >= {low}", getattr(config, name))
    expect(problems, 0.0 < config.test_share < 1.0, "test_share", "a number in (0, 1)", config.test_share)
    expect(problems, tuple(config.warm_start.levels) == tuple(config.levels), "warm_start.levels",
           f"the run's levels {list(config.levels)}", list(config.warm_start.levels))
    return problems


def warm_start_for(config, eval_config: EvalConfig) -> SFTRunConfig:
    """``config.warm_start`` with the run's test split and threads and ``eval_config``, one process."""
    return config.warm_start.replace(test_per_level=config.test_per_level, test_share=config.test_share,
                                     data_seed=config.data_seed, eval=eval_config, num_threads=config.num_threads,
                                     num_processes=1)


@dataclass(frozen=True)
class DistillConfig(Config):
    """One `pangu-core distill` run."""

    # Distillation rounds (T).
    rounds: int = 3
    # Difficulty levels of the generated pool and of the test split.
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Test problems per level (generated; for a JSONL pool, at most this many held out per level).
    test_per_level: int = 100
    # Share of the problem space (by prompt hash) held out as the test split.
    test_share: float = 0.2
    # Seed of the test split and of the warm start's data.
    data_seed: int = 0
    # Seed of the rounds: candidate pools, scoring samples, selection draws and SFT order. Arms of an
    # ablation with the same seed see the same pools.
    seed: int = 0
    # CPU threads for torch.
    num_threads: int = 2
    # Response tokens of SFT per round (the steps follow from the selected data's mean length).
    tokens_per_round: int = 400_000
    # Scoring and selection.
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # Who writes the traces.
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # Optimisation of each round's SFT (max_steps is replaced by the token budget's step count).
    sft: SFTConfig = field(default_factory=SFTConfig)
    # Merging of the rounds.
    merging: MergingConfig = field(default_factory=MergingConfig)
    # Evaluation of each round's models on the test split.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The start checkpoint's training when no --init is given (its test split and evaluation are
    # replaced by this run's, so round 0 is evaluated like the others).
    warm_start: SFTRunConfig = field(default_factory=SFTRunConfig)

    def validate(self) -> list[str]:
        problems = run_problems(self)
        for name, low in (("rounds", 1), ("tokens_per_round", 1)):
            expect(problems, getattr(self, name) >= low, name, f"an int >= {low}", getattr(self, name))
        for i, levels in enumerate(self.selection.fixed_levels):
            expect(problems, all(level in self.levels for level in levels), f"selection.fixed_levels[{i}]",
                   f"levels of this run ({list(self.levels)})", list(levels))
        return problems

    def warm_start_config(self) -> SFTRunConfig:
        """The warm start with this run's test split, evaluation and threads."""
        return warm_start_for(self, self.eval)

    def round_sft(self, steps: int, round_index: int) -> SFTConfig:
        """The SFT config of one round: ``steps`` steps, seeded by the run's seed and the round."""
        return self.sft.replace(max_steps=steps, warmup_steps=min(self.sft.warmup_steps, steps),
                                seed=self.seed * 1000 + round_index)


def builtin_config(name: str) -> Path:
    """Path of a built-in distill YAML (``distill_default``, ``distill_quick``, ...)."""
    return builtin_yaml(CONFIG_DIR, name, "distill")
