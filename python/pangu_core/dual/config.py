"""The typed configuration of a `pangu-core dual` run, and its built-in YAML files.

See :mod:`pangu_core.dual.run` for what each part drives and ``configs/dual_default.yaml`` for every
field with its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pangu_core.config import Config, expect
from pangu_core.distill.config import level_problems, run_problems, warm_start_for
from pangu_core.distill.sft import SFTConfig
from pangu_core.distill.sft_cli import SFTRunConfig
from pangu_core.dual.fusion import FusionConfig
from pangu_core.dual.self_repair import RepairConfig
from pangu_core.evaluation import EvalConfig
from pangu_core.runs import builtin_yaml

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class PhaseConfig(Config):
    """One fine-tuning phase: how many fresh prompts it builds pairs from, and its SFT."""

    # Fresh training prompts drawn for the phase (spread evenly over the run's levels).
    prompts: int = 2000
    # Optimisation (max_steps: the phase's steps; the seed is replaced by the run's seed and phase).
    sft: SFTConfig = field(default_factory=SFTConfig)

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.prompts >= 1, "prompts", "an int >= 1", self.prompts)
        return problems


@dataclass(frozen=True)
class LabelConfig(Config):
    """How the fresh pool is labelled fast- or slow-suited: pass rates in both modes over k samples."""

    # Fresh prompts labelled (spread evenly over the run's levels).
    pool_size: int = 600
    # Sampled answers per prompt and mode (k).
    k: int = 4
    # Their sampling temperature.
    temperature: float = 1.0
    # Their length limit, in tokens.
    max_new_tokens: int = 256
    # Prompts per generate call (times k sequences).
    batch_size: int = 64

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("pool_size", "k", "max_new_tokens", "batch_size"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        expect(problems, math.isfinite(self.temperature) and self.temperature > 0, "temperature",
               "a finite number > 0", self.temperature)
        return problems


@dataclass(frozen=True)
class StressConfig(Config):
    """The self-repair stress set: hard levels, greedy and sampled hot, with and without repair."""

    # Levels of the stress set (need not be trained levels: unseen ones loop more).
    levels: tuple[int, ...] = (4, 5)
    # Test prompts per level.
    per_level: int = 50
    # Temperature of the sampled pass (the greedy pass is the other).
    temperature: float = 1.3
    # Length limit per answer, in tokens, counted over every repair round.
    max_new_tokens: int = 256
    # The mode the stress prompts are asked in (auto: as a user of the dual model would).
    mode: Literal["slow", "auto"] = "auto"
    # The detector and the repairs.
    repair: RepairConfig = field(default_factory=RepairConfig)

    def validate(self) -> list[str]:
        problems: list[str] = []
        level_problems(problems, "levels", self.levels)
        for name in ("per_level", "max_new_tokens"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        expect(problems, math.isfinite(self.temperature) and self.temperature > 0, "temperature",
               "a finite number > 0", self.temperature)
        return problems


@dataclass(frozen=True)
class DualConfig(Config):
    """One `pangu-core dual` run."""

    # Difficulty levels of the training prompts, the label pool and the test split.
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Test problems per level.
    test_per_level: int = 100
    # Share of the problem space (by prompt hash) held out as the test split.
    test_share: float = 0.2
    # Seed of the test split and of the warm start's data.
    data_seed: int = 0
    # Seed of the phases' prompts, pairs, label samples and SFT order.
    seed: int = 0
    # CPU threads for torch.
    num_threads: int = 2
    # Labels, pair mixing and the phase-1 schedule (fast_shares).
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # Phase 1: explicit modes, one curriculum stage per fusion.fast_shares entry, from the start checkpoint.
    phase1: PhaseConfig = field(default_factory=PhaseConfig)
    # Labels of a fresh pool by the phase-1 model.
    labels: LabelConfig = field(default_factory=LabelConfig)
    # Phase 2: auto pairs with explicit replay (and self-repair pairs), from the phase-1 model.
    phase2: PhaseConfig = field(default_factory=lambda: PhaseConfig(prompts=LabelConfig().pool_size))
    # Share of phase 2's prompts that also give a self-repair pair (0: none).
    repair_pair_share: float = 0.1
    # Evaluation of the start and final models on the test split (modes: slow, fast, auto).
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(modes=("slow", "fast", "auto"), self_repair=True))
    # Biases added to the close marker's logit at auto mode's decision, one evaluation each (the
    # accuracy / tokens frontier; 0 is plain auto).
    biases: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    # Self-repair on the stress set.
    stress: StressConfig = field(default_factory=StressConfig)
    # The start checkpoint's training when no --init is given (its test split, evaluation and threads
    # are this run's).
    warm_start: SFTRunConfig = field(default_factory=SFTRunConfig)

    def validate(self) -> list[str]:
        problems = run_problems(self)
        expect(problems, 0.0 <= self.repair_pair_share <= 1.0, "repair_pair_share", "a number in [0, 1]",
               self.repair_pair_share)
        expect(problems, set(self.eval.modes) == {"slow", "fast", "auto"}, "eval.modes",
               "slow, fast and auto (each is measured)", list(self.eval.modes))
        expect(problems, len(self.biases) > 0 and all(math.isfinite(b) for b in self.biases), "biases",
               "at least one finite number", list(self.biases))
        stages = len(self.fusion.fast_shares)
        expect(problems, self.phase1.sft.max_steps >= stages, "phase1.sft.max_steps",
               f"at least one step per stage of fusion.fast_shares ({stages})", self.phase1.sft.max_steps)
        expect(problems, self.phase2.prompts <= self.labels.pool_size, "phase2.prompts",
               f"at most labels.pool_size={self.labels.pool_size} (phase 2 trains on the labelled pool)",
               self.phase2.prompts)
        return problems

    def warm_start_config(self) -> SFTRunConfig:
        """The warm start with this run's test split, evaluation and threads."""
        return warm_start_for(self, self.eval.replace(modes=("slow", "fast")))

    def phase_sft(self, phase: int) -> SFTConfig:
        """The SFT config of phase 1 or 2, seeded by the run's seed and the phase."""
        sft = (self.phase1 if phase == 1 else self.phase2).sft
        return sft.replace(warmup_steps=min(sft.warmup_steps, sft.max_steps), seed=self.seed * 1000 + phase)


def builtin_config(name: str) -> Path:
    """Path of a built-in dual YAML (``dual_default``, ``dual_quick``)."""
    return builtin_yaml(CONFIG_DIR, name, "dual")
