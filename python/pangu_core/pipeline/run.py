"""`pangu-core pipeline`: SFT -> distillation rounds with merging -> RL (async) -> dual system, one run folder.

Each stage is the stage driver of its own command (``run_sft``, ``run_distill``, ``run_rl``,
``run_dual``) run into ``OUT/<stage>/`` from the previous stage's model folder:

========  ==========================  ===================================
stage     starts from                 hands on
========  ==========================  ===================================
sft       a new tiny model            ``sft/checkpoint``
distill   ``sft/checkpoint``          ``distill/round_<T>/merged``
rl        the distilled model         ``rl/snapshots/step_<steps>``
dual      the RL model                ``dual/phase2/checkpoint`` -> ``model/``
========  ==========================  ===================================

A stage's hash covers its config (with the pipeline's seed) and the hash of the stage before it.
``OUT/pipeline_state.json`` records each stage's hash and whether it finished: a finished stage whose
hash is unchanged is skipped, a changed one is run again from scratch (and so is every stage after
it), and an interrupted one continues where its driver's own resume picks it up, unless a stage
ahead of it ran again. ``from_stage`` reruns from a stage on. What the stages write to stderr (and
the pipeline's own stage lines, and the traceback of an error) goes to ``OUT/log.txt``; the terminal
gets one status line (stage, step, elapsed, ETA), or with ``progress=False`` a line per stage. At the end the final model
is copied to ``OUT/model/`` (weights, config and tokenizer: ``Reasoner.from_pretrained(OUT/model)``)
and :mod:`.report` writes ``report.json``, ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pangu_core.pipeline.config import STAGES, PipelineConfig
from pangu_core.pipeline.display import Display, capture_output
from pangu_core.runs import read_json, write_json

STATE_FILE = "pipeline_state.json"
LOG_FILE = "log.txt"
MODEL_DIR = "model"
# What a pipeline run writes into OUT; --overwrite removes these and nothing else.
OWNED = (*STAGES, MODEL_DIR, STATE_FILE, LOG_FILE, "report.json", "report.md", "report.png")
# Files of a checkpoint folder that are training state, not the model (left out of OUT/model).
_STATE_FILES = ("training_state.safetensors", "learner_state.safetensors")


def stage_hashes(config: PipelineConfig) -> dict[str, str]:
    """Each stage's hash: its config (with the pipeline's seed) chained with the previous stage's hash."""
    hashes: dict[str, str] = {}
    previous = ""
    for name in STAGES:
        text = json.dumps({"stage": name, "config": config.stage(name).to_dict(), "previous": previous},
                          sort_keys=True)
        previous = hashes[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return hashes


def stage_input(config: PipelineConfig, out: Path, name: str) -> Path | None:
    """The model folder stage ``name`` starts from (None for SFT, which starts a new model)."""
    index = STAGES.index(name)
    return None if index == 0 else stage_output(config, out, STAGES[index - 1])


def stage_output(config: PipelineConfig, out: Path, name: str) -> Path:
    """The model folder stage ``name`` hands on."""
    if name == "sft":
        return out / "sft" / "checkpoint"
    if name == "distill":
        from pangu_core.distill.loop import final_checkpoint

        return final_checkpoint(config.distill, out / "distill")
    if name == "rl":
        from pangu_core.rl.run import final_checkpoint

        return final_checkpoint(config.rl, out / "rl")
    from pangu_core.dual.run import final_checkpoint

    return final_checkpoint(out / "dual")


def _prepare(out: Path, config: PipelineConfig, overwrite: bool) -> dict[str, Any]:
    """Readies OUT; returns the state of a run there (empty for a new one)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {str(out)!r} is a file, expected a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries and overwrite:
        for name in entries:
            if name in OWNED or name.endswith((".partial", ".old")) and name.rsplit(".", 1)[0] in OWNED:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        entries = []
    if entries and STATE_FILE not in entries and set(entries) != {STATE_FILE + ".partial"}:
        raise FileExistsError(f"--out: {str(out)!r} is not empty and holds no pipeline run; give --overwrite or a "
                              "new --out")
    out.mkdir(parents=True, exist_ok=True)
    state = read_json(out / STATE_FILE) if STATE_FILE in entries else {"stages": {}}
    state["config"] = config.to_dict()
    return state


def _run_stage(name: str, config: PipelineConfig, out: Path, overwrite: bool) -> dict[str, Any]:
    """Runs (or resumes) one stage's driver into ``OUT/<name>``; returns its report."""
    stage_config = config.stage(name)
    folder = out / name
    init = stage_input(config, out, name)
    if name == "sft":
        from pangu_core.distill.sft_cli import RUN_CONFIG_FILE, SFTRunConfig, run_sft

        if not overwrite and (folder / "eval.json").is_file() and \
                SFTRunConfig.from_yaml(folder / RUN_CONFIG_FILE) == stage_config:
            return read_json(folder / "eval.json")   # finished, but stopped before the pipeline recorded it
        return run_sft(stage_config, folder, progress=False, overwrite=overwrite, source="pipeline sft")
    if name == "distill":
        from pangu_core.distill.loop import run_distill

        return run_distill(stage_config, folder, init=init, progress=False, overwrite=overwrite)
    if name == "rl":
        from pangu_core.rl.run import run_rl

        def on_step(step: int, record: dict[str, Any]) -> None:
            print(f"pangu-core rl: step {step}/{stage_config.steps}  reward {record['reward_mean']:.3f}",
                  file=sys.stderr, flush=True)

        return run_rl(stage_config, folder, init=init, progress=False, overwrite=overwrite, on_step=on_step)
    from pangu_core.dual.run import run_dual

    return run_dual(stage_config, folder, init=init, progress=False, overwrite=overwrite)


def _copy_model(source: Path, target: Path) -> None:
    """Copies the model files of ``source`` (not its training state) to ``target``: into a ``.partial``
    folder first, so ``target`` is never half written (it is absent only between two renames)."""
    partial = target.with_name(target.name + ".partial")
    old = target.with_name(target.name + ".old")
    for leftover in (partial, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*_STATE_FILES))
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)


def run_pipeline(config: PipelineConfig, out: str | os.PathLike[str], *, from_stage: str | None = None,
                 progress: bool = True, overwrite: bool = False, source: str = "config") -> dict[str, Any]:
    """Runs (or resumes) the pipeline into ``out``; returns the report (also ``OUT/report.json``).

    ``from_stage``: rerun this stage and every later one even where their hashes are unchanged.
    ``source`` names the config in the log's first line.
    """
    from pangu_core.pipeline.report import build_report, write_outputs

    if not isinstance(config, PipelineConfig):
        raise TypeError(f"config: expected PipelineConfig, got {type(config).__name__}")
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"--from: unknown stage {from_stage!r}; known: {', '.join(STAGES)}")
    out = Path(out)
    state = _prepare(out, config, overwrite)
    from pangu_core.pipeline.report import source_commit

    commit = source_commit()
    if commit not in state.setdefault("commits", []):
        state["commits"].append(commit)
    write_json(out / STATE_FILE, state)
    hashes = stage_hashes(config)
    forced = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()
    reports: dict[str, Any] = {}
    display = Display(STAGES, progress=progress)
    try:
        with capture_output(out / LOG_FILE, display):
            print(f"pangu-core pipeline: {source}, seed {config.seed}, out {out}", file=sys.stderr, flush=True)
            _run_stages(config, out, state, hashes, forced, reports, display)
            _copy_model(stage_output(config, out, "dual"), out / MODEL_DIR)
            report = build_report(config, out, reports, state)
            write_outputs(report, out)
    finally:
        display.close()
    return report


def _run_stages(config: PipelineConfig, out: Path, state: dict[str, Any], hashes: dict[str, str], forced: set[str],
                reports: dict[str, Any], display: Display) -> None:
    """Skips, resumes or (re)runs each stage in order, recording it in ``OUT/pipeline_state.json``."""
    ran_before = False    # a stage ahead of this one ran (or resumed) in this invocation
    for name in STAGES:
        done = state["stages"].get(name, {})
        fresh = done.get("hash") == hashes[name] and done.get("finished") and not ran_before and name not in forced
        # Starts over: a stage run before with other settings, or on a model that a stage ahead of it has
        # just (re)built, or asked for. Resumed by its driver: an interrupted one whose input is unchanged.
        rerun = bool(done) and (done.get("hash") != hashes[name] or bool(done.get("finished")) or ran_before) \
            or name in forced
        display.start(name, skipped=bool(fresh), resumed=bool(done) and not rerun)
        if fresh:
            reports[name] = _stage_report(out, name)
            continue
        ran_before = True
        state["stages"][name] = {"hash": hashes[name], "finished": False}
        write_json(out / STATE_FILE, state)
        started = time.perf_counter()
        reports[name] = _run_stage(name, config, out, rerun)
        seconds = time.perf_counter() - started
        # seconds: this invocation's; "resumed" says an earlier one did part of the stage.
        state["stages"][name] = {"hash": hashes[name], "finished": True, "seconds": seconds,
                                 "resumed": bool(done) and not rerun}
        write_json(out / STATE_FILE, state)
        display.finish(name, seconds)


def _stage_report(out: Path, name: str) -> dict[str, Any]:
    """The report a finished stage left in its folder."""
    return read_json(out / name / ("eval.json" if name == "sft" else "report.json"))
