"""Published weight layouts: what a publisher sends (names, shapes, dtypes) and whether a model fits.

A layout is a list of ``{"name", "shape", "dtype"}`` specs in state-dict order. It travels to
subscribers as JSON text (:func:`layout_text`, :func:`parse_layout_text`) and becomes the C++
FlatLayout (byte offsets and buckets) with :func:`flat_layout`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from pangu_core import _core
from pangu_core.tensors import DTYPES, FLOAT_DTYPES, check_tensor, dtype_name, numel


def state_of(source: Any, arg: str) -> dict[str, torch.Tensor]:
    """The named tensors of a module (its state dict) or of a mapping, checked; ``arg`` names it in errors.

    Tensors may live on any device; devices other than the CPU are staged through host memory by
    the publisher and subscriber.
    """
    if isinstance(source, torch.nn.Module):
        state = source.state_dict(keep_vars=False)
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        raise TypeError(f"{arg}: expected a torch.nn.Module or a mapping of name -> tensor, "
                        f"got {type(source).__name__}")
    if not state:
        raise ValueError(f"{arg}: expected at least one tensor, got an empty state dict")
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise TypeError(f"{arg}: expected string keys, got {name!r}")
        check_tensor(tensor, f"{arg}[{name!r}]", device=None)
    return state


def describe(source: Any, publish_dtype: str | None = None, *, arg: str = "source") -> list[dict[str, Any]]:
    """The published layout of a model or state dict: [{"name", "shape", "dtype"}] in order.

    ``dtype`` is the published dtype: ``publish_dtype`` (a float dtype name) for float tensors
    when given, else the tensor's own.
    """
    state = state_of(source, arg)
    target = DTYPES[publish_dtype] if publish_dtype is not None else None
    specs = []
    for name, tensor in state.items():
        dtype = target if target is not None and tensor.dtype in FLOAT_DTYPES else tensor.dtype
        specs.append({"name": name, "shape": list(tensor.shape), "dtype": dtype_name(dtype)})
    return specs


def check_compatible(published: list[dict[str, Any]], state: Mapping[str, torch.Tensor], arg: str = "target") -> None:
    """Raises a clear error when ``state`` cannot receive the ``published`` layout.

    KeyError names missing or unexpected tensors; ValueError a shape (or a non-contiguous CPU
    tensor, which cannot be written in place); TypeError a dtype.
    """
    names = [spec["name"] for spec in published]
    known = set(names)
    missing = [n for n in names if n not in state]
    extra = [n for n in state if n not in known]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        raise KeyError(f"{arg}: tensor names disagree with the publisher's model: " + ", ".join(parts))
    for spec in published:
        tensor = state[spec["name"]]
        where = f"{arg}[{spec['name']!r}]"
        if list(tensor.shape) != list(spec["shape"]):
            raise ValueError(f"{where}: expected shape {tuple(spec['shape'])} like the publisher, "
                             f"got {tuple(tensor.shape)}")
        if dtype_name(tensor.dtype) != spec["dtype"]:
            raise TypeError(f"{where}: expected {spec['dtype']} like the publisher, got {dtype_name(tensor.dtype)}")
        # Device tensors receive a copy from a host buffer, so only CPU tensors must be contiguous.
        if tensor.device.type == "cpu" and not tensor.is_contiguous():
            raise ValueError(f"{where}: expected a contiguous tensor to write in place")


def flat_layout(specs: list[dict[str, Any]], bucket_bytes: int) -> Any:
    """The C++ FlatLayout (64-byte aligned offsets, buckets of at most ``bucket_bytes``) of ``specs``."""
    numels = [numel(spec["shape"]) for spec in specs]
    return _core.sync.FlatLayout([s["name"] for s in specs], [s["dtype"] for s in specs], numels, bucket_bytes)


def layout_text(specs: list[dict[str, Any]]) -> str:
    """``specs`` as the JSON text stored beside the published versions."""
    return json.dumps({"format": 1, "tensors": specs}, separators=(",", ":"))


def parse_layout_text(text: str) -> list[dict[str, Any]]:
    """The specs of a layout written by :func:`layout_text`; ValueError for text that is not one."""
    try:
        doc = json.loads(text)
        specs = list(doc["tensors"])
        if not all(isinstance(s, dict) and {"name", "shape", "dtype"} <= set(s) for s in specs):
            raise TypeError("a spec lacks name, shape or dtype")
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"layout text: expected a published weight layout, got {text[:80]!r} ({error})") from None
    return specs


__all__ = ["describe", "check_compatible", "flat_layout", "layout_text", "parse_layout_text", "state_of"]
