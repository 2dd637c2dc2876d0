"""The typed configuration of a `pangu-core pipeline` run, and its built-in YAML files.

A pipeline config holds one full config per stage (``sft``: :class:`SFTRunConfig`, ``distill``:
:class:`DistillConfig`, ``rl``: :class:`RLConfig`, ``dual``: :class:`DualConfig`) and a ``seed`` that
replaces every stage's seed. In YAML a stage section may start from a stage's built-in or another
YAML file and change a few fields::

    sft:
      base: sft_default          # a built-in name, or a YAML path (relative to this file)
      trainer: {max_steps: 3000} # mappings are merged key by key; other values replace the base's

A section without ``base`` (or left out) changes the built-in ``pipeline_default.yaml``'s section
for its stage, so ``rl: {steps: 80}`` is the default pipeline with 80 RL steps. Every stage is
evaluated on one test split, so the stages must agree on ``levels``,
``test_per_level``, ``test_share`` and ``data_seed``; a disagreement is a config error naming the
stage and the field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pangu_core.config import Config, ConfigError, _locate, expect, load_yaml
from pangu_core.distill.config import DistillConfig
from pangu_core.distill.config import builtin_config as distill_builtin
from pangu_core.distill.sft_cli import CONFIG_DIR as SFT_CONFIG_DIR
from pangu_core.distill.sft_cli import SFTRunConfig
from pangu_core.dual.config import DualConfig
from pangu_core.dual.config import builtin_config as dual_builtin
from pangu_core.rl.config import RLConfig
from pangu_core.rl.config import builtin_config as rl_builtin
from pangu_core.runs import builtin_yaml

CONFIG_DIR = Path(__file__).parent / "configs"
STAGES = ("sft", "distill", "rl", "dual")
# The fields every stage's test split is made of; they must be equal across the stages.
SPLIT_FIELDS = ("levels", "test_per_level", "test_share", "data_seed")
_BUILTINS = {"sft": lambda name: builtin_yaml(SFT_CONFIG_DIR, name, "sft"), "distill": distill_builtin,
             "rl": rl_builtin, "dual": dual_builtin}


@dataclass(frozen=True)
class PipelineConfig(Config):
    """One `pangu-core pipeline` run: SFT -> distillation -> RL -> dual system."""

    # Seed of every stage (SFT's trainer.seed, the seed of distill, rl and dual). The test split
    # and the generated data stay those of each stage's data_seed.
    seed: int = 0
    # The stages' configs (see each stage's built-in YAML for its fields).
    sft: SFTRunConfig = field(default_factory=SFTRunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    dual: DualConfig = field(default_factory=DualConfig)

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.seed >= 0, "seed", "an int >= 0", self.seed)
        first = self.sft
        for stage in STAGES[1:]:
            config = getattr(self, stage)
            for name in SPLIT_FIELDS:
                mine, theirs = getattr(config, name), getattr(first, name)
                if mine != theirs:
                    shown = list(theirs) if isinstance(theirs, tuple) else theirs
                    expect(problems, False, f"{stage}.{name}", f"sft.{name} ({shown}): every stage is evaluated "
                           "on one test split", list(mine) if isinstance(mine, tuple) else mine)
        return problems

    def stage(self, name: str) -> Config:
        """The config stage ``name`` runs with: this config's section with the pipeline's seed in place."""
        if name not in STAGES:
            raise KeyError(f"stage: unknown stage {name!r}; known: {', '.join(STAGES)}")
        config = getattr(self, name)
        if name == "sft":
            return config.replace(trainer=config.trainer.replace(seed=self.seed))
        return config.replace(seed=self.seed)


def builtin_config(name: str) -> Path:
    """Path of a built-in pipeline YAML (``pipeline_default``, ``pipeline_quick``)."""
    return builtin_yaml(CONFIG_DIR, name, "pipeline")


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: mappings merged key by key, everything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _section(stage: str, section: Any, folder: Path, problems: list[str], defaults: bool = True) -> Any:
    """A stage section with its ``base`` read and the section's own keys merged over it; a section
    without ``base`` is merged over the default pipeline's section for the stage (``defaults``)."""
    if not isinstance(section, Mapping):
        return section
    changes = {key: value for key, value in section.items() if key != "base"}
    if "base" not in section:
        if not defaults:
            problems.append(f"{stage}.base: the built-in pipeline_default.yaml must name a base for every stage")
            return changes
        default = builtin_config("pipeline_default")
        data, _ = load_yaml(default)
        return _merge(_section(stage, data[stage], default.parent, problems, defaults=False), changes)
    base = section["base"]
    if not isinstance(base, str) or not base:
        problems.append(f"{stage}.base: expected a built-in config name or a YAML path, got {base!r}")
        return changes
    path = folder / base if base.endswith((".yaml", ".yml")) else None
    try:
        path = path or _BUILTINS[stage](base)
        data, _ = load_yaml(path)
    except (FileNotFoundError, ConfigError) as error:
        text = error.one_line() if isinstance(error, ConfigError) else str(error)
        problems.append(f"{stage}.base: {text}")
        return changes
    if not isinstance(data, Mapping):
        problems.append(f"{stage}.base: {path} does not hold a mapping of {stage} fields")
        return changes
    return _merge(dict(data), changes)


def load_config(path: str | Path) -> PipelineConfig:
    """Reads a pipeline YAML, resolving each stage's ``base``; problems name the file and the line."""
    path = Path(path)
    data, lines = load_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError("PipelineConfig", [f"{path}: expected a mapping of PipelineConfig fields"])
    problems: list[str] = []
    data = {**{stage: {} for stage in STAGES}, **data}
    resolved = {key: _section(key, value, path.parent, problems) if key in STAGES else value
                for key, value in data.items()}
    if problems:
        raise ConfigError("PipelineConfig", [_locate(p, path, lines) for p in problems])
    try:
        return PipelineConfig.from_dict(resolved)
    except ConfigError as error:
        raise ConfigError("PipelineConfig", [_locate(p, path, lines) for p in error.problems]) from None
