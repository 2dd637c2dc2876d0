"""Which accelerators exist (cpu, cuda, npu), choosing one, and moving modules and tensors to it.

torch_npu is imported only when it is installed, and only when NPUs are asked about. The choice is
``auto`` (npu, then cuda, then cpu) unless forced with the PANGU_DEVICE environment variable or an
explicit argument ("cpu", "cuda", "cuda:1", "npu", "npu:0").
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import TypeVar

import torch

KINDS = ("cpu", "cuda", "npu")
ENV_VAR = "PANGU_DEVICE"

T = TypeVar("T", torch.Tensor, torch.nn.Module)


@dataclass(frozen=True)
class DeviceInfo:
    """One kind of device: whether it is usable here, how many there are, and why not if absent."""

    kind: str
    available: bool
    count: int
    reason: str = ""


@functools.lru_cache(maxsize=1)
def _torch_npu():
    """The torch_npu module, or None when it is not installed (never imported otherwise)."""
    if importlib.util.find_spec("torch_npu") is None:
        return None
    return importlib.import_module("torch_npu")


def npu_module_installed() -> bool:
    """True when torch_npu can be imported (without importing it)."""
    return importlib.util.find_spec("torch_npu") is not None


def probe(kind: str) -> DeviceInfo:
    """Reports whether ``kind`` ("cpu", "cuda" or "npu") is usable here."""
    if kind == "cpu":
        return DeviceInfo("cpu", True, 1)
    if kind == "cuda":
        if not torch.cuda.is_available():
            return DeviceInfo("cuda", False, 0, "torch.cuda.is_available() is False")
        return DeviceInfo("cuda", True, torch.cuda.device_count())
    if kind == "npu":
        if not npu_module_installed():
            return DeviceInfo("npu", False, 0, "torch_npu is not installed")
        _torch_npu()
        npu = getattr(torch, "npu", None)
        if npu is None or not npu.is_available():
            return DeviceInfo("npu", False, 0, "torch_npu is installed but reports no NPU")
        return DeviceInfo("npu", True, npu.device_count())
    raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def available() -> list[DeviceInfo]:
    """Every kind, usable or not, in preference order npu, cuda, cpu."""
    return [probe(k) for k in ("npu", "cuda", "cpu")]


def _parse(spec: str, source: str) -> tuple[str, int | None]:
    kind, _, index = spec.strip().lower().partition(":")
    if kind not in KINDS + ("auto",):
        raise ValueError(f"{source}: expected 'auto', 'cpu', 'cuda[:N]' or 'npu[:N]', got {spec!r}")
    if not index:
        return kind, None
    if kind in ("cpu", "auto") or not index.isdigit():
        raise ValueError(f"{source}: bad device index in {spec!r}")
    return kind, int(index)


def select(spec: str | torch.device | None = None) -> torch.device:
    """Chooses the device to run on.

    ``spec`` wins if given; else PANGU_DEVICE; else "auto" (the first usable of npu, cuda, cpu).
    A forced device that is not usable raises RuntimeError saying why.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    source = "device"
    if spec is None:
        spec = os.environ.get(ENV_VAR, "auto") or "auto"
        source = ENV_VAR
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a str or torch.device, got {type(spec).__name__}")
    kind, index = _parse(spec, source)
    if kind == "auto":
        for info in available():
            if info.available:
                return torch.device(info.kind, 0) if info.kind != "cpu" else torch.device("cpu")
        return torch.device("cpu")
    info = probe(kind)
    if not info.available:
        raise RuntimeError(f"{source}: {kind} was requested but is not usable: {info.reason}")
    if kind == "cpu":
        return torch.device("cpu")
    index = 0 if index is None else index
    if index >= info.count:
        raise RuntimeError(f"{source}: {kind}:{index} requested but only {info.count} {kind} device(s) exist")
    return torch.device(kind, index)


def move(obj: T, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> T:
    """Moves a tensor or module to ``device`` (resolved by :func:`select`), optionally casting."""
    if not isinstance(obj, (torch.Tensor, torch.nn.Module)):
        raise TypeError(f"obj: expected a torch.Tensor or torch.nn.Module, got {type(obj).__name__}")
    target = select(device)
    if dtype is None:
        return obj.to(target)
    return obj.to(device=target, dtype=dtype)
