"""`pangu-core sft`: train the tiny Pangu model from scratch on the generated tasks, then evaluate it.

The run: generate train and test problems, write the teacher's answers (slow or fast, the mode
given by the tag on each prompt), build the character tokenizer, train with :mod:`.sft`, save the
checkpoint to ``OUT/checkpoint`` and write ``OUT/eval.json`` and ``OUT/eval.png``. Settings come from
``configs/sft_default.yaml`` (or ``sft_quick.yaml`` with ``--quick``, or ``--config FILE``).

A ``curriculum`` splits the run into stages, each with its share of the steps and of the problems
and its own level weights (for instance the easy levels first and the hard ones later); the trainer
switches data at each stage's last step and keeps its optimizer and schedule.

With ``num_processes`` > 1 the run trains data-parallel in that many local processes (gloo,
``num_threads`` torch threads each); rank 0 evaluates and writes the report.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pangu_core.config import FromMapping

CONFIG_DIR = Path(__file__).parent / "configs"


def _trainer_default():
    from pangu_core.distill.sft import SFTConfig

    return SFTConfig()


def _eval_default():
    from pangu_core.evaluation import EvalConfig

    return EvalConfig()


def _weights_problem(name: str, weights: tuple, levels: tuple) -> str | None:
    """Why ``weights`` is not one number >= 0 per level with a positive sum (None when it is)."""
    if (len(weights) != len(levels)
            or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights)
            or not sum(weights) > 0):
        return f"{name}: expected one number >= 0 per level (not all 0), got {weights!r} for levels {levels!r}"
    return None


@dataclass(frozen=True)
class CurriculumStage(FromMapping):
    """One stage of a run's curriculum: its share of the steps and problems, and its level weights."""

    share: float
    level_weights: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_weights", tuple(self.level_weights))
        if isinstance(self.share, bool) or not isinstance(self.share, (int, float)) or not 0.0 < self.share <= 1.0:
            raise ValueError(f"share: expected a number in (0, 1], got {self.share!r}")


@dataclass(frozen=True)
class SFTRunConfig(FromMapping):
    """One `pangu-core sft` run: data, model, optimisation (``trainer``) and evaluation (``eval``)."""

    model_size: str = "nano"
    train_problems: int = 20000
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    level_weights: tuple[float, ...] = ()
    curriculum: tuple[CurriculumStage, ...] = ()
    fast_fraction: float | tuple[float, ...] = 0.4
    test_per_level: int = 100
    test_share: float = 0.2
    data_seed: int = 0
    num_threads: int = 2
    num_processes: int = 1
    trainer: Any = field(default_factory=_trainer_default)
    eval: Any = field(default_factory=_eval_default)

    def __post_init__(self) -> None:
        from pangu_core.distill.sft import SFTConfig
        from pangu_core.evaluation import EvalConfig
        from pangu_core.tasks.math_tasks import LEVELS
        from pangu_core.tasks.model import SIZES

        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "level_weights", tuple(self.level_weights))
        if isinstance(self.fast_fraction, list):
            object.__setattr__(self, "fast_fraction", tuple(self.fast_fraction))
        problems = []
        for name, cls in (("trainer", SFTConfig), ("eval", EvalConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    object.__setattr__(self, name, cls.from_dict(value))
                except (ValueError, TypeError) as error:
                    problems.append(f"{name}: {error}")
            elif not isinstance(value, cls):
                problems.append(f"{name}: expected a mapping or {cls.__name__}, got {type(value).__name__}")
        if self.model_size not in SIZES:
            problems.append(f"model_size: unknown {self.model_size!r}; known: {', '.join(SIZES)}")
        for name, low in (("train_problems", 1), ("test_per_level", 1), ("data_seed", 0), ("num_threads", 1),
                          ("num_processes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name}: expected an int >= {low}, got {value!r}")
        if not self.levels or any(level not in LEVELS for level in self.levels):
            problems.append(f"levels: expected a non-empty list of values in {LEVELS}, got {self.levels!r}")
        if self.level_weights:
            problems.append(_weights_problem("level_weights", self.level_weights, self.levels))
        problems.extend(self._curriculum_problems())
        fractions = self.fast_fraction if isinstance(self.fast_fraction, tuple) else (self.fast_fraction,)
        if (isinstance(self.fast_fraction, tuple) and len(fractions) != len(self.levels)
                or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0
                       for f in fractions)):
            problems.append(f"fast_fraction: expected a number in [0, 1] or one per level, got "
                            f"{self.fast_fraction!r} for levels {self.levels!r}")
        if not isinstance(self.test_share, (int, float)) or not 0.0 < self.test_share < 1.0:
            problems.append(f"test_share: expected a number in (0, 1), got {self.test_share!r}")
        problems = [p for p in problems if p]
        if not problems and self.curriculum:
            try:
                stage_plan(self)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("invalid SFTRunConfig: " + "; ".join(problems))

    def _curriculum_problems(self) -> list[str | None]:
        """Converts ``curriculum`` mappings to stages; returns what is wrong with them."""
        if not self.curriculum:
            return []
        if self.level_weights:
            return ["curriculum: give level_weights or curriculum, not both"]
        stages, problems = [], []
        for i, stage in enumerate(self.curriculum):
            try:
                stage = CurriculumStage.from_dict(stage) if not isinstance(stage, CurriculumStage) else stage
            except (ValueError, TypeError) as error:
                problems.append(f"curriculum[{i}]: {error}")
                continue
            problems.append(_weights_problem(f"curriculum[{i}].level_weights", stage.level_weights, self.levels))
            stages.append(stage)
        object.__setattr__(self, "curriculum", tuple(stages))
        if len(stages) == len(self.curriculum) and abs(sum(s.share for s in stages) - 1.0) > 1e-6:
            problems.append(f"curriculum: expected the shares to add up to 1, got {sum(s.share for s in stages)!r}")
        return problems


def load_run_config(path: str | Path) -> SFTRunConfig:
    """Reads a YAML run config (see configs/sft_default.yaml for every field)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {str(path)!r}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config: expected a mapping at the top of {str(path)!r}, got {type(data).__name__}")
    return SFTRunConfig.from_dict(data)


def _split(total: int, weights: tuple[float, ...]) -> list[int]:
    """``total`` split in proportion to ``weights``; the rounding remainder goes to the heaviest parts."""
    counts = [int(total * w / sum(weights)) for w in weights]
    heaviest = sorted(range(len(weights)), key=lambda i: -weights[i])
    for i in range(total - sum(counts)):
        counts[heaviest[i % len(heaviest)]] += 1
    return counts


def fast_fractions(config: SFTRunConfig) -> dict[int, float]:
    """The share of fast answers per level (``fast_fraction`` is one number for all or one per level)."""
    if isinstance(config.fast_fraction, tuple):
        return dict(zip(config.levels, config.fast_fraction))
    return {level: config.fast_fraction for level in config.levels}


def level_counts(config: SFTRunConfig, weights: tuple[float, ...] | None = None,
                 problems: int | None = None) -> dict[int, int]:
    """Training problems per level: ``problems`` (default ``train_problems``) split by ``weights``
    (default ``level_weights``; evenly without them)."""
    weights = weights or config.level_weights or (1.0,) * len(config.levels)
    total = config.train_problems if problems is None else problems
    return dict(zip(config.levels, _split(total, weights)))


def stage_plan(config: SFTRunConfig) -> list[tuple[int, dict[int, int]]]:
    """(last step, problems per level) of each curriculum stage; one stage without a curriculum."""
    if not config.curriculum:
        return [(config.trainer.max_steps, level_counts(config))]
    shares = tuple(stage.share for stage in config.curriculum)
    ends, done = [], 0.0
    for share in shares:
        done += share
        ends.append(round(done * config.trainer.max_steps))
    ends[-1] = config.trainer.max_steps
    if any(b <= a for a, b in zip([0, *ends], ends)):
        raise ValueError(f"curriculum: a stage gets no steps with max_steps={config.trainer.max_steps} "
                         f"(stage ends {ends})")
    return [(end, level_counts(config, stage.level_weights, problems))
            for end, stage, problems in zip(ends, config.curriculum, _split(config.train_problems, shares))]


def build_training_stages(config: SFTRunConfig) -> list[tuple[int, list[tuple[str, str, str]]]]:
    """(last step, pairs) per curriculum stage; a pair is (prompt, mode, teacher response).

    Each level's problems are generated once for the whole run and dealt out to the stages in
    order, so no problem repeats across stages more than the generator repeats it. The mode of each
    problem is drawn in that order too.
    """
    from pangu_core.tasks.math_tasks import generate_math_tasks
    from pangu_core.tasks.teacher import teacher_response

    plan = stage_plan(config)
    # Each level's generator is seeded on its own, so a per-level call gives the same problems as a
    # balanced call would; the trainer shuffles within a stage, so the order there does not matter.
    pools = {level: iter(generate_math_tasks(sum(counts[level] for _, counts in plan), [level], "train",
                                             config.data_seed, config.test_share))
             for level in config.levels}
    rng = random.Random(f"pangu-modes:{config.data_seed}")
    fast = fast_fractions(config)
    stages = []
    for end, counts in plan:
        pairs = []
        for level, count in counts.items():
            for task in (next(pools[level]) for _ in range(count)):
                mode = "fast" if rng.random() < fast[level] else "slow"
                pairs.append((task.prompt, mode, teacher_response(task, mode)))
        stages.append((end, pairs))
    return stages


def run_sft(config: SFTRunConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """The whole run; returns the evaluation result (also written to ``out``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.num_processes == 1:
        return _run_rank(config, out, progress)
    import resource
    import tempfile

    import torch.multiprocessing as mp

    start, cpu_start = time.perf_counter(), time.process_time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="pangu-sft-") as scratch:
        mp.spawn(_rank_main, args=(config, str(out), progress, str(Path(scratch) / "store")),
                 nprocs=config.num_processes, join=True)
    result = json.loads((out / "eval.json").read_text())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ranks_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # The whole run as the parent saw it: every rank's CPU time, and the wall time including start-up.
    result["timings"]["total_s"] = time.perf_counter() - start
    result["timings"]["cpu_s"] = time.process_time() - cpu_start + ranks_cpu
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _rank_main(rank: int, config: SFTRunConfig, out: str, progress: bool, store: str) -> None:
    """One data-parallel rank (started by :func:`run_sft`)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(store, config.num_processes), rank=rank,
                            world_size=config.num_processes)
    try:
        _run_rank(config, Path(out), progress and rank == 0)
    finally:
        dist.destroy_process_group()


def _run_rank(config: SFTRunConfig, out: Path, progress: bool) -> dict[str, Any] | None:
    """Data, training and (on rank 0) evaluation; every rank builds the same data from the seeds."""
    import torch

    from pangu_core.distill.sft import SFTTrainer, Stage, encode_pairs
    from pangu_core.evaluation import evaluate_model, write_report
    from pangu_core.tasks.math_tasks import generate_math_tasks
    from pangu_core.tasks.model import count_parameters, tiny_pangu
    from pangu_core.tasks.tokenizer import build_tokenizer

    torch.set_num_threads(config.num_threads)
    timings: dict[str, float] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    stages = build_training_stages(config)
    test = generate_math_tasks(config.test_per_level * len(config.levels), config.levels, "test",
                               config.data_seed, config.test_share)
    tokenizer = build_tokenizer(p for _, pairs in stages for pair in pairs for p in (pair[0], pair[2]))
    examples = [Stage(end, encode_pairs(tokenizer, pairs, config.trainer.max_length)) for end, pairs in stages]
    timings["data_s"] = time.perf_counter() - start

    model = tiny_pangu(config.model_size, tokenizer, seed=config.trainer.seed,
                       max_position_embeddings=config.trainer.max_length)
    trainer = SFTTrainer(model, tokenizer, examples, config.trainer)
    log = trainer.train(progress=progress)
    timings["train_s"] = log.seconds
    trainer.save_checkpoint(out / "checkpoint")
    if trainer.rank != 0:
        return None

    started = time.perf_counter()
    result = evaluate_model(model, tokenizer, test, config.eval, progress=progress)
    timings["eval_s"] = time.perf_counter() - started
    timings["total_s"] = time.perf_counter() - start
    # CPU seconds of this process: on a shared machine, cpu_s / num_threads estimates the wall time
    # the run would take with its cores to itself.
    timings["cpu_s"] = time.process_time() - cpu_start
    window = max(1, len(log.losses) // 10)
    result["train"] = {
        "parameters": count_parameters(model),
        "examples": sum(len(stage.examples) for stage in examples),
        "steps": len(log.losses),
        "processes": trainer.world_size,
        "tokens": log.tokens,
        "tokens_per_s": log.tokens / max(log.seconds, 1e-9),
        "loss_first": sum(log.losses[:window]) / window,
        "loss_last": sum(log.losses[-window:]) / window,
    }
    result["timings"] = timings
    result["config"] = json.loads(json.dumps(asdict(config)))
    write_report(result, out)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core sft`."""
    parser.add_argument("--config", type=Path, help="YAML run config (default: the built-in sft_default.yaml)")
    parser.add_argument("--quick", action="store_true", help="use the built-in sft_quick.yaml (about a minute)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (checkpoint, eval.json, eval.png)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """`pangu-core sft`: prints the evaluation summary as JSON."""
    if args.config is not None and args.quick:
        raise SystemExit("pangu-core sft: give --config or --quick, not both")
    path = args.config or CONFIG_DIR / ("sft_quick.yaml" if args.quick else "sft_default.yaml")
    config = load_run_config(path)
    result = run_sft(config, args.out, progress=not args.no_progress)
    summary = {k: result[k] for k in ("accuracy", "tokens", "train", "timings")}
    print(json.dumps(summary, indent=2))
    return 0
