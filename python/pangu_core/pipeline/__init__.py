"""The main job: the whole Pangu Embedded recipe as one resumable run (`pangu-core pipeline`).

:mod:`.config` (:class:`~.config.PipelineConfig`: one config per stage and a seed), :mod:`.run`
(:func:`~.run.run_pipeline`: SFT -> distillation with merging -> RL -> dual system, each stage
skipped when it finished before with the same config hash), :mod:`.display` (one status line, the
stages' output in ``OUT/log.txt``) and :mod:`.report` (``report.json``, ``report.md``, the plots).

Names are re-exported here and imported on first use, so ``import pangu_core.pipeline`` stays light.
"""

from __future__ import annotations

from pangu_core._lazy import lazy_exports

_EXPORTS = {"PipelineConfig": "config", "load_config": "config", "run_pipeline": "run"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
