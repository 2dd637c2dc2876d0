"""Checkpoint merging: the merge config (mergekit YAML), the method registry, in-memory and streaming
folder merges, and the ``pangu-core merge`` command.

Modules, each importing only those above it (none imports this package's ``__init__``):

* :mod:`~pangu_core.merge.registry`: :class:`MergeMethod` entries by name (``linear``,
  ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``, ``slerp``).
* :mod:`~pangu_core.merge.mergekit_yaml` and :mod:`~pangu_core.merge.config`: :class:`MergeConfig`
  and its parts, in mergekit's YAML shape.
* :mod:`~pangu_core.merge.in_memory`: one tensor, one named tensor, whole state dicts (C++ kernels,
  float32 accumulation, GIL released).
* :mod:`~pangu_core.merge.checkpoint`: safetensors checkpoints (mapped reads, loads, saves, digests).
* :mod:`~pangu_core.merge.files`: streaming, atomic merges of checkpoint folders.
* :mod:`~pangu_core.merge.cli`: ``pangu-core merge CONFIG.yaml --out DIR``.

A config's ``dtype`` is the OUTPUT dtype; accumulation is always float32 (mergekit computes in its
``dtype``, so bfloat16 TIES results differ from mergekit's by more than one ulp in places).
"""

from __future__ import annotations

from pangu_core.merge.checkpoint import (INDEX_NAME, Checkpoint, file_sha256, file_xxh64, load_checkpoint,
                                         plan_shards, save_checkpoint)
from pangu_core.merge.config import INPUT_HASHES, CopyRule, MergeConfig, ModelSpec, Override
from pangu_core.merge.files import RECORD_NAME, merge_checkpoints
from pangu_core.merge.in_memory import check_same_tensors, merge_one, merge_state_dicts, merge_tensor, tensor_id_of
from pangu_core.merge.registry import MergeMethod, get_method, methods, register_method
from pangu_core.tensors import DTYPES  # the one dtype table (kept here for code that imported it from merge)

__all__ = [
    "MergeMethod", "ModelSpec", "Override", "CopyRule", "MergeConfig", "register_method", "get_method", "methods",
    "merge_tensor", "merge_one", "merge_state_dicts", "merge_checkpoints", "check_same_tensors", "tensor_id_of",
    "DTYPES", "INPUT_HASHES", "Checkpoint", "load_checkpoint", "save_checkpoint", "plan_shards", "file_sha256",
    "file_xxh64", "INDEX_NAME", "RECORD_NAME",
]
