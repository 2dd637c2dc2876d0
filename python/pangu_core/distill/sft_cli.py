"""`pangu-core sft`: train the tiny Pangu model from scratch on the generated tasks, then evaluate it.

The run: generate train and test problems, write the teacher's answers (slow or fast, the mode
given by the tag on each prompt), build the character tokenizer, train with :mod:`.sft`, and write
``OUT/checkpoint/``, ``OUT/eval.json`` and ``OUT/eval.png``. Settings come from
``configs/sft_default.yaml`` (or ``sft_quick.yaml`` with ``--quick``, or ``--config FILE``).

``OUT`` must be new or empty, unless ``--overwrite`` (which replaces a previous run's files there and
leaves other files alone). The run writes ``OUT/run_config.yaml`` first and a checkpoint at every
tenth of its steps; a run that stopped before writing ``eval.json`` resumes from its last checkpoint
when started again with the same config and ``--out`` (bit for bit where the straight run would be).

A ``curriculum`` splits the run into stages, each with its share of the steps and of the problems
and its own level weights (for instance the easy levels first and the hard ones later); the trainer
switches data at each stage's last step and keeps its optimizer and schedule.

With ``num_processes`` > 1 the run trains data-parallel (DistributedDataParallel) in that many local
processes (gloo, ``num_threads`` torch threads each); rank 0 evaluates and writes the report.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pangu_core.config import Config, ConfigError, expect, expect_name
from pangu_core.distill.sft import STATE_FILE, SFTConfig
from pangu_core.evaluation import EvalConfig

CONFIG_DIR = Path(__file__).parent / "configs"
RUN_CONFIG_FILE = "run_config.yaml"
# What a run writes into OUT (the checkpoint's .partial / .old twins exist only while it is saved).
RUN_FILES = ("checkpoint", "checkpoint.partial", "checkpoint.old", "eval.json", "eval.png", RUN_CONFIG_FILE)


def _weights_problems(field_name: str, weights: tuple[float, ...]) -> list[str]:
    """Each weight >= 0 and a positive sum."""
    problems: list[str] = []
    for i, weight in enumerate(weights):
        expect(problems, weight >= 0, f"{field_name}[{i}]", "a number >= 0", weight)
    if not problems:
        expect(problems, sum(weights) > 0, field_name, "weights with a positive sum", list(weights))
    return problems


@dataclass(frozen=True)
class CurriculumStage(Config):
    """One stage of a run's curriculum: its share of the steps and problems, and its level weights."""

    # Fraction of the steps and of the training problems that this stage gets.
    share: float
    # Relative share of this stage's problems per level (one per level of the run).
    level_weights: tuple[float, ...]

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, 0.0 < self.share <= 1.0, "share", "a number in (0, 1]", self.share)
        return problems + _weights_problems("level_weights", self.level_weights)


@dataclass(frozen=True)
class SFTRunConfig(Config):
    """One `pangu-core sft` run: data, model, optimisation (``trainer``) and evaluation (``eval``)."""

    # Named size of the tiny model (nano, micro, mini, small).
    model_size: str = "nano"
    # Number of generated training problems.
    train_problems: int = 20000
    # Difficulty levels to train and test on (1 easiest .. 5 hardest).
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Relative share of training problems per level (one per level; empty = even).
    level_weights: tuple[float, ...] = ()
    # Stages worked in order instead of level_weights (empty: one stage).
    curriculum: tuple[CurriculumStage, ...] = ()
    # Share of training problems answered fast: one number for every level, or one per level.
    fast_fraction: float | tuple[float, ...] = 0.4
    # Test problems per level.
    test_per_level: int = 100
    # Share of the problem space (by prompt hash) in the test split.
    test_share: float = 0.2
    # Seed of the task generator and of the per-problem mode draw.
    data_seed: int = 0
    # CPU threads for torch in each process.
    num_threads: int = 2
    # Data-parallel training processes (gloo).
    num_processes: int = 1
    # Optimisation.
    trainer: SFTConfig = field(default_factory=SFTConfig)
    # Evaluation on the test split.
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> list[str]:
        from pangu_core.tasks.math_tasks import LEVELS
        from pangu_core.tasks.model import SIZES

        problems: list[str] = []
        expect_name(problems, "model_size", self.model_size, SIZES, "model size")
        for name, low in (("train_problems", 1), ("test_per_level", 1), ("data_seed", 0), ("num_threads", 1),
                          ("num_processes", 1)):
            expect(problems, getattr(self, name) >= low, name, f"an int >= {low}", getattr(self, name))
        expect(problems, len(self.levels) > 0, "levels", "at least one level", list(self.levels))
        for i, level in enumerate(self.levels):
            expect(problems, level in LEVELS and level not in self.levels[:i], f"levels[{i}]",
                   f"a level in {list(LEVELS)}, each once", level)
        per_level = f"one per level ({len(self.levels)} for levels {list(self.levels)})"
        if self.level_weights:
            if expect(problems, len(self.level_weights) == len(self.levels), "level_weights", per_level,
                      list(self.level_weights)):
                problems.extend(_weights_problems("level_weights", self.level_weights))
        if self.curriculum:
            expect(problems, not self.level_weights, "curriculum",
                   "no stages when level_weights is given (give one or the other)", len(self.curriculum))
            for i, stage in enumerate(self.curriculum):
                expect(problems, len(stage.level_weights) == len(self.levels), f"curriculum[{i}].level_weights",
                       per_level, list(stage.level_weights))
            total = sum(stage.share for stage in self.curriculum)
            expect(problems, abs(total - 1.0) <= 1e-6, "curriculum", "shares that add up to 1", total)
        if isinstance(self.fast_fraction, tuple):
            expect(problems, len(self.fast_fraction) == len(self.levels), "fast_fraction",
                   f"one number or {per_level}", list(self.fast_fraction))
            for i, fraction in enumerate(self.fast_fraction):
                expect(problems, 0.0 <= fraction <= 1.0, f"fast_fraction[{i}]", "a number in [0, 1]", fraction)
        else:
            expect(problems, 0.0 <= self.fast_fraction <= 1.0, "fast_fraction", "a number in [0, 1]",
                   self.fast_fraction)
        expect(problems, 0.0 < self.test_share < 1.0, "test_share", "a number in (0, 1)", self.test_share)
        if not problems and self.curriculum:
            ends = stage_ends(self)
            expect(problems, all(b > a for a, b in zip([0, *ends], ends)), "curriculum",
                   f"at least one step per stage of trainer.max_steps={self.trainer.max_steps} (stage ends)", ends)
        return problems


def load_run_config(path: str | Path) -> SFTRunConfig:
    """Reads a YAML run config (see configs/sft_default.yaml for every field); a ConfigError names file and line."""
    return SFTRunConfig.from_yaml(path)


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


def stage_ends(config: SFTRunConfig) -> list[int]:
    """The last step (exclusive) of each curriculum stage: shares of ``trainer.max_steps``, rounded."""
    ends, done = [], 0.0
    for stage in config.curriculum:
        done += stage.share
        ends.append(round(done * config.trainer.max_steps))
    if ends:
        ends[-1] = config.trainer.max_steps
    return ends


def stage_plan(config: SFTRunConfig) -> list[tuple[int, dict[int, int]]]:
    """(last step, problems per level) of each curriculum stage; one stage without a curriculum."""
    if not config.curriculum:
        return [(config.trainer.max_steps, level_counts(config))]
    shares = tuple(stage.share for stage in config.curriculum)
    return [(end, level_counts(config, stage.level_weights, problems))
            for end, stage, problems in zip(stage_ends(config), config.curriculum,
                                            _split(config.train_problems, shares))]


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


def prepare_out(out: str | Path, config: SFTRunConfig, overwrite: bool = False) -> bool:
    """Checks and readies the output folder; True when it holds an unfinished run of ``config`` to resume.

    A new or empty folder is used as it is. One with a finished run (``eval.json``), other files, or
    an unfinished run of another config is refused (FileExistsError) unless ``overwrite``, which
    removes a previous run's files (:data:`RUN_FILES`) and nothing else. ``config`` is written to
    ``OUT/run_config.yaml``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {str(out)!r} is a file, expected a directory (new or empty)")
    entries = sorted(entry.name for entry in out.iterdir()) if out.exists() else []
    resume = False
    if overwrite:
        for name in RUN_FILES:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            elif (out / name).exists():
                (out / name).unlink()
    elif entries:
        if "eval.json" in entries:
            raise FileExistsError(f"--out: {str(out)!r} holds a finished run (eval.json); give --overwrite to "
                                  "replace it, or another --out")
        others = [name for name in entries if name not in RUN_FILES]
        if others or RUN_CONFIG_FILE not in entries:
            shown = ", ".join(others[:3] or entries[:3]) + (", ..." if len(others or entries) > 3 else "")
            raise FileExistsError(f"--out: {str(out)!r} is not empty ({shown}); give --overwrite to write the "
                                  "run there anyway, or a new or empty --out")
        try:
            previous = SFTRunConfig.from_yaml(out / RUN_CONFIG_FILE)
        except ConfigError:
            previous = None
        if previous != config:
            raise FileExistsError(f"--out: {str(out)!r} holds an unfinished run of another config "
                                  f"({RUN_CONFIG_FILE}); give --overwrite to replace it, or another --out")
        resume = True
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        config.to_yaml(out / RUN_CONFIG_FILE)
    return resume


def _say(line: str) -> None:
    print(f"pangu-core sft: {line}", file=sys.stderr, flush=True)


def run_sft(config: SFTRunConfig, out: str | Path, progress: bool = True, overwrite: bool = False,
            source: str = "config") -> dict[str, Any]:
    """The whole run; returns the evaluation result (also written to ``out``).

    Prints a start line to stderr (``source`` names the config there) and, without ``progress``
    bars, a line per tenth of the steps. See :func:`prepare_out` for ``out`` and ``overwrite``.
    """
    out = Path(out)
    resume = prepare_out(out, config, overwrite)
    trainer = config.trainer
    _say(f"{source}: model {config.model_size}, {trainer.max_steps} steps of {trainer.batch_size}, levels "
         f"{', '.join(map(str, config.levels))}, {config.num_threads} thread(s) x {config.num_processes} "
         f"process(es), out {out}")
    if config.num_processes == 1:
        return _run_rank(config, out, progress, resume)
    import resource
    import tempfile

    import torch.multiprocessing as mp

    start, cpu_start = time.perf_counter(), time.process_time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="pangu-sft-") as scratch:
        mp.spawn(_rank_main, args=(config, str(out), progress, resume, str(Path(scratch) / "store")),
                 nprocs=config.num_processes, join=True)
    result = json.loads((out / "eval.json").read_text())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ranks_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # The whole run as the parent saw it: every rank's CPU time, and the wall time including start-up.
    result["timings"]["total_s"] = time.perf_counter() - start
    result["timings"]["cpu_s"] = time.process_time() - cpu_start + ranks_cpu
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _rank_main(rank: int, config: SFTRunConfig, out: str, progress: bool, resume: bool, store: str) -> None:
    """One data-parallel rank (started by :func:`run_sft`)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(store, config.num_processes), rank=rank,
                            world_size=config.num_processes)
    try:
        _run_rank(config, Path(out), progress, resume)
    finally:
        dist.destroy_process_group()


def _run_rank(config: SFTRunConfig, out: Path, progress: bool, resume: bool) -> dict[str, Any] | None:
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

    checkpoint = out / "checkpoint"
    if resume and (checkpoint / STATE_FILE).is_file():
        trainer = SFTTrainer.from_checkpoint(checkpoint, examples)
        if trainer.rank == 0:
            _say(f"resuming the unfinished run in {out} from its checkpoint at step {trainer.step}")
    else:
        model = tiny_pangu(config.model_size, tokenizer, seed=config.trainer.seed,
                           max_position_embeddings=config.trainer.max_length)
        trainer = SFTTrainer(model, tokenizer, examples, config.trainer)
    resumed_from = trainer.step

    def save_and_log(step: int, loss: float, elapsed: float) -> None:
        trainer.save_checkpoint(checkpoint)
        if not progress and trainer.rank == 0:
            _say(f"step {step}/{config.trainer.max_steps}  loss {loss:.4f}  {elapsed:.0f} s")

    log = trainer.train(progress=progress, every=max(1, config.trainer.max_steps // 10), on_every=save_and_log)
    timings["train_s"] = log.seconds
    if trainer.rank != 0:
        return None

    started = time.perf_counter()
    model = trainer.model
    result = evaluate_model(model, tokenizer, test, config.eval, progress=progress)
    timings["eval_s"] = time.perf_counter() - started
    timings["total_s"] = time.perf_counter() - start
    # CPU seconds of this process: on a shared machine, cpu_s / num_threads estimates the wall time
    # the run would take with its cores to itself.
    timings["cpu_s"] = time.process_time() - cpu_start
    losses = trainer.losses
    window = max(1, len(losses) // 10)
    result["train"] = {
        "parameters": count_parameters(model),
        "examples": sum(len(stage.examples) for stage in examples),
        "steps": trainer.step,
        "resumed_from_step": resumed_from,
        "processes": trainer.world_size,
        "tokens": trainer.tokens,
        "tokens_per_s": log.tokens / max(log.seconds, 1e-9),
        "loss_first": sum(losses[:window]) / window,
        "loss_last": sum(losses[-window:]) / window,
    }
    result["timings"] = timings
    result["config"] = config.to_dict()
    write_report(result, out)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pangu-core sft`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help="YAML run config (default: the built-in sft_default.yaml)")
    which.add_argument("--quick", action="store_true", help="use the built-in sft_quick.yaml (about a minute)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder, new or empty (checkpoint/, eval.json, eval.png, run_config.yaml); "
                             "an unfinished run of the same config there is resumed")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous run's files in --out (other files there are left alone)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars: a start line and a line per tenth of the steps instead")


def run(args: argparse.Namespace) -> int:
    """`pangu-core sft`: trains and evaluates; prints a JSON summary (with the files' paths) to stdout."""
    path = args.config or CONFIG_DIR / ("sft_quick.yaml" if args.quick else "sft_default.yaml")
    config = load_run_config(path)
    out = Path(args.out)
    result = run_sft(config, out, progress=not args.no_progress, overwrite=args.overwrite,
                     source=str(args.config) if args.config else path.name)
    files = {"checkpoint": str(out / "checkpoint"), "eval_json": str(out / "eval.json"),
             "eval_png": str(out / "eval.png")}
    summary = {key: result[key] for key in ("accuracy", "tokens", "train", "timings")}
    print(json.dumps({**summary, "files": files}, indent=2))
    _say(f"wrote {files['checkpoint']} (weights, tokenizer, training state), {files['eval_json']}, "
         f"{files['eval_png']}")
    return 0
