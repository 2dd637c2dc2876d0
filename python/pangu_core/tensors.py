"""Tensor interop: front-door checks shared by every part, and fast float casts in C++.

C++ receives torch CPU tensors and numpy arrays zero-copy (DLPack or the buffer protocol). The
checks here run first so that errors name the argument the user passed.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from pangu_core import _core

# The one dtype table of the Python layer: name (as torch spells it) -> torch dtype, and the
# safetensors code of each. Every part that takes a dtype by name looks it up here.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool, "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
}
SAFETENSORS_CODES: dict[torch.dtype, str] = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int8: "I8",
    torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
# The floating types the C++ core computes on (float32 accumulation for all three).
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT_DTYPE_NAMES = tuple(dtype_name for dtype_name, dtype in DTYPES.items() if dtype in FLOAT_DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return " or ".join(dtype_name(d) for d in dtypes)


def to_dtype(value: torch.dtype | str, name: str = "dtype", allowed: Iterable[torch.dtype] | None = None) -> torch.dtype:
    """A torch dtype from a torch dtype or its name ("bfloat16"); ``name`` is the argument in errors.

    Raises TypeError for other types or a dtype outside ``allowed`` (as check_tensor does for a
    tensor of the wrong dtype), ValueError for an unknown name.
    """
    allowed = tuple(allowed) if allowed is not None else tuple(DTYPES.values())
    if isinstance(value, str):
        dtype = DTYPES.get(value.removeprefix("torch."))
        if dtype is None:
            raise ValueError(f"{name}: unknown dtype name {value!r}; known: {', '.join(map(dtype_name, allowed))}")
    elif isinstance(value, torch.dtype):
        dtype = value
    else:
        raise TypeError(f"{name}: expected a torch.dtype or a dtype name such as 'bfloat16', got {type(value).__name__}")
    if dtype not in allowed:
        raise TypeError(f"{name}: expected {_dtype_names(allowed)}, got {dtype_name(dtype)}")
    return dtype


def safetensors_dtype(code: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype code ("BF16"); ValueError for codes we do not read."""
    for dtype, known in SAFETENSORS_CODES.items():
        if known == code:
            return dtype
    raise ValueError(f"safetensors dtype {code!r} is not supported; known: {', '.join(SAFETENSORS_CODES.values())}")


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def numel(shape: Iterable[int]) -> int:
    """Elements in a tensor of ``shape`` (1 for a scalar's empty shape), as a Python int."""
    return math.prod(int(s) for s in shape)


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


def cast(x: torch.Tensor, dtype: torch.dtype | str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Converts a CPU float tensor to ``dtype`` (float32 / float16 / bfloat16, or their names) in C++.

    Round to nearest even, bit-identical to ``x.to(dtype)`` (NaN payloads aside), multi-threaded
    and vectorised. ``out``, if given, must be a contiguous CPU tensor of ``dtype`` with as many
    elements as ``x``; it is written in place and returned. ``x`` is a torch tensor; for a numpy
    array use ``cast(torch.from_numpy(a), ...)``, which shares its memory.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    dtype = to_dtype(dtype, "dtype", FLOAT_DTYPES)
    x = x.detach().contiguous()
    if out is None:
        out = torch.empty(x.shape, dtype=dtype)
    else:
        check_tensor(out, "out", dtypes=(dtype,), contiguous=True)
        if out.numel() != x.numel():
            raise ValueError(f"out: expected {x.numel()} elements like x, got {out.numel()}")
    _core.common.convert(x, out)
    return out
