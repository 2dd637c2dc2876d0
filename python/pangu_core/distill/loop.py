"""Model-aware iterative distillation with merging between rounds: :func:`run_distill`.

::

    theta_0 <- the start checkpoint (--init, or the warm start's SFT)
    for t in 1..T:
        X_t      <- pool_size fresh candidate prompts (generated, or drawn from the user's JSONL)
        C_i      <- 1 - correct_i / k          k sampled answers of the student theta_t starts from
        S_t      <- select(C, select, strategy) (see pangu_core.distill.selection)
        D_t      <- the teacher's traces of S_t (prompts without a verified trace are dropped)
        theta_t  <- SFT of the feed model on D_t, for a response-token budget
        merged_t <- the round merge (base or previous reading; none: merged_t = theta_t)
        evaluate theta_t and merged_t per level and mode
        the next round starts from merged_t (feed_merged) or theta_t

Run folder: ``OUT/distill_run.json`` (config and inputs; a restart with the same ones resumes),
``OUT/round_0/`` (the start checkpoint's evaluation, and its checkpoint when warm-started),
``OUT/round_<t>/{selection.jsonl, traces.jsonl, checkpoint, merged, round.json, eval.json}``,
``OUT/report.json`` and ``OUT/report.png``. A round is finished when its ``eval.json`` exists;
an unfinished round continues from what it wrote (its selection, its traces, its SFT checkpoint,
which resumes bit for bit).

The "previous" reading with task arithmetic, merged_t = previous + lambda * (theta_t - previous), is
computed in the equal form (1 - lambda) * previous + lambda * theta_t, so that lambda = 1 gives
theta_t exactly and a chain fed through it is the unmerged chain bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pangu_core.distill import selection as sel
from pangu_core.distill.config import DistillConfig
from pangu_core.runs import (VerifierHolder, load_model, loss_summary, prepare_run_folder, read_jsonl, train_resumable,
                            write_json, write_jsonl)
from pangu_core.tasks.dataset import Task

RUN_FILE = "distill_run.json"
# The least gain of the middling-complexity share that selection must show (report.json "mechanism").
MECHANISM_GAIN = 0.2


def _say(line: str) -> None:
    print(f"pangu-core distill: {line}", file=sys.stderr, flush=True)


class Pool:
    """Candidate prompts per round and the test split: generated tasks, or a user's JSONL split by hash."""

    def __init__(self, config: DistillConfig, data: str | Path | None = None):
        from pangu_core.tasks.math_tasks import generate_math_tasks, in_test_split

        self.config, self.data = config, data
        if data is None:
            self.user_tasks = None
            self.test = generate_math_tasks(config.test_per_level * len(config.levels), config.levels, "test",
                                            config.data_seed, config.test_share)
            return
        from pangu_core.tasks.dataset import read_jsonl

        tasks = read_jsonl(data)
        if not tasks:
            raise ValueError(f"--data: {str(data)!r} holds no tasks")
        for i, task in enumerate(tasks):
            if task.task_type != "math":
                raise ValueError(f"--data: task {i + 1} ({task.id}) has task_type {task.task_type!r}; "
                                 "distillation pools take math tasks (final answers judged by MARS)")
            if task.difficulty not in config.levels:
                raise ValueError(f"--data: task {i + 1} ({task.id}) has difficulty {task.difficulty}, not one of "
                                 f"the run's levels {list(config.levels)}")
        test, train, per_level = [], [], {level: 0 for level in config.levels}
        for task in tasks:
            if in_test_split(task.prompt, config.test_share):
                if per_level[task.difficulty] < config.test_per_level:
                    test.append(task)
                    per_level[task.difficulty] += 1
            else:
                train.append(task)
        if not train or not test:
            raise ValueError(f"--data: {str(data)!r} splits into {len(train)} training and {len(test)} test tasks "
                             f"(test_share {config.test_share}); both must be non-empty")
        self.user_tasks, self.test = train, test

    def candidates(self, round_index: int) -> list[Task]:
        """The round's fresh candidates (deterministic in data_seed, seed and the round)."""
        config = self.config
        size = config.selection.pool_size
        if self.user_tasks is None:
            from pangu_core.tasks.math_tasks import generate_math_tasks

            seed = 1_000_003 * (config.seed + 1) + 7919 * config.data_seed + round_index
            return generate_math_tasks(size, config.levels, "train", seed, config.test_share)
        # A seeded permutation per pass over the JSONL; round t takes the next pool_size of it.
        tasks, out, start = self.user_tasks, [], (round_index - 1) * size
        while len(out) < size:
            epoch, offset = divmod(start + len(out), len(tasks))
            order = np.random.default_rng([config.data_seed, config.seed, epoch]).permutation(len(tasks))
            out.extend(tasks[i] for i in order[offset:offset + size - len(out)])
        return out


def _eval_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in ("accuracy", "tokens", "count")}


class DistillRun(VerifierHolder):
    """One run folder being worked; :func:`run_distill` drives it."""

    def __init__(self, config: DistillConfig, out: Path, init: Path | None, data: Path | None, progress: bool):
        from pangu_core.distill.teachers import make_teacher

        self.config, self.out, self.progress = config, out, progress
        self.init = init
        self.pool = Pool(config, data)
        self.teacher = make_teacher(config.teacher, progress=progress)
        if config.teacher.kind == "programmatic" and self.pool.user_tasks is not None:
            self.teacher.check(self.pool.user_tasks, "--data")

    def round_dir(self, t: int) -> Path:
        return self.out / f"round_{t}"

    def base_folder(self) -> Path:
        return self.init if self.init is not None else self.round_dir(0) / "checkpoint"

    def feed_folder(self, t: int) -> Path:
        """The model round ``t + 1`` starts from (round 0: the start checkpoint)."""
        if t == 0:
            return self.base_folder()
        merging = self.config.merging
        if merging.method == "none" or not merging.feed_merged:
            return self.round_dir(t) / "checkpoint"
        return self.round_dir(t) / "merged"

    def merged_folder(self, t: int) -> Path:
        if t == 0:
            return self.base_folder()
        return final_checkpoint(self.config.replace(rounds=t), self.out)

    # -- round 0 -------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """The start checkpoint (trained when no --init) and its evaluation: round 0's entry."""
        directory = self.round_dir(0)
        if (directory / "round.json").is_file():
            return json.loads((directory / "round.json").read_text())
        started = time.perf_counter()
        if self.init is None:
            from pangu_core.distill.sft_cli import run_sft

            if (directory / "eval.json").is_file():
                result = json.loads((directory / "eval.json").read_text())
            else:
                _say(f"training the start checkpoint into {directory}")
                result = run_sft(self.config.warm_start_config(), directory, progress=self.progress,
                                 source="warm_start")
            evaluation = _eval_summary(result)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            model, tokenizer = load_model(self.init, self.config.num_threads)
            evaluation = self._evaluate(model, tokenizer)
        entry = {"round": 0, "start": str(self.base_folder()),
                 "eval": {"last": evaluation, "merged": evaluation},
                 "timings": {"start_s": time.perf_counter() - started}}
        write_json(directory / "round.json", entry)
        return entry

    def _evaluate(self, model, tokenizer) -> dict[str, Any]:
        from pangu_core.evaluation import evaluate_model

        return _eval_summary(evaluate_model(model, tokenizer, self.pool.test, self.config.eval,
                                            progress=self.progress, verifier=self.verifier))

    # -- one round -----------------------------------------------------------------------------------
    def round(self, t: int) -> dict[str, Any]:
        config, directory = self.config, self.round_dir(t)
        if (directory / "eval.json").is_file():
            return json.loads((directory / "round.json").read_text())
        directory.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        feed = self.feed_folder(t - 1)
        model, tokenizer = load_model(feed, config.num_threads)

        started = time.perf_counter()
        records = self._selection(t, model, tokenizer)
        timings["score_s"] = time.perf_counter() - started
        chosen = [r for r in records if r["selected"]]

        started = time.perf_counter()
        traces, teacher_stats = self._traces(t, chosen)
        timings["teacher_s"] = time.perf_counter() - started

        started = time.perf_counter()
        sft_info = self._train(t, model, tokenizer, traces)
        timings["sft_s"] = time.perf_counter() - started

        started = time.perf_counter()
        self._merge(t)
        timings["merge_s"] = time.perf_counter() - started

        started = time.perf_counter()
        last_model, last_tokenizer = load_model(directory / "checkpoint", config.num_threads)
        evaluation = {"last": self._evaluate(last_model, last_tokenizer)}
        if config.merging.method == "none":
            evaluation["merged"] = evaluation["last"]
        else:
            merged_model, merged_tokenizer = load_model(directory / "merged", config.num_threads)
            evaluation["merged"] = self._evaluate(merged_model, merged_tokenizer)
        timings["eval_s"] = time.perf_counter() - started

        entry = {"round": t, "start": str(feed), "selection": selection_stats(records), "teacher": teacher_stats,
                 "sft": sft_info, "eval": evaluation, "timings": timings}
        write_json(directory / "round.json", entry)
        write_json(directory / "eval.json", evaluation)
        return entry

    def _selection(self, t: int, model, tokenizer) -> list[dict[str, Any]]:
        from pangu_core.evaluation import pass_rates

        path = self.round_dir(t) / "selection.jsonl"
        if path.is_file():
            return read_jsonl(path)
        config, chooser = self.config, self.config.selection
        candidates = self.pool.candidates(t)
        correct = pass_rates(model, tokenizer, candidates, "slow", chooser.k, chooser.temperature,
                             chooser.max_new_tokens, chooser.batch_size, seed=config.seed * 1000 + t,
                             verifier=self.verifier, progress=self.progress)
        c = sel.complexity(correct, chooser.k)
        levels = [task.difficulty for task in candidates]
        fixed = chooser.levels_for(t) if chooser.strategy == "fixed_levels" else ()
        picked = set(sel.select(c, chooser.select, chooser.strategy, levels, seed=config.seed * 1000 + t,
                                mu=chooser.mu, sigma=chooser.sigma, floor=chooser.floor, fixed=fixed).tolist())
        records = [{"id": task.id, "prompt": task.prompt, "reference": task.reference, "level": task.difficulty,
                    "meta": dict(task.meta), "correct": int(n), "k": chooser.k, "complexity": float(ci),
                    "selected": i in picked}
                   for i, (task, n, ci) in enumerate(zip(candidates, correct, c))]
        write_jsonl(path, records)
        return records

    def _traces(self, t: int, chosen: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        path = self.round_dir(t) / "traces.jsonl"
        stats_path = self.round_dir(t) / "teacher.json"
        if path.is_file() and stats_path.is_file():
            return read_jsonl(path), json.loads(stats_path.read_text())
        tasks = [Task(prompt=r["prompt"], reference=r["reference"], difficulty=r["level"], meta=r["meta"])
                 for r in chosen]
        responses, stats = self.teacher.answer(tasks)
        traces = [{"prompt": task.prompt, "level": task.difficulty, "response": response}
                  for task, response in zip(tasks, responses) if response is not None]
        if not traces:
            raise ValueError(f"round {t}: the teacher answered none of the {len(tasks)} selected prompts")
        summary = {"requested": stats.requested, "answered": stats.answered, "dropped": stats.dropped,
                   "sampled": stats.sampled, "verified": stats.verified}
        write_jsonl(path, traces)
        write_json(stats_path, summary)
        return traces, summary

    def _train(self, t: int, model, tokenizer, traces: list[dict[str, Any]]) -> dict[str, Any]:
        from pangu_core.distill.sft import encode_pairs

        config = self.config
        examples = encode_pairs(tokenizer, [(r["prompt"], "slow", r["response"]) for r in traces],
                                config.sft.max_length)
        steps = sel.steps_for_tokens(examples, config.sft.batch_size, config.tokens_per_round)
        trainer = train_resumable(self.round_dir(t) / "checkpoint", model, tokenizer, examples,
                                  config.round_sft(steps, t), progress=self.progress, say=_say, label=f"round {t}")
        return {"examples": len(examples), "steps": steps, "response_tokens": sum(len(e.response_ids) for e in examples),
                "budget_tokens": config.tokens_per_round, **loss_summary(trainer.losses)}

    def _merge(self, t: int) -> None:
        from pangu_core.distill.round_merge import RoundMergeConfig, merge_round_checkpoints
        from pangu_core.merge import MergeConfig, merge_checkpoints
        from pangu_core.merge.config import ModelSpec

        merging = self.config.merging
        out = self.round_dir(t) / "merged"
        if merging.method == "none" or (out / "config.json").is_file():
            return
        latest = self.round_dir(t) / "checkpoint"
        options = {"overwrite": True, "progress": False, "threads": self.config.num_threads}
        if merging.delta_reference == "base":
            rounds = [self.round_dir(j) / "checkpoint" for j in range(1, t + 1)]
            merge_round_checkpoints(self.base_folder(), rounds, out,
                                    RoundMergeConfig(method=merging.method, lambda_=merging.lambda_,
                                                     density=merging.density, seed=merging.seed), **options)
            return
        previous = self.merged_folder(t - 1)
        if merging.method == "task_arithmetic":
            # previous + lambda * (theta_t - previous), written as the equal linear mix (see the module doc)
            models = (ModelSpec(str(previous), 1.0 - merging.lambda_), ModelSpec(str(latest), merging.lambda_))
            merge_checkpoints(MergeConfig(method="linear", models=models, normalize=False), out, **options)
            return
        merge_round_checkpoints(previous, [latest], out,
                                RoundMergeConfig(method=merging.method, weights=(1.0,), lambda_=merging.lambda_,
                                                 density=merging.density, seed=merging.seed), **options)


def selection_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool and selection figures of one round (the report's ``selection``)."""
    c_pool = np.array([r["complexity"] for r in records])
    chosen = [r for r in records if r["selected"]]
    c_selected = np.array([r["complexity"] for r in chosen])
    levels = sorted({r["level"] for r in records})
    chosen_levels = [r["level"] for r in chosen]
    return {
        "pool_size": len(records),
        "selected": len(chosen),
        "c_histogram_pool": sel.histogram(c_pool),
        "c_histogram_selected": sel.histogram(c_selected),
        "mid_share_pool": sel.mid_share(c_pool),
        "mid_share_selected": sel.mid_share(c_selected),
        "level_histogram_selected": {str(level): chosen_levels.count(level) for level in levels},
        "mean_level_selected": float(np.mean(chosen_levels)) if chosen else float("nan"),
        "mean_complexity_pool": float(c_pool.mean()) if len(c_pool) else float("nan"),
    }


def prepare_out(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Readies OUT (see :func:`pangu_core.runs.prepare_run_folder`); --overwrite removes only the run's files."""
    prepare_run_folder(out, record, overwrite, run_file=RUN_FILE, what="distillation run", say=_say,
                       owns=lambda name: name.startswith("round_") or name.startswith("report."))


def final_checkpoint(config: DistillConfig, out: str | os.PathLike[str]) -> Path:
    """The model folder a finished run in ``out`` ends with: the last round's merged model (its
    trained model when ``merging.method`` is none)."""
    last = Path(out) / f"round_{config.rounds}"
    return last / ("checkpoint" if config.merging.method == "none" else "merged")


def run_distill(config: DistillConfig, out: str | os.PathLike[str], *, init: str | os.PathLike[str] | None = None,
                data: str | os.PathLike[str] | None = None, progress: bool = True, overwrite: bool = False,
                plot: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the distillation rounds into ``out``; returns the report (also ``OUT/report.json``).

    ``init``: the start checkpoint folder (default: trained by ``config.warm_start``); ``data``: a
    JSONL pool of math tasks (default: generated tasks at ``config.levels``).
    """
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config: expected DistillConfig, got {type(config).__name__}")
    out = Path(out)
    init_path = Path(init).resolve() if init is not None else None
    if init_path is not None and not (init_path / "config.json").is_file():
        raise FileNotFoundError(f"--init: {str(init)!r} is not a model folder (no config.json)")
    data_path = Path(data).resolve() if data is not None else None
    if data_path is not None and not data_path.is_file():
        raise FileNotFoundError(f"--data: {str(data)!r} is not a file")
    record = {"config": config.to_dict(), "init": str(init_path) if init_path else None,
              "data": str(data_path) if data_path else None}
    run = DistillRun(config, out, init_path, data_path, progress)  # checks the pool and teacher first
    prepare_out(out, record, overwrite)
    started = time.perf_counter()
    try:
        rounds = [run.start()]
        for t in range(1, config.rounds + 1):
            _say(f"round {t}/{config.rounds}")
            rounds.append(run.round(t))
    finally:
        run.close()
    report = build_report(config, record, rounds, time.perf_counter() - started)
    write_json(out / "report.json", report)
    if plot:
        from pangu_core.plots import distill_figure

        distill_figure(report, out / "report.png")
    return report


def build_report(config: DistillConfig, record: dict[str, Any], rounds: list[dict[str, Any]],
                 seconds: float) -> dict[str, Any]:
    """``report.json``: the rounds, and the mechanism checks over them."""
    from pangu_core.bench.common import machine_info

    selected = [r["selection"] for r in rounds[1:]]
    gains = [s["mid_share_selected"] - s["mid_share_pool"] for s in selected]
    has_mid = [s["mid_share_pool"] > 0 for s in selected]
    levels = [s["mean_level_selected"] for s in selected]
    return {
        "config": record["config"], "init": record["init"], "data": record["data"], "machine": machine_info(),
        "rounds": rounds,
        "mechanism": {
            "mid_share_gain": gains,
            "pool_has_mid": has_mid,
            "mean_level_selected": levels,
            # the selection's own checks: the selected share of middling prompts beats the pool's by
            # MECHANISM_GAIN wherever the pool has some, and the selected mean level rises over the run
            "mid_share_gain_met": all(g >= MECHANISM_GAIN for g, mid in zip(gains, has_mid) if mid),
            "mean_level_rises": len(levels) > 1 and levels[-1] > levels[0],
        },
        "seconds": seconds,
    }
