"""The typed configuration of a GRPO run (`pangu-core rl`), and its built-in YAML files.

See :mod:`pangu_core.rl.run` for what each part drives and ``configs/rl_default.yaml`` for every
field with its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pangu_core.config import Config, expect
from pangu_core.evaluation import EvalConfig
from pangu_core.rl.grpo import GRPOConfig
from pangu_core.rl.scheduler import ScheduleConfig
from pangu_core.runs import builtin_yaml

CONFIG_DIR = Path(__file__).parent / "configs"
BACKENDS = ("process", "ray", "torchrun")
_BUILTIN_RESOURCES = ("CPU", "GPU", "NPU", "memory", "object_store_memory")


@dataclass(frozen=True)
class RoleResources(Config):
    """What each Ray actor of one role asks for (the Ray backend's placement of that role)."""

    # CPUs reserved per actor (fractions allowed). Ray schedules by it; the torch threads of a role
    # come from num_threads / rollout_threads.
    cpus: float = 1.0
    # GPUs and Ascend NPUs (Ray's "NPU" resource) reserved per actor (fractions allowed).
    gpus: float = 0.0
    npus: float = 0.0
    # Custom Ray resources per actor, e.g. {"rollout_node": 1} to keep a role on nodes started with
    # --resources '{"rollout_node": 4}'.
    resources: tuple[tuple[str, float], ...] = ()

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("cpus", "gpus", "npus"):
            value = getattr(self, name)
            expect(problems, math.isfinite(value) and value >= 0, name, "a finite number >= 0", value)
        for key, value in self.resources:
            expect(problems, bool(key) and key not in _BUILTIN_RESOURCES, f"resources[{key!r}]",
                   f"a custom resource name (not one of {', '.join(_BUILTIN_RESOURCES)}: use cpus / gpus / npus)",
                   key)
            expect(problems, math.isfinite(value) and value >= 0, f"resources[{key!r}]", "a finite number >= 0", value)
        return problems

    def ray_options(self) -> dict:
        """The keyword arguments of ``ActorClass.options`` for this role."""
        resources = dict(self.resources)
        if self.npus:
            resources["NPU"] = self.npus
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "resources": resources}


@dataclass(frozen=True)
class PlacementConfig(Config):
    """Where the roles of a multi-machine run go and how they talk (backends "ray" and "torchrun")."""

    # Ray: resources of the learner actor, of each rollout actor, of each reward actor and of each
    # node's weight relay.
    learner: RoleResources = field(default_factory=lambda: RoleResources(cpus=1.0))
    rollout: RoleResources = field(default_factory=lambda: RoleResources(cpus=1.0))
    reward: RoleResources = field(default_factory=lambda: RoleResources(cpus=0.5))
    relay: RoleResources = field(default_factory=lambda: RoleResources(cpus=0.0))
    # Ray: reward actors (MARS) the rollout actors send their answers to; 0 scores in the rollout actor.
    reward_workers: int = 0
    # Ray: results (claims of groups) a rollout actor may have in flight to the learner at once.
    max_inflight: int = 1
    # Ray: how often a rollout actor that died is restarted before it counts as gone.
    max_restarts: int = 2
    # torchrun: relays on the rollout ranks (any eta; rollout_workers processes per rollout rank pull
    # from their node's shared memory) instead of lockstep rounds (each rollout rank generates one
    # share of every batch; eta = 1 is one-step-off).
    torchrun_relays: bool = False
    # torch.distributed backend of the weights: auto = gloo for CPU roles, nccl when the learner
    # and relays have GPUs, hccl when they have NPUs.
    dist_backend: Literal["auto", "gloo", "nccl", "hccl"] = "auto"
    # Seconds a torch.distributed wait (and the start of the actors) may take before it fails.
    dist_timeout_s: float = 1800.0
    startup_timeout_s: float = 600.0

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.reward_workers >= 0, "reward_workers", "an int >= 0", self.reward_workers)
        expect(problems, self.max_inflight >= 1, "max_inflight", "an int >= 1", self.max_inflight)
        expect(problems, self.max_restarts >= 0, "max_restarts", "an int >= 0", self.max_restarts)
        for name in ("dist_timeout_s", "startup_timeout_s"):
            value = getattr(self, name)
            expect(problems, math.isfinite(value) and value > 0, name, "a finite number > 0", value)
        return problems

    def weights_backend(self) -> str:
        """The torch.distributed backend of the weights (``dist_backend`` with auto resolved)."""
        if self.dist_backend != "auto":
            return self.dist_backend
        if self.learner.npus > 0 and self.relay.npus > 0:
            return "hccl"
        if self.learner.gpus > 0 and self.relay.gpus > 0:
            return "nccl"
        return "gloo"


@dataclass(frozen=True)
class RLConfig(Config):
    """One `pangu-core rl` run: prompts, scheduling, loss, optimiser, checkpoints and evaluation."""

    # Difficulty levels of the generated training prompts and of the test split.
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Generated training prompts in the stream (it cycles through them).
    train_prompts: int = 2000
    # Test problems per level (greedy accuracy of the snapshots, after the run).
    test_per_level: int = 50
    # Share of the problem space (by prompt hash) held out as the test split.
    test_share: float = 0.2
    # Seed of the generated prompts and of the test split.
    data_seed: int = 0
    # Seed of the run: the learner's and the rollout workers' sampling.
    seed: int = 0
    # Mode tag of the training prompts ("slow": no tag, "fast": " /no_think").
    mode: Literal["slow", "fast"] = "slow"
    # Learner steps (policy versions) of the run.
    steps: int = 40
    # Where the learner and rollout workers run: "process" (this host: rollout worker processes),
    # "ray" (actors on a Ray cluster) or "torchrun" (ranks of `torchrun`: rank 0 learns).
    backend: Literal["process", "ray", "torchrun"] = "process"
    # Rollout workers: processes (process), actors (ray), processes per rollout rank (torchrun
    # with relays; in lockstep each rollout rank is one worker).
    rollout_workers: int = 1
    # Torch threads over all processes (learner + workers): the learner gets what the workers leave.
    num_threads: int = 2
    # Torch threads of each rollout worker (rollout_workers * rollout_threads < num_threads).
    rollout_threads: int = 1
    # AdamW learning rate, weight decay and betas of the learner.
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    # Gradient-norm clip of each step (None: not clipped).
    max_grad_norm: float | None = 1.0
    # A checkpoint (model + learner state + prompt-stream position) every this many steps.
    checkpoint_every: int = 10
    # Steps at which the model is saved for the evaluation after the run (0: the input checkpoint;
    # the last step is always added).
    snapshot_steps: tuple[int, ...] = (0, 20)
    # 2-thread speed-ups a_g, a_t of generation and training assumed by the speed model's
    # two-thread sync reference (sync ~ g / a_g + t / a_t); METHOD.md's 1.6x limit on 2 cores.
    speedup_generate: float = 1.25
    speedup_train: float = 1.25
    # Scheduling: eta, group size G, groups per step, sampling, the queue (ScheduleConfig).
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # The GRPO loss (GRPOConfig).
    grpo: GRPOConfig = field(default_factory=lambda: GRPOConfig(correction="decoupled"))
    # Evaluation of the snapshots on the test split after the run (EvalConfig; greedy).
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(modes=("slow",)))
    # Placement of the roles of the ray and torchrun backends (PlacementConfig).
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def validate(self) -> list[str]:
        from pangu_core.tasks.math_tasks import LEVELS

        problems: list[str] = []
        expect(problems, len(self.levels) > 0 and len(set(self.levels)) == len(self.levels)
               and all(level in LEVELS for level in self.levels), "levels",
               f"distinct levels from {list(LEVELS)}", list(self.levels))
        for name, low in (("train_prompts", 1), ("test_per_level", 1), ("data_seed", 0), ("seed", 0),
                          ("steps", 1), ("rollout_workers", 1), ("num_threads", 2), ("rollout_threads", 1),
                          ("checkpoint_every", 1)):
            expect(problems, getattr(self, name) >= low, name, f"an int >= {low}", getattr(self, name))
        expect(problems, self.mode in self.eval.modes, "eval.modes", f"modes including the run's mode {self.mode!r}",
               list(self.eval.modes))
        expect(problems, 0.0 < self.test_share < 1.0, "test_share", "a number in (0, 1)", self.test_share)
        if self.rollout_workers >= 1 and self.rollout_threads >= 1:
            expect(problems, self.rollout_workers * self.rollout_threads < self.num_threads, "rollout_workers",
                   f"rollout_workers * rollout_threads < num_threads={self.num_threads} (the learner needs a "
                   "thread)", self.rollout_workers)
        expect(problems, math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               "a finite number > 0", self.learning_rate)
        expect(problems, math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
               "a finite number >= 0", self.weight_decay)
        expect(problems, all(0.0 <= b < 1.0 for b in self.betas), "betas", "two numbers in [0, 1)",
               list(self.betas))
        expect(problems, self.max_grad_norm is None or (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0),
               "max_grad_norm", "None or a finite number > 0", self.max_grad_norm)
        expect(problems, all(0 <= s <= self.steps for s in self.snapshot_steps), "snapshot_steps",
               f"steps in [0, steps={self.steps}]", list(self.snapshot_steps))
        for name in ("speedup_generate", "speedup_train"):
            value = getattr(self, name)
            expect(problems, math.isfinite(value) and value >= 1.0, name, "a finite number >= 1", value)
        return problems

    @property
    def learner_threads(self) -> int:
        """Torch threads of the learner process: what the rollout workers leave of num_threads."""
        return self.num_threads - self.rollout_workers * self.rollout_threads

    def snapshots(self) -> tuple[int, ...]:
        """The snapshot steps, sorted, with the last step."""
        return tuple(sorted(set(self.snapshot_steps) | {self.steps}))


def builtin_config(name: str) -> Path:
    """Path of a built-in rl YAML (``rl_default``, ``rl_quick``)."""
    return builtin_yaml(CONFIG_DIR, name, "rl")
