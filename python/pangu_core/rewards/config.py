"""Typed, frozen, picklable configs for MARS, on the shared :class:`~pangu_core.config.Config` mixin.

``RewardConfig.from_yaml(path)`` loads the whole tree; unknown keys at any depth, duplicate keys and
wrongly typed values are errors, all reported at once (a typo must not silently fall back to a
default). Router weights and routes may only name registered reward sources. ``rewards.yaml``
beside this module is the documented twin of the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from pangu_core.config import Config, ConfigError, expect, expect_name

__all__ = ["CodeConfig", "ConfigError", "JudgeConfig", "MathConfig", "RewardConfig", "RouterConfig",
           "SandboxLimits", "ShapingConfig", "WEIGHTING_RULES"]


# Upper bounds of limits that end up in the OS (select/poll timeouts, setrlimit, pids.max): beyond
# them a value is a typo or inf, which would overflow there or at the first comparison.
MAX_SECONDS = 86400.0                 # one day, for every wall-clock and CPU limit
MAX_BYTES = 1 << 48                   # 256 TiB, for address-space and file-size limits
MAX_OPEN_FILES = 1 << 20              # the kernel's default fs.nr_open
MAX_PROCESSES = 1 << 22               # the kernel's PID_MAX_LIMIT


def _positive(problems: list[str], config: Config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        expect(problems, value > 0, name, "a number > 0", value)


def _seconds(problems: list[str], config: Config, *names: str) -> None:
    """Each named field is a finite number of seconds in (0, MAX_SECONDS]."""
    for name in names:
        value = getattr(config, name)
        expect(problems, 0 < value <= MAX_SECONDS, name,  # False for inf and nan
               f"a finite number of seconds in (0, {MAX_SECONDS:g}]", value)


def _at_most(problems: list[str], config: Config, bound: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        expect(problems, value <= bound, name, f"an int <= {bound}", value)


@dataclass(frozen=True)
class SandboxLimits(Config):
    """Resource limits of one sandboxed program run (all tests of one program)."""

    # Wall clock per test, in seconds (finite, <= MAX_SECONDS); the whole run gets
    # tests * test_seconds + startup_seconds.
    test_seconds: float = 2.0
    # Wall clock for starting the sandbox and the interpreter, in seconds (<= MAX_SECONDS).
    startup_seconds: float = 3.0
    # CPU seconds per process (RLIMIT_CPU; <= MAX_SECONDS).
    cpu_seconds: int = 2
    # Address space per process, in bytes (RLIMIT_AS); a Python interpreter needs at least 64 MiB.
    memory_bytes: int = 1 << 30
    # Largest file a process may write, in bytes (RLIMIT_FSIZE).
    file_bytes: int = 1 << 20
    # Processes of one run (pids cgroup when available; RLIMIT_NPROC, which is per user, otherwise).
    processes: int = 32
    # Open file descriptors per process (RLIMIT_NOFILE).
    open_files: int = 64
    # Bytes of stdout/stderr kept per test; more ends the test with "output limit exceeded".
    output_bytes: int = 1 << 16
    # A new network namespace (no network) where the kernel permits it.
    isolate_network: bool = True
    # Let programs import installed packages (numpy, ...): the interpreter then processes
    # site-packages at start, which costs tens of milliseconds per run.
    python_site: bool = False

    def validate(self) -> list[str]:
        problems: list[str] = []
        _seconds(problems, self, "test_seconds", "startup_seconds", "cpu_seconds")
        _positive(problems, self, "file_bytes", "processes", "open_files", "output_bytes")
        expect(problems, self.memory_bytes >= 64 << 20, "memory_bytes",
               "an int >= 64 MiB (a Python interpreter needs it)", self.memory_bytes)
        _at_most(problems, self, MAX_BYTES, "memory_bytes", "file_bytes")
        _at_most(problems, self, MAX_PROCESSES, "processes")
        _at_most(problems, self, MAX_OPEN_FILES, "open_files")
        _at_most(problems, self, 1 << 30, "output_bytes")  # kept in memory, per test
        return problems


@dataclass(frozen=True)
class MathConfig(Config):
    """The math verifier: worker processes running math-verify under our own time limit."""

    # math-verify worker processes (started on first use, not charged to any comparison).
    workers: int = 2
    # Seconds one comparison may take (finite, <= MAX_SECONDS); an overrun kills its worker and scores
    # 0 with reason "timeout".
    timeout_seconds: float = 3.0
    # Cached (reference, answer) verdicts (LRU); 0 disables the cache.
    cache_size: int = 65536
    # Decide identical text and two plain integers without math-verify (where its verdict is certain);
    # false sends every pair to math-verify (benchmarks use that for a like-for-like comparison),
    # except hedged and overlong answers, which are refused before any parsing either way.
    fast_verdicts: bool = True
    # Decimal places math-verify rounds floats to before comparing.
    float_rounding: int = 6
    # Address-space limit of each worker, in bytes, so a runaway expression (10^{10^{10}}) fails with
    # MemoryError instead of eating the machine's memory before its timeout.
    memory_bytes: int = 4 << 30
    # Reward for a response that has no final answer at all, in [0, 1].
    no_answer_reward: float = 0.0
    # Longest final answer sent to math-verify, in characters; a longer one scores 0 ("answer too
    # long") without being parsed.
    max_answer_chars: int = 1000

    def validate(self) -> list[str]:
        problems: list[str] = []
        _positive(problems, self, "workers", "float_rounding", "max_answer_chars")
        _seconds(problems, self, "timeout_seconds")
        expect(problems, self.cache_size >= 0, "cache_size", "an int >= 0", self.cache_size)
        expect(problems, self.memory_bytes >= 512 << 20, "memory_bytes", "an int >= 512 MiB (sympy needs it)",
               self.memory_bytes)
        _at_most(problems, self, MAX_BYTES, "memory_bytes")
        expect(problems, 0.0 <= self.no_answer_reward <= 1.0, "no_answer_reward", "a number in [0, 1]",
               self.no_answer_reward)
        return problems


@dataclass(frozen=True)
class CodeConfig(Config):
    """Code execution: the sandbox limits and the pool that bounds concurrent runs."""

    # Programs run concurrently in the sandbox.
    workers: int = 2
    # Limits of each sandboxed run.
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def validate(self) -> list[str]:
        problems: list[str] = []
        _positive(problems, self, "workers")
        return problems


@dataclass(frozen=True)
class JudgeConfig(Config):
    """The lightweight LLM evaluator and its fusion with deterministic metrics."""

    # Local folder of a transformers causal LM (checked at config time: a folder with config.json);
    # empty = rules and metrics only, which needs exact_weight or f1_weight > 0.
    model_path: str = ""
    # torch device of the evaluator model ("cpu", "cuda", "npu:0", ...).
    device: str = "cpu"
    # Prompts per evaluator generation batch.
    batch_size: int = 8
    # Tokens the evaluator may write after "Score:".
    max_new_tokens: int = 16
    # Evaluator prompts are cut to this many tokens.
    max_prompt_tokens: int = 1024
    # Score the evaluator gives when its output cannot be parsed (in [0, 1]).
    neutral_score: float = 0.5
    # Fusion weight of exact match (the weights are normalised to sum 1 over what is present).
    exact_weight: float = 0.3
    # Fusion weight of token F1.
    f1_weight: float = 0.2
    # Fusion weight of the evaluator's score.
    judge_weight: float = 0.5

    def validate(self) -> list[str]:
        problems: list[str] = []
        _positive(problems, self, "batch_size", "max_new_tokens", "max_prompt_tokens")
        expect(problems, 0.0 <= self.neutral_score <= 1.0, "neutral_score", "a number in [0, 1]", self.neutral_score)
        for name in ("exact_weight", "f1_weight", "judge_weight"):
            expect(problems, getattr(self, name) >= 0, name, "a number >= 0", getattr(self, name))
        if all(getattr(self, n) >= 0 for n in ("exact_weight", "f1_weight", "judge_weight")):
            expect(problems, self.exact_weight + self.f1_weight + self.judge_weight > 0, "judge_weight",
                   "exact_weight, f1_weight or judge_weight > 0", self.judge_weight)
            # Weighted on the evaluator alone, the judge source needs a model; without one every
            # undecided answer would score neutral_score.
            if self.exact_weight == 0 and self.f1_weight == 0:
                expect(problems, bool(self.model_path), "model_path",
                       "a local model folder (judge_weight is the only weight > 0)", self.model_path)
        if self.model_path:
            expect(problems, os.path.isfile(os.path.join(self.model_path, "config.json")), "model_path",
                   "a local folder with a transformers model (config.json)", self.model_path)
        return problems


@dataclass(frozen=True)
class ShapingConfig(Config):
    """Penalties on form: format per mode, repeated n-grams, length against a per-mode budget."""

    # n of the repeated word n-gram share.
    ngram: int = 4
    # Whitespace-token budget of a slow answer; beyond it the length score falls linearly to 0 at
    # length_hard_factor times the budget.
    slow_budget: int = 4096
    # Whitespace-token budget of a fast answer.
    fast_budget: int = 512
    # Where the length score reaches 0, as a multiple of the budget (> 1).
    length_hard_factor: float = 2.0

    def validate(self) -> list[str]:
        problems: list[str] = []
        _positive(problems, self, "ngram", "slow_budget", "fast_budget")
        expect(problems, self.length_hard_factor > 1.0, "length_hard_factor", "a number > 1", self.length_hard_factor)
        return problems


WEIGHTING_RULES = ("fixed", "inverse_variance", "reliability")


@dataclass(frozen=True)
class RouterConfig(Config):
    """Which sources score which task type, and how their scores are combined.

    ``weighting``: "fixed" uses ``weights`` as given; "inverse_variance" scales each source's base
    weight by 1 / (running variance + ``variance_floor``); "reliability" scales it by the running
    share of the source's results that were decided (no timeout, no unparsable output).
    ``normalise``: z-score each source by its running mean and standard deviation (after
    ``warmup`` observations) before combining, so sources on different scales are comparable.
    """

    # Sources per task type, in order (names from the source registry, see known_sources()).
    routes: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("math", ("math", "format", "repetition", "length")),
        ("code", ("code", "format", "repetition", "length")),
        ("general", ("judge", "format", "repetition", "length")),
    )
    # Base weight per source (1.0 for a source not listed).
    weights: tuple[tuple[str, float], ...] = (
        ("math", 1.0), ("code", 1.0), ("judge", 1.0), ("format", 0.1), ("repetition", 0.1), ("length", 0.05),
    )
    # How base weights adapt: fixed, inverse_variance or reliability (see pangu_core.rewards.router).
    weighting: Literal["fixed", "inverse_variance", "reliability"] = "fixed"
    # z-score each source by its running mean and variance after `warmup` observations.
    normalise: bool = False
    # Momentum of the running statistics (exponential moving averages), in (0, 1).
    momentum: float = 0.99
    # Observations of a source before normalise applies to it.
    warmup: int = 32
    # Added to running variances before dividing by them.
    variance_floor: float = 1e-2

    def validate(self) -> list[str]:
        # The registry lives in router.py, which imports this module; it is complete once the package is.
        from pangu_core.rewards.router import known_sources

        known = known_sources()
        problems: list[str] = []
        for name, weight in self.weights:
            expect_name(problems, f"weights[{name!r}]", name, known, "reward source")
            expect(problems, weight >= 0, f"weights[{name!r}]", "a number >= 0", weight)
        seen: set[str] = set()
        for task, sources in self.routes:
            expect(problems, bool(task), "routes", "non-empty task type names", task)
            if task in seen:
                problems.append(f"routes[{task!r}]: expected one route per task type, got another")
            seen.add(task)
            expect(problems, len(sources) > 0, f"routes[{task!r}]", "a non-empty list of source names", sources)
            for i, source in enumerate(sources):
                expect_name(problems, f"routes[{task!r}][{i}]", source, known, "reward source")
        expect(problems, 0.0 < self.momentum < 1.0, "momentum", "a number in (0, 1)", self.momentum)
        expect(problems, self.warmup >= 0, "warmup", "an int >= 0", self.warmup)
        _positive(problems, self, "variance_floor")
        return problems

    def weight_of(self, source: str) -> float:
        """The base weight of ``source`` (1.0 when ``weights`` does not list it)."""
        return dict(self.weights).get(source, 1.0)

    def sources_for(self, task_type: str) -> tuple[str, ...]:
        """The sources routed to ``task_type``; KeyError listing the routed types for an unknown one."""
        table = dict(self.routes)
        if task_type not in table:
            raise KeyError(f"task_type: no route for {task_type!r}; known: {', '.join(sorted(table))}")
        return table[task_type]


@dataclass(frozen=True)
class RewardConfig(Config):
    """The whole reward system: each source's settings, the router, and how samples are batched."""

    # The math verifier.
    math: MathConfig = field(default_factory=MathConfig)
    # Code execution in the sandbox.
    code: CodeConfig = field(default_factory=CodeConfig)
    # The LLM evaluator for general tasks.
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # Format, repetition and length terms.
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    # Routes, weights and adaptive weighting.
    router: RouterConfig = field(default_factory=RouterConfig)
    # Threads on which sources score a batch concurrently (RewardScorer.score).
    workers: int = 4
    # Samples per batch.
    batch_size: int = 64
    # Show a progress bar over batches.
    show_progress: bool = False

    def validate(self) -> list[str]:
        problems: list[str] = []
        _positive(problems, self, "workers", "batch_size")
        return problems
