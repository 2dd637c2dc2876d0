"""The attention backend registry: named implementations and the device kinds each runs on.

A backend is a function ``fn(q, k, v, *, causal, scale, window, kv_lens) -> out`` over padded
(batch, heads, seq, head_dim) tensors whose arguments the dispatch layer has already checked
(``scale`` a positive float, ``window`` 0 for none, ``kv_lens`` None or a (batch,) int tensor).
The built-in ones ("cpu", "sdpa", "npu") are registered by :mod:`pangu_core.attention.builtin`;
:func:`register_backend` adds more. An unknown name lists the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

DEVICE_KINDS = ("cpu", "cuda", "npu")


class BackendFn(Protocol):
    """The call every backend implements (arguments already validated by the dispatch layer)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
                 window: int, kv_lens: torch.Tensor | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Backend:
    """A named attention implementation and the device kinds ("cpu", "cuda", "npu") it runs on."""

    name: str
    devices: tuple[str, ...]
    fn: BackendFn
    description: str = ""


_REGISTRY: dict[str, Backend] = {}


def register_backend(name: str, devices: tuple[str, ...], fn: BackendFn, description: str = "") -> None:
    """Adds (or replaces) the backend ``name`` that runs on ``devices`` ("cpu", "cuda", "npu")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")
    devices = tuple(devices)
    unknown = [d for d in devices if d not in DEVICE_KINDS]
    if not devices or unknown:
        raise ValueError(f"devices: expected a non-empty subset of {', '.join(DEVICE_KINDS)}, got {devices!r}")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    _REGISTRY[name] = Backend(name, devices, fn, description)


def backends() -> dict[str, Backend]:
    """Every registered backend by name (a copy)."""
    return dict(_REGISTRY)


def get_backend(name: str, source: str = "name") -> Backend:
    """The backend registered as ``name``; ValueError naming ``source`` and the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"{source}: unknown attention backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


__all__ = ["DEVICE_KINDS", "Backend", "BackendFn", "backends", "get_backend", "register_backend"]
