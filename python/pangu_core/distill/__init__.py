"""Distillation: the SFT trainer, model-aware iterative distillation with merging between rounds.

* :mod:`.sft`, :mod:`.sft_data`, :mod:`.sft_cli`: supervised fine-tuning of any transformers causal
  LM on teacher traces (``pangu-core sft``).
* :mod:`.selection`: complexity from pass rates, Gaussian weights, the selection strategies, token
  budgets (pure numpy).
* :mod:`.teachers`: the programmatic teacher and a transformers model teacher behind one protocol.
* :mod:`.round_merge`: merging the rounds' checkpoints.
* :mod:`.config`, :mod:`.loop`, :mod:`.cli`: the rounds as a running loop (``pangu-core distill``);
  :mod:`.ablate`: the selection and merging ablations (``pangu-core ablate``).

The names below are re-exported here and imported on first use, so importing one submodule does not
import the others.
"""

from __future__ import annotations

from pangu_core._lazy import lazy_exports

_EXPORTS = {
    "SFTConfig": "sft", "SFTExample": "sft", "SFTTrainer": "sft", "Stage": "sft", "TrainLog": "sft",
    "collate": "sft", "encode_pairs": "sft", "epoch_batches": "sft", "lr_factor": "sft",
    "CurriculumStage": "sft_cli", "SFTRunConfig": "sft_cli", "load_run_config": "sft_cli", "run_sft": "sft_cli",
    "load_training_state": "training_state", "save_training_state": "training_state",
    "DistillConfig": "config", "SelectionConfig": "config", "MergingConfig": "config", "run_distill": "loop",
    "TeacherConfig": "teachers", "ProgrammaticTeacher": "teachers", "TransformersTeacher": "teachers",
    "make_teacher": "teachers", "complexity": "selection", "gaussian_weights": "selection", "select": "selection",
    "steps_for_tokens": "selection",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
