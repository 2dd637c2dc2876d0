"""What every stage driver (`pangu-core distill`, `dual`, ...) does the same way with its run folder.

* atomic JSON / JSONL files (a reader never sees half a file; an interrupted write leaves the old one);
* :func:`prepare_run_folder`: a new or empty folder is used, the same run (equal record) is resumed,
  anything else needs ``overwrite``, which removes only the run's own files;
* :func:`load_model`: a transformers model folder and its tokenizer, at a thread count;
* :class:`VerifierHolder`: one MARS math verifier per run, started on first use;
* :func:`train_resumable`: an SFT that saves its checkpoint at fifths of its steps and continues
  from it when started again;
* :func:`builtin_yaml`, :func:`add_run_arguments`, :func:`chosen_config`: the built-in YAML files and
  the arguments every driver takes (``--config | --quick``, ``--init``, ``--seed``, ``--out``,
  ``--overwrite``, ``--no-progress``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Writes one JSON object per line, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    os.replace(partial, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def prepare_run_folder(out: Path, record: dict[str, Any], overwrite: bool, *, run_file: str, owns: Callable[[str], bool],
                       what: str, say: Callable[[str], None]) -> None:
    """Readies ``out`` for a run described by ``record`` (written to ``out/run_file``).

    New or empty: used. Holding the same run: resumed (``say`` tells so). Holding another run or
    other files: FileExistsError naming what differs, unless ``overwrite``, which removes the
    entries ``owns(name)`` accepts and leaves everything else.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {str(out)!r} is a file, expected a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries and overwrite:
        for name in entries:
            if name == run_file or owns(name):
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif entries:
        if run_file not in entries:
            raise FileExistsError(f"--out: {str(out)!r} is not empty and holds no {what}; give --overwrite or a "
                                  "new --out")
        previous = read_json(out / run_file)
        if previous != record:
            changed = sorted(k for k in record if previous.get(k) != record[k])
            raise FileExistsError(f"--out: {str(out)!r} holds a run with other settings ({', '.join(changed)}); "
                                  "give --overwrite to replace it, or another --out")
        say(f"resuming the run in {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / run_file, record)


def load_model(folder: str | Path, threads: int | None = None):
    """(model, tokenizer) of a transformers model folder, float32 on the CPU, with torch at ``threads``
    threads (None: unchanged). The tokenizer must have a pad and an eos token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pangu_core.distill.sft import _quiet_transformers_bars

    if threads is not None:
        torch.set_num_threads(threads)
    with _quiet_transformers_bars():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"{folder}: the tokenizer has no pad or no eos token")
    return model, tokenizer


class VerifierHolder:
    """A run's one MARS math verifier, started when first asked for; ``close()`` ends it."""

    _verifier = None

    @property
    def verifier(self):
        if self._verifier is None:
            from pangu_core.rewards.math import MathVerifier

            self._verifier = MathVerifier()
        return self._verifier

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None


def train_resumable(checkpoint: Path, model, tokenizer, examples, sft_config, *, progress: bool,
                    say: Callable[[str], None], label: str):
    """Trains ``model`` on ``examples`` (a list or curriculum stages) to ``sft_config.max_steps``,
    saving ``checkpoint`` at every fifth of the steps; a checkpoint with a training state there is
    continued instead (bit for bit). Without ``progress``, ``say`` gets a line per save. Returns the
    trainer."""
    from pangu_core.distill.sft import STATE_FILE, SFTTrainer

    steps = sft_config.max_steps
    if (checkpoint / STATE_FILE).is_file():
        trainer = SFTTrainer.from_checkpoint(checkpoint, examples, sft_config)
        if trainer.step < steps:
            say(f"{label}: resuming SFT at step {trainer.step}")
    else:
        trainer = SFTTrainer(model, tokenizer, examples, sft_config)

    def save_and_log(step: int, loss: float, seconds: float) -> None:
        trainer.save_checkpoint(checkpoint)
        if not progress:
            say(f"{label}: sft step {step}/{steps}  loss {loss:.4f}  {seconds:.0f} s")

    if trainer.step < steps:
        trainer.train(progress=progress, every=max(1, steps // 5), on_every=save_and_log)
    return trainer


def loss_summary(losses: list[float]) -> dict[str, float]:
    """Mean loss of the first and the last tenth of the steps."""
    window = max(1, len(losses) // 10)
    return {"loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window}


def builtin_yaml(config_dir: Path, name: str, family: str) -> Path:
    """Path of the built-in ``config_dir/<name>.yaml``; FileNotFoundError lists the ``family*`` ones."""
    path = config_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir.glob(f"{family}*.yaml"))
        raise FileNotFoundError(f"config: no built-in {name!r}; known: {', '.join(known)}")
    return path


def add_run_arguments(parser: argparse.ArgumentParser, *, default: str, quick: str, init: str, out: str) -> None:
    """The arguments of a stage driver; the strings are the help texts of ``--config`` (the default
    file), ``--quick``, ``--init`` and ``--out``. Command-specific ones are added by the caller."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help=f"YAML run config (default: the built-in {default})")
    which.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--init", type=Path, help=init)
    parser.add_argument("--seed", type=int, help="replace the config's seed")
    parser.add_argument("--out", type=Path, required=True, help=out)
    parser.add_argument("--overwrite", action="store_true", help="replace another run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def chosen_config(args: argparse.Namespace, builtin: Callable[[str], Path], default: str, quick: str) -> tuple[Path, str]:
    """(the YAML ``--config`` / ``--quick`` / the default names, how to name it in messages)."""
    path = args.config or builtin(quick if args.quick else default)
    return Path(path), str(args.config) if args.config else Path(path).name
