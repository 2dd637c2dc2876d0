"""The dual-system training run (`pangu-core dual`): explicit modes, labels, auto mode, evaluation.

::

    theta_0 <- the start checkpoint (--init, or the warm start's SFT: a slow thinker)
    phase 1 : SFT of theta_0 on explicit-mode pairs of fresh prompts, one curriculum stage per
              fusion.fast_shares entry (fast pairs raised stage by stage, the rest slow replay)
    labels  : on a fresh pool, pass rates of the phase-1 model in fast and slow mode (k samples);
              fast-suited = label_modes(p_fast, p_slow, tau, delta)
    phase 2 : SFT of the phase-1 model on auto pairs of the pool (the fast answer when
              fast-suited, else the slow one) with explicit-tag replay and self-repair pairs
    evaluate: the start and final models per level and mode; the bias sweep; self-repair on the
              stress set; the measurement (savings, oracle, random mix, test mixes) and targets

Run folder: ``OUT/dual_run.json`` (config and --init; a restart with the same ones resumes),
``OUT/start/`` (the warm start's checkpoint when there is no --init, and ``start.json``: the start
checkpoint's evaluation), ``OUT/phase1/{checkpoint, phase.json}``, ``OUT/labels/{labels.jsonl,
labels.json}``, ``OUT/phase2/{checkpoint, phase.json}``, ``OUT/eval/*.json`` (one file per
evaluation), ``OUT/report.json`` and ``OUT/pareto.png``. A phase whose last file exists is skipped;
an unfinished SFT continues from its last checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pangu_core.dual.config import DualConfig
from pangu_core.runs import (VerifierHolder, load_model, loss_summary, prepare_run_folder, read_json, read_jsonl,
                            train_resumable, write_json, write_jsonl)

RUN_FILE = "dual_run.json"
PHASES = ("start", "phase1", "labels", "phase2", "eval")


def _say(line: str) -> None:
    print(f"pangu-core dual: {line}", file=sys.stderr, flush=True)


def _train_seed(config: DualConfig, part: int) -> int:
    """Seed of the fresh training prompts of one part (1: phase 1, 2: label pool)."""
    return 1_000_003 * (config.seed + 1) + 7919 * config.data_seed + 101 * part


class DualRun(VerifierHolder):
    """One run folder being worked; :func:`run_dual` drives it."""

    def __init__(self, config: DualConfig, out: Path, init: Path | None, progress: bool):
        from pangu_core.tasks.math_tasks import generate_math_tasks

        self.config, self.out, self.init, self.progress = config, out, init, progress
        self.test = generate_math_tasks(config.test_per_level * len(config.levels), config.levels, "test",
                                        config.data_seed, config.test_share)
        stress = config.stress
        self.stress = generate_math_tasks(stress.per_level * len(stress.levels), stress.levels, "test",
                                          config.data_seed + 1, config.test_share)

    def start_folder(self) -> Path:
        return self.init if self.init is not None else self.out / "start" / "checkpoint"

    def _evaluate(self, model, tokenizer, tasks, config, records: bool = False) -> dict[str, Any]:
        from pangu_core.evaluation import evaluate_model

        result = evaluate_model(model, tokenizer, tasks, config, progress=self.progress, verifier=self.verifier,
                                records=records)
        result.pop("examples", None)
        return result

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """The start checkpoint (the warm start when no --init) and its slow and fast evaluation."""
        path = self.out / "start" / "start.json"
        if path.is_file():
            return read_json(path)
        started = time.perf_counter()
        start_eval = self.config.eval.replace(modes=("slow", "fast"))
        if self.init is None:
            from pangu_core.distill.sft_cli import run_sft
            from pangu_core.dual.report import mode_table

            folder = self.out / "start"
            if (folder / "eval.json").is_file():
                result = read_json(folder / "eval.json")
            else:
                _say(f"training the start checkpoint into {folder}")
                result = run_sft(self.config.warm_start_config(), folder, progress=self.progress, source="warm_start")
            # The warm start was evaluated on this run's test split with this run's settings.
            evaluation = mode_table(result)
        else:
            model, tokenizer = load_model(self.init, self.config.num_threads)
            evaluation = self._evaluate(model, tokenizer, self.test, start_eval)
        entry = {"checkpoint": str(self.start_folder()), "eval": evaluation,
                 "seconds": time.perf_counter() - started}
        write_json(path, entry)
        return entry

    # -- the two fine-tuning phases ---------------------------------------------------------------------
    def _train(self, phase: int, start: Path, stage_pairs) -> dict[str, Any]:
        from pangu_core.dual.fusion import to_stages

        config = self.config
        sft = config.phase_sft(phase)
        model, tokenizer = load_model(start, config.num_threads)
        stages = to_stages(tokenizer, stage_pairs, sft.max_steps, sft.max_length)
        trainer = train_resumable(self.out / f"phase{phase}" / "checkpoint", model, tokenizer, stages, sft,
                                  progress=self.progress, say=_say, label=f"phase {phase}")
        return {"start": str(start), "steps": trainer.step, "stages": [len(s.examples) for s in stages],
                **loss_summary(trainer.losses)}

    def phase1(self) -> dict[str, Any]:
        """Explicit modes: progressive stages raising the fast share, slow replay, from the start checkpoint."""
        from pangu_core.dual.fusion import progressive_pairs, teacher_items
        from pangu_core.tasks.math_tasks import generate_math_tasks

        path = self.out / "phase1" / "phase.json"
        if path.is_file():
            return read_json(path)
        config, started = self.config, time.perf_counter()
        tasks = generate_math_tasks(config.phase1.prompts, config.levels, "train", _train_seed(config, 1),
                                    config.test_share)
        stages = progressive_pairs(teacher_items(tasks), config.fusion)
        entry = self._train(1, self.start_folder(), stages)
        entry["fast_pairs_per_stage"] = [sum(p.mode == "fast" for p in pairs) for pairs in stages]
        entry["auto_pairs_per_stage"] = [sum(p.mode == "auto" for p in pairs) for pairs in stages]
        entry["seconds"] = time.perf_counter() - started
        write_json(path, entry)
        return entry

    def labels(self) -> dict[str, Any]:
        """Pass rates of the phase-1 model in fast and slow mode on a fresh pool, and the mode labels."""
        from pangu_core.dual.fusion import label_modes
        from pangu_core.evaluation import pass_rates
        from pangu_core.tasks.math_tasks import generate_math_tasks

        path = self.out / "labels" / "labels.json"
        if path.is_file():
            return read_json(path)
        config, chooser, started = self.config, self.config.labels, time.perf_counter()
        pool = generate_math_tasks(chooser.pool_size, config.levels, "train", _train_seed(config, 2),
                                   config.test_share)
        model, tokenizer = load_model(self.out / "phase1" / "checkpoint", config.num_threads)
        rates = {}
        for index, mode in enumerate(("fast", "slow")):
            correct = pass_rates(model, tokenizer, pool, mode, chooser.k, chooser.temperature, chooser.max_new_tokens,
                                 chooser.batch_size, seed=config.seed * 1000 + 10 + index, verifier=self.verifier,
                                 progress=self.progress)
            rates[mode] = correct / chooser.k
        fast_suited = label_modes(rates["fast"], rates["slow"], config.fusion.tau, config.fusion.delta)
        records = [{"prompt": t.prompt, "reference": t.reference, "level": t.difficulty, "meta": dict(t.meta),
                    "p_fast": float(pf), "p_slow": float(ps), "fast_suited": bool(f)}
                   for t, pf, ps, f in zip(pool, rates["fast"], rates["slow"], fast_suited)]
        write_jsonl(self.out / "labels" / "labels.jsonl", records)
        levels = sorted({r["level"] for r in records})
        entry = {"pool_size": len(records), "fast_suited": int(fast_suited.sum()),
                 "fast_share_per_level": {str(lv): float(np.mean([r["fast_suited"] for r in records if r["level"] == lv]))
                                          for lv in levels},
                 "p_fast_per_level": {str(lv): float(np.mean([r["p_fast"] for r in records if r["level"] == lv]))
                                      for lv in levels},
                 "p_slow_per_level": {str(lv): float(np.mean([r["p_slow"] for r in records if r["level"] == lv]))
                                      for lv in levels},
                 "seconds": time.perf_counter() - started}
        write_json(path, entry)
        return entry

    def phase2(self) -> dict[str, Any]:
        """Auto pairs of the labelled pool with explicit replay and self-repair pairs, from the phase-1 model."""
        from pangu_core.dual.fusion import FusionItem, auto_pairs, mode_shares, repair_pairs
        from pangu_core.tasks.dataset import Task
        from pangu_core.tasks.teacher import teacher_response

        path = self.out / "phase2" / "phase.json"
        if path.is_file():
            return read_json(path)
        config, started = self.config, time.perf_counter()
        records = read_jsonl(self.out / "labels" / "labels.jsonl")
        records = records[:config.phase2.prompts]
        tasks = [Task(prompt=r["prompt"], reference=r["reference"], difficulty=r["level"], meta=r["meta"])
                 for r in records]
        items = [FusionItem(t.prompt, teacher_response(t, "slow"), teacher_response(t, "fast")) for t in tasks]
        labels = np.array([r["fast_suited"] for r in records], dtype=bool)
        fusion, note = config.fusion, None
        if fusion.min_mode_share > 0 and (labels.all() or not labels.any()):
            # No prompt of one mode: the auto pairs can only teach the other; said in the report.
            note = (f"every label is {'fast' if labels.all() else 'slow'}-suited: the auto pairs hold one mode only "
                    f"(min_mode_share {fusion.min_mode_share} cannot be met)")
            _say(f"phase 2: {note}")
            fusion = fusion.replace(min_mode_share=0.0)
        pairs = auto_pairs(items, labels, fusion)
        shares, auto_count = mode_shares(pairs), sum(p.mode == "auto" for p in pairs)
        # Self-repair pairs from slow-suited prompts (their traces are the long ones that loop).
        wanted = round(config.repair_pair_share * len(items))
        slow_items = [item for item, fast in zip(items, labels) if not fast] or items
        repaired = repair_pairs(slow_items[:wanted], fusion) if wanted else []
        pairs = pairs + repaired
        entry = self._train(2, self.out / "phase1" / "checkpoint", [pairs])
        entry.update(pairs=len(pairs), auto_pairs=auto_count, auto_fast_share=shares["fast"],
                     repair_pairs=len(repaired), note=note,
                     seconds=time.perf_counter() - started)
        write_json(path, entry)
        return entry

    # -- evaluation -----------------------------------------------------------------------------------
    def _cached(self, name: str, compute) -> dict[str, Any]:
        path = self.out / "eval" / f"{name}.json"
        if path.is_file():
            return read_json(path)
        result = compute()
        write_json(path, result)
        return result

    def evaluate(self) -> dict[str, Any]:
        """The final model: every mode with records, the bias sweep, and the stress set with and without repair."""
        config, started = self.config, time.perf_counter()
        loaded: list = []

        def model():
            if not loaded:
                loaded.extend(load_model(final_checkpoint(self.out), config.num_threads))
            return loaded

        main = self._cached("final", lambda: self._evaluate(*model(), self.test, config.eval, records=True))
        sweep = []
        for bias in config.biases:
            if bias == config.eval.auto_bias:
                sweep.append({"bias": bias, "result": main})
                continue
            biased = config.eval.replace(modes=("auto",), auto_bias=bias)
            sweep.append({"bias": bias, "result": self._cached(f"bias_{bias:+g}",
                                                               lambda c=biased: self._evaluate(*model(), self.test, c))})
        stress = config.stress
        runs: dict[str, dict[str, Any]] = {}
        for decoding in ("greedy", "sample"):
            for arm in ("plain", "repair"):
                run_config = config.eval.replace(modes=(stress.mode,), max_new_tokens=stress.max_new_tokens,
                                                 decoding=decoding, temperature=stress.temperature,
                                                 self_repair=arm == "repair", repair=stress.repair,
                                                 seed=config.seed * 1000 + 7)
                runs.setdefault(decoding, {})[arm] = self._cached(
                    f"stress_{decoding}_{arm}", lambda c=run_config: self._evaluate(*model(), self.stress, c, True))
        return {"final": main, "sweep": sweep, "stress": runs, "seconds": time.perf_counter() - started}


def prepare_out(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Readies OUT (see :func:`pangu_core.runs.prepare_run_folder`); --overwrite removes only the run's files."""
    prepare_run_folder(out, record, overwrite, run_file=RUN_FILE, what="dual run", say=_say,
                       owns=lambda name: name in PHASES or name in ("report.json", "pareto.png"))


def final_checkpoint(out: str | os.PathLike[str]) -> Path:
    """The model folder of a finished run in ``out``: phase 2's checkpoint."""
    return Path(out) / "phase2" / "checkpoint"


def run_dual(config: DualConfig, out: str | os.PathLike[str], *, init: str | os.PathLike[str] | None = None,
             progress: bool = True, overwrite: bool = False, plot: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the dual-system run into ``out``; returns the report (also ``OUT/report.json``).

    ``init``: the start checkpoint folder (default: trained by ``config.warm_start``).
    """
    from pangu_core.dual.report import build_report

    if not isinstance(config, DualConfig):
        raise TypeError(f"config: expected DualConfig, got {type(config).__name__}")
    out = Path(out)
    init_path = Path(init).resolve() if init is not None else None
    if init_path is not None and not (init_path / "config.json").is_file():
        raise FileNotFoundError(f"--init: {str(init)!r} is not a model folder (no config.json)")
    record = {"config": config.to_dict(), "init": str(init_path) if init_path else None}
    run = DualRun(config, out, init_path, progress)
    prepare_out(out, record, overwrite)
    started = time.perf_counter()
    phases: dict[str, Any] = {}
    try:
        for name in PHASES:
            _say(f"{name}")
            phases[name] = getattr(run, "evaluate" if name == "eval" else name)()
    finally:
        run.close()
    report = build_report(record, phases, time.perf_counter() - started)
    write_json(out / "report.json", report)
    if plot:
        from pangu_core.plots import dual_pareto_figure

        dual_pareto_figure(report, out / "pareto.png")
    return report
