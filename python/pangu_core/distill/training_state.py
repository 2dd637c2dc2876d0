"""A trainer's resumable state in one safetensors file: tensors as tensors, the rest as JSON metadata.

Nothing is pickled, so loading a state runs no code. The state is the dict a trainer builds:
``optimizer`` (a torch optimizer's ``state_dict()``), ``torch_rng`` (a uint8 tensor) and any other
keys holding JSON data (numbers, strings, lists, dicts). Optimizer moments are stored as tensors
named ``optimizer.<param index>.<name>``; JSON keeps floats exactly, so a loaded state equals the
saved one bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_METADATA_KEY = "state"


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Writes ``state`` (with ``optimizer`` and ``torch_rng`` entries, the rest JSON data) to ``path``."""
    from safetensors.torch import save_file

    tensors = {"torch_rng": state["torch_rng"].detach().cpu().contiguous()}
    plain = {key: value for key, value in state.items() if key not in ("torch_rng", "optimizer")}
    plain["optimizer_param_groups"] = state["optimizer"]["param_groups"]
    plain["optimizer_values"] = {}
    for param, values in state["optimizer"]["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["optimizer_values"].setdefault(str(param), {})[name] = value
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(plain)})


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Reads what :func:`save_training_state` wrote, as the same dict (tuples come back as lists)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if _METADATA_KEY not in metadata:
            raise ValueError(f"path: {str(path)!r} is a safetensors file without a training state")
        state = json.loads(metadata[_METADATA_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    moments: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, param, key = name.split(".", 2)
            moments.setdefault(int(param), {})[key] = tensor
    for param, values in state.pop("optimizer_values").items():
        moments.setdefault(int(param), {}).update(values)
    state["optimizer"] = {"state": dict(sorted(moments.items())), "param_groups": state.pop("optimizer_param_groups")}
    state["torch_rng"] = tensors["torch_rng"]
    return state
