"""Typed, frozen, picklable configs for MARS; each validates itself and reports every problem at once.

``RewardConfig.from_yaml(path)`` loads the whole tree; unknown keys are errors (a typo must not
silently fall back to a default). See ``rewards.yaml`` beside this module for the documented twin.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config with one or more invalid fields; the message lists all of them."""


def _check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def _positive(problems: list[str], obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(problems, isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
               f"{type(obj).__name__}.{name}: expected a positive number, got {value!r}")


def _fraction(problems: list[str], obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(problems, isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
               f"{type(obj).__name__}.{name}: expected a number in [0, 1], got {value!r}")


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid reward config:\n  " + "\n  ".join(problems))


def _build(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """Instantiates dataclass ``cls`` from a mapping, recursing into nested dataclass fields."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        elif isinstance(value, dict) and name == "weights":
            kwargs[name] = tuple(value.items())
        else:
            kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed program run (all tests of one program)."""

    # Per-test wall clock; the whole run gets tests * test_seconds + startup_seconds.
    test_seconds: float = 2.0
    startup_seconds: float = 3.0
    cpu_seconds: int = 2
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    # Processes (pids cgroup when available; RLIMIT_NPROC, which is per user, otherwise).
    processes: int = 32
    open_files: int = 64
    output_bytes: int = 1 << 16
    isolate_network: bool = True
    # Let programs import installed packages (numpy, ...): the interpreter then processes
    # site-packages at start, which costs tens of milliseconds per run.
    python_site: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "test_seconds", "startup_seconds")
        for name in ("cpu_seconds", "memory_bytes", "file_bytes", "processes", "open_files", "output_bytes"):
            value = getattr(self, name)
            _check(problems, isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"SandboxLimits.{name}: expected a positive int, got {value!r}")
        _check(problems, isinstance(self.memory_bytes, int) and self.memory_bytes >= 64 << 20,
               f"SandboxLimits.memory_bytes: expected >= 64 MiB (a Python interpreter needs it), got {self.memory_bytes!r}")
        _raise(problems)


@dataclass(frozen=True)
class MathConfig:
    """The math verifier: worker processes running math-verify under our own time limit."""

    workers: int = 2
    timeout_seconds: float = 3.0
    cache_size: int = 65536
    float_rounding: int = 6
    # Address-space limit of each worker, so a runaway expression (10^{10^{10}}) fails with
    # MemoryError instead of eating the machine's memory before its timeout.
    memory_bytes: int = 4 << 30
    # Reward for a response that has no final answer at all.
    no_answer_reward: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "workers", "timeout_seconds", "float_rounding")
        _check(problems, isinstance(self.cache_size, int) and self.cache_size >= 0,
               f"MathConfig.cache_size: expected an int >= 0, got {self.cache_size!r}")
        _fraction(problems, self, "no_answer_reward")
        _check(problems, isinstance(self.memory_bytes, int) and self.memory_bytes >= 512 << 20,
               f"MathConfig.memory_bytes: expected an int >= 512 MiB (sympy needs it), got {self.memory_bytes!r}")
        _raise(problems)


@dataclass(frozen=True)
class CodeConfig:
    """Code execution: the sandbox limits and the pool that bounds concurrent runs."""

    workers: int = 2
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "workers")
        _check(problems, isinstance(self.limits, SandboxLimits),
               f"CodeConfig.limits: expected SandboxLimits, got {type(self.limits).__name__}")
        _raise(problems)


@dataclass(frozen=True)
class JudgeConfig:
    """The lightweight LLM evaluator and its fusion with deterministic metrics."""

    # Local path of a transformers causal LM; empty = rules and metrics only.
    model_path: str = ""
    device: str = "cpu"
    batch_size: int = 8
    max_new_tokens: int = 16
    max_prompt_tokens: int = 1024
    # Score the evaluator gives when its output cannot be parsed (in [0, 1]).
    neutral_score: float = 0.5
    # Fusion weights: exact match, token F1, evaluator (normalised to sum 1 over what is present).
    exact_weight: float = 0.3
    f1_weight: float = 0.2
    judge_weight: float = 0.5

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "batch_size", "max_new_tokens", "max_prompt_tokens")
        _fraction(problems, self, "neutral_score")
        for name in ("exact_weight", "f1_weight", "judge_weight"):
            value = getattr(self, name)
            _check(problems, isinstance(value, (int, float)) and value >= 0,
                   f"JudgeConfig.{name}: expected a number >= 0, got {value!r}")
        _check(problems, self.exact_weight + self.f1_weight + self.judge_weight > 0,
               "JudgeConfig: at least one of exact_weight, f1_weight, judge_weight must be > 0")
        _raise(problems)


@dataclass(frozen=True)
class ShapingConfig:
    """Penalties on form: format per mode, repeated n-grams, length against a per-mode budget."""

    ngram: int = 4
    # Token budgets (whitespace tokens) per mode; beyond the budget the length score falls linearly
    # to 0 at ``length_hard_factor`` times the budget.
    slow_budget: int = 4096
    fast_budget: int = 512
    length_hard_factor: float = 2.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "ngram", "slow_budget", "fast_budget")
        _check(problems, isinstance(self.length_hard_factor, (int, float)) and self.length_hard_factor > 1.0,
               f"ShapingConfig.length_hard_factor: expected a number > 1, got {self.length_hard_factor!r}")
        _raise(problems)


WEIGHTING_RULES = ("fixed", "inverse_variance", "reliability")


@dataclass(frozen=True)
class RouterConfig:
    """Which sources score which task type, and how their scores are combined.

    ``weighting``: "fixed" uses ``weights`` as given; "inverse_variance" scales each source's base
    weight by 1 / (running variance + ``variance_floor``); "reliability" scales it by the running
    share of the source's results that were decided (no timeout, no unparsable output).
    ``normalise``: z-score each source by its running mean and standard deviation (after
    ``warmup`` observations) before combining, so sources on different scales are comparable.
    """

    routes: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("math", ("math", "format", "repetition", "length")),
        ("code", ("code", "format", "repetition", "length")),
        ("general", ("judge", "format", "repetition", "length")),
    )
    weights: tuple[tuple[str, float], ...] = (
        ("math", 1.0), ("code", 1.0), ("judge", 1.0), ("format", 0.1), ("repetition", 0.1), ("length", 0.05),
    )
    weighting: str = "fixed"
    normalise: bool = False
    momentum: float = 0.99
    warmup: int = 32
    variance_floor: float = 1e-2

    def __post_init__(self) -> None:
        problems: list[str] = []
        _check(problems, self.weighting in WEIGHTING_RULES,
               f"RouterConfig.weighting: expected one of {list(WEIGHTING_RULES)}, got {self.weighting!r}")
        _check(problems, isinstance(self.momentum, float) and 0.0 < self.momentum < 1.0,
               f"RouterConfig.momentum: expected a float in (0, 1), got {self.momentum!r}")
        _check(problems, isinstance(self.warmup, int) and self.warmup >= 0,
               f"RouterConfig.warmup: expected an int >= 0, got {self.warmup!r}")
        _positive(problems, self, "variance_floor")
        for name, weight in self.weights:
            _check(problems, isinstance(weight, (int, float)) and weight >= 0,
                   f"RouterConfig.weights[{name!r}]: expected a number >= 0, got {weight!r}")
        for task, sources in self.routes:
            _check(problems, isinstance(task, str) and len(sources) > 0,
                   f"RouterConfig.routes[{task!r}]: expected a non-empty list of source names")
        _raise(problems)

    def weight_of(self, source: str) -> float:
        return dict(self.weights).get(source, 1.0)

    def sources_for(self, task_type: str) -> tuple[str, ...]:
        table = dict(self.routes)
        if task_type not in table:
            raise KeyError(f"task_type: no route for {task_type!r}; known: {sorted(table)}")
        return table[task_type]


@dataclass(frozen=True)
class RewardConfig:
    """The whole reward system."""

    math: MathConfig = field(default_factory=MathConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    # Samples scored concurrently by ``RewardScorer.score``.
    workers: int = 4
    batch_size: int = 64
    show_progress: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(problems, self, "workers", "batch_size")
        _raise(problems)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "RewardConfig":
        if data is not None and isinstance(data, Mapping) and "router" in data and isinstance(data["router"], Mapping):
            router = dict(data["router"])
            if isinstance(router.get("routes"), Mapping):
                router["routes"] = tuple((k, tuple(v)) for k, v in router["routes"].items())
            data = {**data, "router": router}
        return _build(cls, data, "RewardConfig")

    @classmethod
    def from_yaml(cls, path: str) -> "RewardConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f) or {})
