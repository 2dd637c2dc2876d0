"""Tensor interop: front-door checks shared by every part, and fast float casts in C++.

C++ receives torch CPU tensors and numpy arrays zero-copy (DLPack or the buffer protocol). The
checks here run first so that errors name the argument the user passed.
"""

from __future__ import annotations

from typing import Iterable

import torch

from pangu_core import _core

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return " or ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    value: object,
    name: str,
    *,
    dtypes: Iterable[torch.dtype] | None = None,
    ndim: int | None = None,
    device: str | None = "cpu",
    contiguous: bool = False,
) -> torch.Tensor:
    """Checks that ``value`` is a torch tensor with the given properties; returns it.

    Raises TypeError (not a tensor, wrong dtype) or ValueError (wrong ndim, device, layout), with a
    message that starts with ``name``.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if value.dtype not in dtypes:
            raise TypeError(f"{name}: expected {_dtype_names(dtypes)}, got {str(value.dtype).removeprefix('torch.')}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got {value.dim()} with shape {tuple(value.shape)}")
    if device is not None and value.device.type != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {value.device}")
    if contiguous and not value.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous()), got strides {value.stride()}")
    return value


def cast(x: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """Converts a CPU float tensor to ``dtype`` (float32 / float16 / bfloat16) in C++.

    Round to nearest even, bit-identical to ``x.to(dtype)`` (NaN payloads aside), multi-threaded
    and vectorised. ``out``, if given, must be a contiguous CPU tensor of ``dtype`` with as many
    elements as ``x``; it is written in place and returned.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected {_dtype_names(FLOAT_DTYPES)}, got {dtype}")
    x = x.detach().contiguous()
    if out is None:
        out = torch.empty(x.shape, dtype=dtype)
    else:
        check_tensor(out, "out", dtypes=(dtype,), contiguous=True)
        if out.numel() != x.numel():
            raise ValueError(f"out: expected {x.numel()} elements like x, got {out.numel()}")
    _core.common.convert(x, out)
    return out
