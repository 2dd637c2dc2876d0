"""A GRPO run on the latency-tolerant scheduler: :func:`run_rl` (`pangu-core rl`).

::

    prompts  <- generated math tasks (train split) of the config's levels, in the chat template
    learner  <- the --init checkpoint; publishes its weights over shared memory (version k)
    rollout workers (processes) claim chunks, pull weights >= c - eta, sample G answers per prompt,
             score them with MARS's math verifier (final answer against the reference), queue them
    learner  takes batches best first, one GRPO step each, advances the queue, publishes k + 1
    every checkpoint_every steps: OUT/checkpoint (model, learner state, prompt-stream position)
    at the snapshot steps: OUT/snapshots/step_<k>
    after the run: greedy test accuracy of every snapshot, OUT/report.json and OUT/report.png

Run folder: ``OUT/rl_run.json`` (config and input; a restart with the same ones resumes from
``OUT/checkpoint``), ``OUT/checkpoint/`` (a transformers model folder plus
``learner_state.safetensors``: optimizer, step, torch RNG, prompt-stream position and the steps'
records so far), ``OUT/snapshots/step_<k>/``, ``OUT/eval/step_<k>.json``, ``OUT/report.json`` and
``OUT/report.png``. Evaluation runs only after the learner's last step, so it never perturbs the
timing. The weights travel over shared memory under a prefix of this run; the publisher and the
worker processes are closed on every exit path, so a failed run leaves nothing in /dev/shm.

``config.backend`` says where the rollout workers run; the learner (:func:`_train`: model,
optimiser, ``grpo_step``, coordinator, checkpoints) is the same code in every backend, and a
backend's runner only places the workers and moves the weights: "process" (:func:`_process_runner`),
"ray" (:mod:`pangu_core.rl.ray_backend`, the learner inside a Ray actor) and "torchrun"
(:mod:`pangu_core.rl.torchrun_backend`, the learner on rank 0).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pangu_core.rl.config import RLConfig
from pangu_core.runs import load_model, prepare_run_folder, write_json

RUN_FILE = "rl_run.json"
PLACEMENT_FIELDS = ("backend", "placement")
STATE_FILE = "learner_state.safetensors"
RUN_FILES = ("checkpoint", "checkpoint.partial", "checkpoint.old", "snapshots", "eval", "report.json",
             "report.png", RUN_FILE)


def _say(line: str) -> None:
    print(f"pangu-core rl: {line}", file=sys.stderr, flush=True)


def build_prompts(config: RLConfig, tokenizer) -> tuple[list, dict[int, int]]:
    """The prompt stream (a Prompt per generated train task, in the chat template) and the level of
    each prompt index."""
    from pangu_core.dual.chat_format import template_prompts
    from pangu_core.rl.scheduler import Prompt
    from pangu_core.tasks.math_tasks import generate_math_tasks

    tasks = generate_math_tasks(config.train_prompts, config.levels, "train", config.data_seed, config.test_share)
    texts = template_prompts(tokenizer, [(task.prompt, config.mode) for task in tasks])
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    prompts = [Prompt(i, tuple(row), reference=task.reference) for i, (task, row) in enumerate(zip(tasks, ids))]
    levels = {i: task.difficulty for i, task in enumerate(tasks)}
    return prompts, levels


def test_tasks(config: RLConfig) -> list:
    """The test split: test_per_level generated tasks per level, none of them in the prompt stream."""
    from pangu_core.tasks.math_tasks import generate_math_tasks

    return generate_math_tasks(config.test_per_level * len(config.levels), config.levels, "test",
                               config.data_seed, config.test_share)


class MarsReward:
    """The rollout reward: 1 when the response's final answer equals the reference (MARS's math
    verifier, exact for integers, math-verify under a time limit otherwise), else 0."""

    def __init__(self, tokenizer) -> None:
        from pangu_core.dual.chat_format import ChatFormat
        from pangu_core.rewards.config import MathConfig
        from pangu_core.rewards.math import MathVerifier

        self.tokenizer = tokenizer
        self.chat = ChatFormat(end=tokenizer.eos_token, pad=tokenizer.pad_token or "")
        self.verifier = MathVerifier(MathConfig(workers=1))

    def __call__(self, prompt, responses: list[list[int]]) -> list[float]:
        from pangu_core.dual.chat_format import parse_response
        from pangu_core.evaluation import match_answers

        finals = [parse_response(self.tokenizer.decode(r, skip_special_tokens=False), self.chat).final_answer
                  for r in responses]
        return [float(ok) for ok in match_answers(self.verifier, finals, [str(prompt.reference)] * len(responses))]


def make_rollout_worker(index: int, folder: str, seed: int) -> tuple[Any, Any, Any]:
    """One rollout worker's (generator, scorer, weights target), built inside its process."""
    import torch

    from pangu_core.rl.rollout import TransformersGenerator

    torch.manual_seed(seed + 7919 * index)
    model, tokenizer = load_model(folder)
    model.eval()
    return TransformersGenerator(model, tokenizer), MarsReward(tokenizer), model


def prepare_out(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Readies OUT (see :func:`pangu_core.runs.prepare_run_folder`); --overwrite removes only the run's files."""
    prepare_run_folder(out, record, overwrite, run_file=RUN_FILE, what="rl run", say=_say,
                       owns=lambda name: name in RUN_FILES)


def _save_folder(model, tokenizer, folder: Path, extra: Callable[[Path], None] | None = None) -> None:
    """Writes a model folder atomically: into ``<folder>.partial``, then swapped in place."""
    partial, old = folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")
    from pangu_core.distill.sft import _quiet_transformers_bars

    shutil.rmtree(partial, ignore_errors=True)
    with _quiet_transformers_bars():
        model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if extra is not None:
        extra(partial)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(partial, folder)
    shutil.rmtree(old, ignore_errors=True)


class Segment:
    """What one process's part of a run measures (a resumed run has several)."""

    def __init__(self, prior: dict[str, Any]) -> None:
        self.records: list[dict[str, Any]] = list(prior.get("records", []))
        self.segments: list[dict[str, Any]] = list(prior.get("segments", []))
        self.elapsed_before = float(prior.get("elapsed_s", 0.0))
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


def final_checkpoint(config: RLConfig, out: str | os.PathLike[str]) -> Path:
    """The model folder of a finished run in ``out``: the snapshot of its last step."""
    return Path(out) / "snapshots" / f"step_{config.steps}"


def run_rl(config: RLConfig, out: str | os.PathLike[str], *, init: str | os.PathLike[str], progress: bool = True,
           overwrite: bool = False, plot: bool = True, shm_prefix: str | None = None,
           on_step: Callable[[int, dict[str, Any]], None] | None = None,
           ray_address: str | None = None) -> dict[str, Any]:
    """Runs (or resumes) GRPO from checkpoint ``init`` into ``out``; returns the report (also ``OUT/report.json``).

    ``shm_prefix``: the shared-memory name prefix of the weights (default: a fresh one per call).
    ``on_step(step, record)`` is called in the learner's thread after each step is published
    (backends process and torchrun; the ray backend's learner is an actor elsewhere).
    ``config.backend`` picks where the roles run: "process" (here), "ray" (``ray_address``: an
    existing cluster, e.g. "auto"; None starts or reuses a local instance; see
    :mod:`pangu_core.rl.ray_backend`) or "torchrun" (every rank calls this; rank 0 learns and
    returns the report, the other ranks roll out and return their own summary; see
    :mod:`pangu_core.rl.torchrun_backend`).
    """
    if not isinstance(config, RLConfig):
        raise TypeError(f"config: expected RLConfig, got {type(config).__name__}")
    if init is None:
        raise ValueError("--init: expected a checkpoint folder (from `pangu-core sft` or `pangu-core distill`)")
    init_path = Path(init).resolve()
    if not (init_path / "config.json").is_file():
        raise FileNotFoundError(f"--init: {str(init)!r} is not a model folder (no config.json)")
    if config.backend == "ray" and on_step is not None:
        raise ValueError("on_step: not available with backend 'ray' (the learner is a Ray actor)")
    if config.backend == "torchrun":
        from pangu_core.rl import torchrun_backend

        if torchrun_backend.init_world(config) != 0:
            return torchrun_backend.serve_rollout_rank(config, init_path)
    out = Path(out)
    # Where the roles run (backend, placement) is not part of the run's identity: a run started on
    # one backend resumes on another.
    record = {"config": {k: v for k, v in config.to_dict().items() if k not in PLACEMENT_FIELDS},
              "init": str(init_path)}
    prepare_out(out, record, overwrite)
    checkpoint = out / "checkpoint"
    old = out / "checkpoint.old"
    if not checkpoint.exists() and old.exists():     # a save was cut between its two renames
        os.replace(old, checkpoint)
    state: dict[str, Any] = {}
    if (checkpoint / STATE_FILE).is_file():
        from pangu_core.distill.training_state import load_training_state

        state = load_training_state(checkpoint / STATE_FILE)
        _say(f"resuming the run in {out} at step {state['step']}")
    segment = Segment(state)
    if state.get("step", 0) < config.steps:
        if config.backend == "ray":
            from pangu_core.rl.ray_backend import train_ray

            train_ray(config, out, init_path, segment, progress, shm_prefix, ray_address)
        elif config.backend == "torchrun":
            _train(config, out, init_path, state, segment, progress, shm_prefix, on_step,
                   runner=torchrun_backend.learner_runner)
        else:
            _train(config, out, init_path, state, segment, progress, shm_prefix, on_step)
    elif config.backend == "torchrun":
        torchrun_backend.release_ranks()        # nothing left to train: the rollout ranks go home
    report = _evaluate_and_report(config, out, init_path, segment, progress)
    write_json(out / "report.json", report)
    if plot:
        from pangu_core.plots import rl_figure

        rl_figure(report, out / "report.png")
    return report


@dataclass
class LearnerRun:
    """What a backend's runner gets from :func:`_train`: the learner's model, the coordinator and the
    step functions, ready to go from version ``start``. The runner publishes version ``start``,
    runs :func:`~pangu_core.rl.scheduler.run_learner` with ``step`` and ``after_step`` and returns
    what :func:`~pangu_core.rl.processes.run_processes` returns."""

    config: RLConfig
    init: Path
    start: int
    model: Any
    coordinator: Any
    step: Callable[[list, int], dict[str, Any]]
    after_step: Callable[[int, dict[str, Any]], None]
    prefix: str

    def factory(self) -> Callable[[int], tuple[Any, Any, Any]]:
        """The rollout workers' builder (picklable): their model from the start checkpoint, seeded."""
        # Workers build their model from the start checkpoint (the first pull replaces its weights),
        # so a checkpoint being saved never races a worker loading it.
        return functools.partial(make_rollout_worker, folder=str(self.init),
                                 seed=self.config.seed * 1_000_003 + 31 * self.start)


def _process_runner(run: LearnerRun) -> dict[str, Any]:
    """Backend "process": the weights over shared memory to rollout worker processes of this host."""
    from pangu_core.rl.processes import run_processes
    from pangu_core.sync import Publisher, SyncConfig

    config = run.config
    sync = SyncConfig(transport="shm", name="policy", prefix=run.prefix, publish_dtype=None, timeout_s=60.0)
    with Publisher(run.model, sync) as publisher:
        publisher.publish(version=run.start)
        return run_processes(run.coordinator, publisher, run.step, config.steps, run.factory(), config.rollout_workers,
                             sync, threads=config.rollout_threads, on_step=run.after_step)


def _train(config: RLConfig, out: Path, init: Path, state: dict[str, Any], segment: Segment, progress: bool,
           shm_prefix: str | None, on_step: Callable[[int, dict[str, Any]], None] | None,
           runner: Callable[[LearnerRun], dict[str, Any]] | None = None) -> None:
    """The learner in this process, from the state's step to the last; ``runner`` (default: rollout
    worker processes of this host) places the rollout workers and moves the weights."""
    import torch
    from tqdm.auto import tqdm

    from pangu_core.rl.learner import grpo_step
    from pangu_core.rl.scheduler import Coordinator

    start = int(state.get("step", 0))
    folder = out / "checkpoint" if start else init
    torch.set_num_threads(config.learner_threads)
    model, tokenizer = load_model(folder)
    prompts, levels = build_prompts(config, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.betas,
                                  weight_decay=config.weight_decay)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(config.seed)
    coordinator = Coordinator(prompts, config.schedule, start_version=start, position=state.get("position"))
    snapshots = set(config.snapshots())
    bar = tqdm(total=config.steps, initial=start, desc="rl steps", disable=not progress, dynamic_ncols=True)

    def step(batch, k):
        metrics = grpo_step(model, optimizer, batch, config.grpo, temperature=config.schedule.temperature,
                            pad_id=tokenizer.pad_token_id, max_grad_norm=config.max_grad_norm)
        spreads = [max(g.rewards) > min(g.rewards) for g in batch]
        return {"reward_mean": metrics["reward_mean"], "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                "tokens": sum(len(r) for g in batch for r in g.responses),
                "zero_spread_share": 1.0 - sum(spreads) / len(batch),
                "levels": dict(Counter(str(levels[g.prompt.index]) for g in batch))}

    def after_step(k: int, metrics: dict[str, Any]) -> None:
        done = k + 1
        entry = {key: value for key, value in metrics.items() if key != "end_s"}
        entry.update(step=done, time_s=segment.elapsed())
        started = time.perf_counter()
        if done in snapshots:
            _save_folder(model, tokenizer, out / "snapshots" / f"step_{done}",
                         lambda p: (p / "snapshot.json").write_text(json.dumps({"step": done,
                                                                                "time_s": entry["time_s"]})))
        segment.records.append(entry)
        if done % config.checkpoint_every == 0 or done == config.steps:
            _checkpoint(out, model, tokenizer, optimizer, done, coordinator, segment)
        entry["save_s"] = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(reward=f"{entry['reward_mean']:.3f}")
        if on_step is not None:
            on_step(done, entry)

    prefix = shm_prefix or f"pgrl{uuid.uuid4().hex[:10]}"
    run = LearnerRun(config, init, start, model, coordinator, step, after_step, prefix)
    segment_started = time.perf_counter()
    try:
        result = (runner or _process_runner)(run)
    finally:
        bar.close()
    wall = time.perf_counter() - segment_started
    segment.segments.append(_segment_summary(result, coordinator, levels, start, config.steps, wall, config.backend))
    _checkpoint(out, model, tokenizer, optimizer, config.steps, coordinator, segment)


def _segment_summary(result: dict[str, Any], coordinator, levels: dict[int, int], start: int, end: int,
                     wall: float, backend: str = "process") -> dict[str, Any]:
    """One process's figures: queue counters, lags, level mixes, worker timings, lost groups, and
    what the backend adds (``extra``: relay bytes, publish waits)."""
    generated, consumed = Counter(), Counter()
    for index, n in coordinator.generated.items():
        generated[str(levels[index])] += n
    for index, n in coordinator.consumed.items():
        consumed[str(levels[index])] += n
    return {"steps": [start, end], "wall_s": wall, "queue": result["queue"],
            "lag_histogram": {str(k): v for k, v in result["lag_histogram"].items()},
            "handed_back": result["handed_back"], "dead_workers": result["dead_workers"],
            "workers": result["workers"], "levels_generated": dict(generated), "levels_consumed": dict(consumed),
            "lost_groups": int(result.get("lost_groups", 0)), "skipped": int(result.get("skipped", 0)),
            "generated_reward": {str(k): v for k, v in result.get("generated_reward", {}).items()},
            "backend": backend, "extra": result.get("extra", {})}


def _checkpoint(out: Path, model, tokenizer, optimizer, step: int, coordinator, segment: Segment) -> None:
    """OUT/checkpoint: the model folder and the learner state (optimizer, step, RNG, stream position)."""
    import torch

    from pangu_core.distill.training_state import save_training_state

    state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
             "position": coordinator.position(), "records": segment.records, "segments": segment.segments,
             "elapsed_s": segment.elapsed()}
    _save_folder(model, tokenizer, out / "checkpoint", lambda p: save_training_state(p / STATE_FILE, state))


def _evaluate_and_report(config: RLConfig, out: Path, init: Path, segment: Segment,
                         progress: bool) -> dict[str, Any]:
    from pangu_core.evaluation import evaluate_model
    from pangu_core.rl.report import build_report

    accuracy, test = [], None
    for step in config.snapshots():
        path = out / "eval" / f"step_{step}.json"
        if not path.is_file():
            folder = init if step == 0 else out / "snapshots" / f"step_{step}"
            if not (folder / "config.json").is_file():
                continue
            model, tokenizer = load_model(folder, config.num_threads)
            test = test_tasks(config) if test is None else test
            result = evaluate_model(model, tokenizer, test, config.eval, progress=progress)
            info = json.loads((folder / "snapshot.json").read_text()) if step else {"step": 0, "time_s": 0.0}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"step": step, "time_s": info["time_s"], "accuracy": result["accuracy"],
                               "tokens": result["tokens"], "count": result["count"]})
        accuracy.append(json.loads(path.read_text()))
    return build_report(config, str(init), segment.records, segment.segments, accuracy)
