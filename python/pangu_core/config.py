"""What every typed config dataclass of pangu_core shares: building from a mapping or a YAML file.

A config is a frozen dataclass that validates itself in ``__post_init__`` and reports every problem
at once; mixing in :class:`FromMapping` gives it ``from_dict`` (unknown keys are an error that lists
the known ones) and ``from_yaml``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, TypeVar

C = TypeVar("C", bound="FromMapping")


class FromMapping:
    """Mixin for config dataclasses: ``from_dict`` and ``from_yaml``."""

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Builds the config from a mapping; unknown keys raise ValueError naming the known ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"{cls.__name__}: expected a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        """Loads the config from a YAML file holding a mapping of its fields."""
        import yaml

        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{path}: expected a YAML mapping of {cls.__name__} fields, got {type(values).__name__}")
        return cls.from_dict(values)


def raise_problems(name: str, problems: list[str]) -> None:
    """Raises one ValueError listing every problem found in config ``name`` (nothing if none)."""
    if problems:
        raise ValueError(f"invalid {name}:\n  " + "\n  ".join(problems))
