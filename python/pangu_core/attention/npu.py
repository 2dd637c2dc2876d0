"""Attention on Ascend NPUs: torch_npu's fused operators or pangu_core's Ascend C kernel, plus the
kernel's tiling plan and its CPU simulation.

On an NPU, :func:`attention_bnsd` runs ``torch_npu.npu_fusion_attention`` in training (it has a
backward) and, in inference, ``torch_npu.npu_fused_infer_attention_score`` (backend ``"fused"``, the
default) or the Ascend C flash-attention kernel from kernels/ascend (backend ``"ascendc"``, only
where the package was built with the CANN toolkit). Choose with :func:`set_backend` or the
PANGU_NPU_ATTENTION environment variable. torch_npu is imported only when it is installed.

Everywhere, :func:`plan_tiling` returns the kernel's block sizes, on-chip buffer budgets and
per-core schedule, and :func:`simulate` runs that schedule on the CPU in float32, the way the kernel
updates its online softmax; CI tests both against torch SDPA.

Conventions: q (batch, heads, q_len, head_dim), k and v (batch, kv_heads, kv_len, head_dim), heads a
multiple of kv_heads (GQA); no sliding window. Causal masks align the last query with the last key: query i of a
sequence with kv length L sees keys 0 .. L - q_len + i. ``kv_lens`` (int, one per batch entry) marks
the real cache length of each sequence in a padded batch. Rows that see no key come out as zeros.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from pangu_core import _core, device
from pangu_core.attention.mask import visibility_mask
from pangu_core.config import Config, expect, is_number
from pangu_core.tensors import FLOAT_DTYPES, check_tensor, dtype_name

ENV_VAR = "PANGU_NPU_ATTENTION"
# torch_npu's compressed causal mask: the operators read a fixed 2048 x 2048 upper triangle.
_COMPRESSED_MASK_SIZE = 2048
# Installed beside the compiled core (also in editable installs, where this file stays in the source).
_OP_LIBRARY = Path(_core.__file__).with_name("libpangu_ascend_ops.so")
_INT_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True)
class AscendHardware(Config):
    """On-chip buffer sizes (bytes) and vector core count the tiling plans for.

    Defaults are the Atlas A2 (Ascend 910B) AI Core: 192 KiB UB, 512 KiB L1, 64 KiB L0A and L0B,
    128 KiB L0C, 48 vector cores.
    """

    # Unified buffer (vector unit scratch), bytes.
    ub_bytes: int = 192 * 1024
    # L1 buffer (staging for the cube unit), bytes.
    l1_bytes: int = 512 * 1024
    # L0A / L0B: the cube unit's left and right operand buffers, bytes.
    l0a_bytes: int = 64 * 1024
    l0b_bytes: int = 64 * 1024
    # L0C: the cube unit's accumulator buffer, bytes.
    l0c_bytes: int = 128 * 1024
    # AI cores the schedule spreads its work units over.
    num_cores: int = 48

    def validate(self) -> list[str]:
        problems: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if is_number(value):  # a wrong type is already reported by the field check
                expect(problems, value >= 1, f.name, "a positive int", value)
        return problems


# ---------------------------------------------------------------------------------------------
# Validation shared by every entry point.


def _check_bnsd(q: object, k: object, v: object, kv_lens: object, where: str | None) -> list[int] | None:
    """Checks q/k/v/kv_lens; returns kv_lens as a list of ints (or None)."""
    q = check_tensor(q, "q", dtypes=FLOAT_DTYPES, ndim=4, device=where)
    k = check_tensor(k, "k", dtypes=FLOAT_DTYPES, ndim=4, device=where)
    v = check_tensor(v, "v", dtypes=FLOAT_DTYPES, ndim=4, device=where)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected {dtype_name(q.dtype)} like q, got {dtype_name(t.dtype)}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected a tensor on {q.device} like q, got one on {t.device}")
    batch, heads, _, head_dim = q.shape
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k: expected shape ({batch}, kv_heads, kv_len, {head_dim}) to match q "
                         f"{tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected shape {tuple(k.shape)} like k, got {tuple(v.shape)}")
    kv_heads = k.shape[1]
    if kv_heads == 0 or heads % kv_heads != 0:
        raise ValueError(f"k: expected kv_heads dividing heads={heads}, got {kv_heads}")
    if q.shape[2] == 0 or k.shape[2] == 0 or head_dim == 0:
        raise ValueError(f"q: expected non-empty q_len, kv_len and head_dim, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if kv_lens is None:
        return None
    lens = check_tensor(kv_lens, "kv_lens", dtypes=_INT_DTYPES, ndim=1, device=None)
    if lens.shape[0] != batch:
        raise ValueError(f"kv_lens: expected {batch} lengths (one per batch entry), got {lens.shape[0]}")
    values = [int(x) for x in lens.detach().cpu().tolist()]
    kv_len = k.shape[2]
    bad = [x for x in values if x < 0 or x > kv_len]
    if bad:
        raise ValueError(f"kv_lens: expected values in [0, kv_len={kv_len}], got {bad[0]}")
    return values


def _check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a finite number > 0 or None, got {scale!r}")
    return float(scale)


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def visible_key_mask(q_len: int, kv_len: int, kv_lens: list[int] | None, causal: bool, batch: int,
                     device_: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (batch, 1, q_len, kv_len) mask, True where query i may see key j.

    Bottom-right causal alignment per sequence: j <= L - q_len + i with L its kv length
    (:func:`pangu_core.attention.visibility_mask` with kv_lens as a list and no window).
    """
    lens = None if kv_lens is None else torch.tensor(kv_lens, dtype=torch.int64)
    return visibility_mask(q_len, kv_len, causal=causal, kv_lens=lens, batch=batch, device=device_)


# ---------------------------------------------------------------------------------------------
# NPU availability and backends.


def is_available() -> bool:
    """True when torch_npu is importable and reports at least one NPU (never imports it otherwise)."""
    return device.probe("npu").available


def ascendc_built() -> bool:
    """True when this build carries the Ascend C kernel and its torch_npu operator library."""
    return bool(_core.build_info().get("ascend", False)) and _OP_LIBRARY.is_file()


def _require_npu() -> Any:
    info = device.probe("npu")
    if not info.available:
        raise RuntimeError(f"npu attention: not usable here: {info.reason}")
    return device._torch_npu()


def _empty_rows(q_len: int, kv_len: int, kv_lens: list[int] | None, causal: bool, batch: int) -> list[bool]:
    """Per batch entry: whether some query row sees no key (its output must be zeros)."""
    lens = kv_lens if kv_lens is not None else [kv_len] * batch
    return [length == 0 or (causal and length < q_len) for length in lens]


def _zero_empty_rows(out: torch.Tensor, kv_len: int, kv_lens: list[int] | None, causal: bool) -> torch.Tensor:
    batch, _, q_len, _ = out.shape
    if not any(_empty_rows(q_len, kv_len, kv_lens, causal, batch)):
        return out
    sees = visible_key_mask(q_len, kv_len, kv_lens, causal, batch, out.device).any(dim=-1, keepdim=True)
    return out.masked_fill(~sees, 0)


def _compressed_causal_mask(dev: torch.device) -> torch.Tensor:
    n = _COMPRESSED_MASK_SIZE
    return torch.triu(torch.ones(n, n, dtype=torch.bool, device=dev), diagonal=1)


def _fused_training(npu: Any, q, k, v, causal: bool, scale: float, kv_lens: list[int] | None) -> torch.Tensor:
    heads = q.shape[1]
    kwargs: dict[str, Any] = {"scale": scale, "keep_prob": 1.0}
    if kv_lens is not None:
        # Ragged caches: an explicit mask (True = masked) carries both the lengths and causality.
        masked = ~visible_key_mask(q.shape[2], k.shape[2], kv_lens, causal, q.shape[0], q.device)
        kwargs.update(atten_mask=masked, sparse_mode=0)
    elif causal:
        kwargs.update(atten_mask=_compressed_causal_mask(q.device), sparse_mode=3)  # rightDownCausal
    out = npu.npu_fusion_attention(q, k, v, heads, "BNSD", **kwargs)[0]
    return _zero_empty_rows(out, k.shape[2], kv_lens, causal)


def _fused_inference(npu: Any, q, k, v, causal: bool, scale: float, kv_lens: list[int] | None) -> torch.Tensor:
    if q.dtype == torch.float32:
        # The inference operator takes float16/bfloat16 only; the training one also takes float32.
        return _fused_training(npu, q, k, v, causal, scale, kv_lens)
    batch, heads, q_len, _ = q.shape
    kwargs: dict[str, Any] = {"num_heads": heads, "num_key_value_heads": k.shape[1], "scale": scale,
                              "input_layout": "BNSD"}
    if kv_lens is not None:
        kwargs["actual_seq_lengths_kv"] = kv_lens
    if q_len > 1 and causal:
        if kv_lens is None:
            kwargs.update(atten_mask=_compressed_causal_mask(q.device), sparse_mode=3)
        else:
            masked = ~visible_key_mask(q_len, k.shape[2], kv_lens, causal, batch, q.device)
            # inner_precise=2: high precision with the operator's correction for fully masked rows.
            kwargs.update(atten_mask=masked, sparse_mode=0, inner_precise=2)
    out = npu.npu_fused_infer_attention_score(q, k, v, **kwargs)[0]
    return _zero_empty_rows(out, k.shape[2], kv_lens, causal)


def _ascendc_forward(npu: Any, q, k, v, causal: bool, scale: float, kv_lens: list[int] | None) -> torch.Tensor:
    if not ascendc_built():
        raise RuntimeError("npu attention: backend 'ascendc' needs pangu_core built with the CANN toolkit "
                           "(PANGU_ENABLE_ASCEND=ON, ASCEND_HOME_PATH set); this build has no Ascend C kernel")
    if q.dtype == torch.float32:
        raise TypeError("q: the Ascend C kernel takes float16 or bfloat16, got float32 (use backend 'fused')")
    if not hasattr(torch.ops, "pangu_ascend") or not hasattr(torch.ops.pangu_ascend, "flash_attention_fwd"):
        torch.ops.load_library(str(_OP_LIBRARY))
    lens = None if kv_lens is None else torch.tensor(kv_lens, dtype=torch.int32)
    return torch.ops.pangu_ascend.flash_attention_fwd(q.contiguous(), k.contiguous(), v.contiguous(), lens, causal,
                                                      scale)


# Inference backends by name; training always uses npu_fusion_attention (it has a backward).
_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {"fused": _fused_inference, "ascendc": _ascendc_forward}
_backend: str | None = None


def backends() -> list[str]:
    """Names of the NPU inference backends."""
    return sorted(_BACKENDS)


def set_backend(name: str | None) -> None:
    """Chooses the NPU inference backend ("fused" or "ascendc"); None returns to the default.

    The default is PANGU_NPU_ATTENTION if set, else "fused".
    """
    global _backend
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(backends())}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The NPU inference backend in force now."""
    if _backend is not None:
        return _backend
    name = os.environ.get(ENV_VAR, "") or "fused"
    if name not in _BACKENDS:
        raise ValueError(f"{ENV_VAR}: expected one of {', '.join(backends())}, got {name!r}")
    return name


def attention_bnsd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None,
                   training: bool, kv_lens: torch.Tensor | None = None) -> torch.Tensor:
    """Attention on an NPU for (batch, heads, seq, head_dim) tensors; returns q's shape and dtype.

    training=True runs npu_fusion_attention (differentiable); otherwise the backend of
    :func:`get_backend`. scale=None means 1/sqrt(head_dim). Raises TypeError/ValueError for bad input
    and RuntimeError when no NPU with torch_npu is usable here.
    """
    causal = _check_flag(causal, "causal")
    training = _check_flag(training, "training")
    lens = _check_bnsd(q, k, v, kv_lens, where=None)
    scale_value = _check_scale(scale, q.shape[3])
    npu = _require_npu()
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.device.type != "npu":
            raise ValueError(f"{name}: expected a tensor on npu, got one on {t.device}")
    if training:
        return _fused_training(npu, q, k, v, causal, scale_value, lens)
    return _BACKENDS[get_backend()](npu, q, k, v, causal, scale_value, lens)


# ---------------------------------------------------------------------------------------------
# The Ascend C kernel's tiling and its CPU simulation (everywhere).


def plan_tiling(batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int, *,
                causal: bool = False, kv_lens: list[int] | None = None, dtype: torch.dtype = torch.float16,
                hardware: AscendHardware | None = None) -> dict[str, Any]:
    """The kernel's tiling for a problem: block sizes, UB/L1/L0 byte budgets and the schedule.

    Keys: block_q, block_kv, group, rows, q_blocks, kv_blocks, num_units, used_cores, chunks, ub (bytes
    per buffer and total), l1_bytes, l0a_bytes, l0b_bytes, l0c_bytes, core_begin (core c runs units
    core_begin[c]:core_begin[c+1]), unit_cost, units (batch, kv_head, q_begin, q_end, kv_len,
    kv_blocks) per unit, hardware, summary. Raises ValueError naming the bad argument.
    """
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float16, bfloat16 or float32, got {dtype}")
    hw = hardware or AscendHardware()
    for name, value in (("batch", batch), ("heads", heads), ("kv_heads", kv_heads), ("q_len", q_len),
                        ("kv_len", kv_len), ("head_dim", head_dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    causal = _check_flag(causal, "causal")
    lens = None if kv_lens is None else [int(x) for x in kv_lens]
    return dict(_core.ascend.plan(batch, heads, kv_heads, q_len, kv_len, head_dim, causal, lens,
                                  dtype_name(dtype), **asdict(hw)))


def simulate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None,
             kv_lens: torch.Tensor | None = None, hardware: AscendHardware | None = None,
             return_plan: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Runs the Ascend C kernel's tile schedule on the CPU (float32 arithmetic, q's dtype out).

    CPU tensors in float32, float16 or bfloat16. With return_plan=True also returns the plan
    (:func:`plan_tiling`'s dict) that was executed.
    """
    causal = _check_flag(causal, "causal")
    lens = _check_bnsd(q, k, v, kv_lens, where="cpu")
    scale_value = _check_scale(scale, q.shape[3])
    hw = hardware or AscendHardware()
    q, k, v = (t.detach().contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    plan = dict(_core.ascend.simulate(q, k, v, out, causal, scale_value, lens, **asdict(hw)))
    return (out, plan) if return_plan else out
