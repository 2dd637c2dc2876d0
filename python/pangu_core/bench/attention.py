"""`pangu-core bench attention`: our attention against torch in the same run, on CPU or a device.

Kernel cases: prefill and forward+backward report GFLOP/s (causal: half the square of matmul work),
decode the GB/s of K and V streamed from the cache. On CPU ours is our C++ flash attention and the
baseline torch SDPA; with ``device="cuda"`` or ``"npu"`` ours is the path pangu_core dispatches to
there and the baseline plain torch math attention (matmul, explicit bottom-right mask, softmax,
matmul). Every repetition times ours, the baseline and the ceiling operations in turn, so load from
other processes hits all alike; ours and the baseline report medians, the ceiling its best
repetition (an upper bound). Ceilings, measured in the same run at the same threads:
compute cases the fastest GEMM of the case's dtype (fp32: torch.mm and oneDNN; bf16: the larger of
the bf16 and fp32 GEMMs), decode the read bandwidth of torch.sum over as many bytes as K and V.
The model cases (generate_micro_ctx2k, sft_step_micro) live in :mod:`pangu_core.bench._attention_model`
(the underscore keeps it out of the benchmark registry).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from pangu_core import attention as attn
from pangu_core.bench.common import (MIN_REPEATS, interleaved_times, make_case, ratio_range, skipped_case,
                                     torch_threads)
from pangu_core.tensors import dtype_name

NAME = "attention"
DESCRIPTION = "flash attention (prefill, decode, fwd+bwd) vs torch; tiny Llama generate and SFT step, pangu vs sdpa"
DEVICES = ("cpu", "cuda", "npu")
GEMM_SIZES = (768, 1536)  # square GEMMs timed for the compute ceiling (768 fits the L2 of a core pair)


@dataclass(frozen=True)
class Case:
    """One kernel case: kind is prefill, decode or fwdbwd; q_len 1 for decode."""

    case: str
    kind: str
    dtype: torch.dtype
    heads: int
    kv_heads: int
    dim: int
    length: int  # sequence length (prefill, fwdbwd) or KV cache length (decode)


CASES = [
    Case("prefill_fp32_h32kv8_d128_s2048", "prefill", torch.float32, 32, 8, 128, 2048),
    Case("prefill_bf16_h32kv8_d128_s2048", "prefill", torch.bfloat16, 32, 8, 128, 2048),
    Case("prefill_fp32_h8kv8_d64_s2048", "prefill", torch.float32, 8, 8, 64, 2048),
    Case("decode_fp32_h32kv8_d128_kv16k", "decode", torch.float32, 32, 8, 128, 16384),
    Case("decode_bf16_h32kv8_d128_kv16k", "decode", torch.bfloat16, 32, 8, 128, 16384),
    Case("fwdbwd_fp32_h8kv8_d64_s1024", "fwdbwd", torch.float32, 8, 8, 64, 1024),
]


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench attention] {message}", file=sys.stderr, flush=True)


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    kind = device.partition(":")[0]
    if kind == "cuda":
        return torch.cuda.synchronize
    if kind == "npu":
        return torch.npu.synchronize  # type: ignore[attr-defined]  (torch_npu adds it)
    return lambda: None


def device_problem(device: str) -> str | None:
    """Why the cases cannot run on ``device`` (None when they can)."""
    from pangu_core.device import probe

    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and not index.isdigit()):
        raise ValueError(f"device: expected one of {', '.join(DEVICES)} (optionally ':N'), got {device!r}")
    info = probe(kind)
    if not info.available:
        return f"no {kind} device: {info.reason}"
    if index and int(index) >= info.count:
        return f"no {device}: only {info.count} {kind} device(s)"
    return None


def gemm_ceiling_fns(dtype: torch.dtype, device: str) -> list[tuple[str, float, Callable[[], object]]]:
    """(name, flops, fn) of the GEMMs whose best rate bounds a ``dtype`` compute case from above.

    fp32: torch.mm, and on CPU also oneDNN's fp32 matmul (torch.mm goes to MKL, which is slow on
    non-Intel CPUs); bf16/fp16: the same-dtype torch.mm plus every fp32 GEMM, so the ceiling is the
    larger of the two (a kernel may compute in fp32 where the CPU has no bf16 units).
    """
    out = []
    g = torch.Generator().manual_seed(0)
    for n in GEMM_SIZES:
        a = torch.randn(n, n, generator=g).to(device)
        b = torch.randn(n, n, generator=g).to(device)
        out.append((f"fp32 torch.mm {n}^3", 2.0 * n**3, lambda a=a, b=b: torch.mm(a, b)))
        if device == "cpu" and torch.backends.mkldnn.is_available():
            am, bm = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
            out.append((f"fp32 oneDNN matmul {n}^3", 2.0 * n**3,
                        lambda am=am, bm=bm: torch._C._nn.mkldnn_linear(am, bm, None)))
        if dtype != torch.float32:
            ah, bh = a.to(dtype), b.to(dtype)
            out.append((f"{dtype_name(dtype)} torch.mm {n}^3", 2.0 * n**3, lambda ah=ah, bh=bh: torch.mm(ah, bh)))
    return out


def read_ceiling_fns(nbytes: int, device: str) -> list[tuple[str, float, Callable[[], object]]]:
    """(name, bytes, fn) of reads of an fp32 buffer of ``nbytes`` (the bytes a decode case reads):
    torch.sum, torch.amax and torch.dot; the ceiling is the fastest."""
    buf = torch.ones(max(nbytes // 4, 1), dtype=torch.float32, device=device)
    size, label = float(buf.numel() * 4), f"{nbytes >> 20} MiB fp32"
    return [(f"read: torch.sum over {label}", size, lambda: buf.sum()),
            (f"read: torch.amax over {label}", size, lambda: buf.amax()),
            (f"read: torch.dot over {label} (same buffer twice)", size, lambda: torch.dot(buf, buf))]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain torch attention, bottom-right causal: softmax(q k^T / sqrt(d) + mask) v, GQA by repeating K/V."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    q_len, k_len = q.shape[2], k.shape[2]
    visible = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(diagonal=k_len - q_len)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def _sdpa(q, k, v, causal):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


def _inputs(c: Case, length: int, device: str):
    g = torch.Generator().manual_seed(0)
    q_len = 1 if c.kind == "decode" else length
    q = torch.randn(1, c.heads, q_len, c.dim, generator=g).to(device=device, dtype=c.dtype)
    k = torch.randn(1, c.kv_heads, length, c.dim, generator=g).to(device=device, dtype=c.dtype)
    v = torch.randn(1, c.kv_heads, length, c.dim, generator=g).to(device=device, dtype=c.dtype)
    return q, k, v


def baseline_name(device: str, threads: int) -> str:
    """The exact baseline of the kernel cases on ``device``."""
    if device == "cpu":
        return f"torch SDPA (F.scaled_dot_product_attention, is_causal, enable_gqa), {threads} threads"
    return f"torch math attention (matmul, explicit bottom-right mask, softmax, matmul) on {device}"


def run_case(c: Case, quick: bool, device: str = "cpu") -> dict:
    """Measures one kernel case (quick: half the prefill/fwdbwd lengths; decode keeps its cache larger than L3).

    torch runs with as many threads as pangu_core's pool (recorded in ``threads``).
    """
    with torch_threads() as threads:
        return _measure(c, quick, device, threads)


def _measure(c: Case, quick: bool, device: str, threads: int) -> dict:
    length = c.length // 2 if quick and c.kind != "decode" else c.length
    q, k, v = _inputs(c, length, device)
    causal = c.kind != "decode"
    repeats = MIN_REPEATS if quick else 7
    if device == "cpu":
        def reference(q, k, v):
            return _sdpa(q, k, v, causal)
    else:
        reference = math_attention
    if c.kind == "fwdbwd":
        for t in (q, k, v):
            t.requires_grad_()
        dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=c.dtype)

        def ours():
            torch.autograd.grad(attn.attention(q, k, v, causal=True), (q, k, v), dout)

        def theirs():
            torch.autograd.grad(reference(q, k, v), (q, k, v), dout)
    else:
        def ours():
            with torch.no_grad():
                attn.attention(q, k, v, causal=causal)

        def theirs():
            with torch.no_grad():
                reference(q, k, v)

    nbytes = 2 * k.numel() * k.element_size()
    ceilings = read_ceiling_fns(nbytes, device) if c.kind == "decode" else gemm_ceiling_fns(c.dtype, device)
    times = interleaved_times([ours, theirs] + [fn for _, _, fn in ceilings], repeats, sync=synchronizer(device))
    t_ours, t_base = statistics.median(times[0]), statistics.median(times[1])
    rates = [(work / min(t) / 1e9, name) for (name, work, _), t in zip(ceilings, times[2:])]
    ceiling_value, ceiling_name = max(rates)
    fields = dict(
        repeats=repeats, child_process=False, seconds_ours=t_ours, seconds_baseline=t_base, threads=threads,
        ratio_range=ratio_range(times[0], times[1]),  # both sides do the same work: a ratio of times
        device=device, backend=attn.backend_for(q.device).name,
        ceiling_candidates={name: rate for rate, name in rates},
        shape=dict(batch=1, heads=c.heads, kv_heads=c.kv_heads, head_dim=c.dim, q_len=q.shape[2], kv_len=length,
                   dtype=dtype_name(c.dtype), causal=causal),
    )
    base = baseline_name(device, threads)
    if c.kind == "decode":
        return make_case(c.case, "GB/s", nbytes / t_ours / 1e9, base, nbytes / t_base / 1e9,
                         ceiling=f"{ceiling_name}, {threads} threads, best repetition", ceiling_value=ceiling_value,
                         bytes_read=nbytes, **fields)
    flops = 4.0 * c.heads * q.shape[2] * length * c.dim / 2  # causal: half of the two matmuls
    if c.kind == "fwdbwd":
        flops *= 3.5  # backward: five matmuls to the forward's two
    return make_case(c.case, "GFLOP/s", flops / t_ours / 1e9, base, flops / t_base / 1e9,
                     ceiling=f"{ceiling_name} (fastest {dtype_name(c.dtype)} ceiling GEMM), {threads} threads, "
                             f"best repetition",
                     ceiling_value=ceiling_value, flops=flops, **fields)


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """The six kernel cases and the two model cases on ``device`` ("cpu", "cuda[:N]", "npu[:N]").

    Without the device every case is returned skipped, with the reason.
    """
    from pangu_core.bench import _attention_model as attention_model

    problem = device_problem(device)
    if problem is not None:
        out = [skipped_case(c.case, "GB/s" if c.kind == "decode" else "GFLOP/s", baseline_name(device, 0), problem)
               for c in CASES]
        out += [skipped_case(name, "tokens/s", attention_model.BASELINE, problem) for name in attention_model.CASE_NAMES]
        return out
    cases = []
    total = len(CASES) + len(attention_model.CASE_NAMES)
    for c in CASES:
        progress(f"case {len(cases) + 1}/{total}: {c.case} on {device}")
        cases.append(run_case(c, quick, device))
    for name in attention_model.CASE_NAMES:
        progress(f"case {len(cases) + 1}/{total}: {name} on {device}")
        cases.append(attention_model.run_case(name, quick, device))
    return cases
