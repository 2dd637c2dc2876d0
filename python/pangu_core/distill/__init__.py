"""Distillation: the SFT trainer (:mod:`.sft`, ``pangu-core sft``) and merging of round checkpoints.

What exists: supervised fine-tuning of any transformers causal LM on teacher traces
(:mod:`.sft`, :mod:`.sft_data`, :mod:`.sft_cli`) and :mod:`.round_merge`. Not built yet: the
iterative loop with model-aware data selection.

The SFT names are re-exported here and imported on first use, so importing one submodule does not
import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SFTConfig": "sft", "SFTExample": "sft", "SFTTrainer": "sft", "Stage": "sft", "TrainLog": "sft",
    "collate": "sft", "encode_pairs": "sft", "epoch_batches": "sft", "lr_factor": "sft",
    "CurriculumStage": "sft_cli", "SFTRunConfig": "sft_cli", "load_run_config": "sft_cli", "run_sft": "sft_cli",
    "load_training_state": "training_state", "save_training_state": "training_state",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
