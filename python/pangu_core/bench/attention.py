"""`pangu-core bench attention`: our CPU flash attention against torch SDPA in the same run.

Prefill and forward+backward report GFLOP/s (causal: half the square of matmul work), decode the
GB/s of K and V streamed from the cache. Ours and SDPA are timed alternately, repetition by
repetition, so load from other processes hits both alike; medians are reported. Ceilings measured
in the same run: fp32 GEMM GFLOP/s (compute) and memory-copy GB/s (bandwidth).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from pangu_core import attention as attn
from pangu_core.bench.common import MIN_REPEATS, gemm_gflops, make_case, memcpy_gbps

NAME = "attention"
DESCRIPTION = "CPU flash attention (prefill, decode, fwd+bwd) vs torch SDPA"


@dataclass(frozen=True)
class Case:
    """One benchmark case: kind is prefill, decode or fwdbwd; q_len 1 for decode."""

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


def _alternating_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each fn, timing them in turn within every repetition (after a warm-up)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(repeats, MIN_REPEATS)):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _sdpa(q, k, v, causal):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


def _run_case(c: Case, quick: bool, gemm: float, memcpy: float) -> dict:
    length = c.length // 2 if quick else c.length
    g = torch.Generator().manual_seed(0)
    q_len = 1 if c.kind == "decode" else length
    q = torch.randn(1, c.heads, q_len, c.dim, generator=g).to(c.dtype)
    k = torch.randn(1, c.kv_heads, length, c.dim, generator=g).to(c.dtype)
    v = torch.randn(1, c.kv_heads, length, c.dim, generator=g).to(c.dtype)
    causal = c.kind != "decode"
    repeats = MIN_REPEATS if quick else 7
    shape = dict(batch=1, heads=c.heads, kv_heads=c.kv_heads, head_dim=c.dim, q_len=q_len, kv_len=length,
                 dtype=str(c.dtype).removeprefix("torch."), causal=causal)
    if c.kind == "fwdbwd":
        q.requires_grad_()
        k.requires_grad_()
        v.requires_grad_()
        dout = torch.randn(q.shape, generator=g).to(c.dtype)

        def ours():
            torch.autograd.grad(attn.attention(q, k, v, causal=True), (q, k, v), dout)

        def theirs():
            torch.autograd.grad(_sdpa(q, k, v, True), (q, k, v), dout)
    else:
        def ours():
            with torch.no_grad():
                attn.attention(q, k, v, causal=causal)

        def theirs():
            with torch.no_grad():
                _sdpa(q, k, v, causal)

    t_ours, t_sdpa = _alternating_medians([ours, theirs], repeats)
    if c.kind == "decode":
        nbytes = 2 * k.numel() * k.element_size()
        return make_case(c.case, "GB/s", nbytes / t_ours / 1e9, "torch SDPA", nbytes / t_sdpa / 1e9,
                         ceiling="memory copy", ceiling_value=memcpy, seconds_ours=t_ours, seconds_baseline=t_sdpa,
                         shape=shape)
    flops = 4.0 * c.heads * q_len * length * c.dim / 2  # causal: half of the two matmuls
    if c.kind == "fwdbwd":
        flops *= 3.5  # backward: five matmuls to the forward's two
    return make_case(c.case, "GFLOP/s", flops / t_ours / 1e9, "torch SDPA", flops / t_sdpa / 1e9,
                     ceiling="fp32 GEMM", ceiling_value=gemm, seconds_ours=t_ours, seconds_baseline=t_sdpa,
                     shape=shape)


def run(quick: bool = False) -> list[dict]:
    """All six cases (quick: half the lengths, five repetitions)."""
    gemm = gemm_gflops(1024 if not quick else 768)
    memcpy = memcpy_gbps((256 if not quick else 128) << 20)
    cases = []
    for c in tqdm(CASES, desc="attention cases", leave=False):
        cases.append(_run_case(c, quick, gemm, memcpy))
    return cases
