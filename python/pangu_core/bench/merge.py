"""`pangu-core bench merge`: checkpoint merging, in memory against torch ops and from files against mergekit.

In-memory cases count the bytes each method really moves (linear: N models read + 1 output
written; TIES: base + N models read + 1 written) per second and compare with a memory-copy ceiling
measured in the same run; the torch baselines run with torch.set_num_threads equal to pangu_core's
thread count, interleaved with ours. File cases time whole merges of synthetic sharded bf16
Llama-shaped checkpoints (warm page cache), one merge per child process, ours and mergekit
alternating; each child reports its own peak RSS (VmHWM), and both outputs must agree within
rounding.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pangu_core.bench.common import (MIN_REPEATS, interleaved_medians, make_case, memcpy_gbps, ratio_range,
                                     torch_threads)
from pangu_core.tensors import numel as _numel

NAME = "merge"
DESCRIPTION = "checkpoint merge kernels (in memory vs torch ops) and streaming file merges (vs mergekit)"
N_MODELS = 3


def _progress(message: str) -> None:
    print(f"[bench merge] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# in memory


def _state_dicts(total_bytes: int, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    numel = min(4 << 20, total_bytes // 8)  # 8 MB bf16 tensors (smaller when quick)
    tensors = max(1, total_bytes // (2 * numel))
    g = torch.Generator().manual_seed(seed)
    base = {f"t{i}": torch.randn(numel, generator=g).to(torch.bfloat16) for i in range(tensors)}
    out = [base]
    for _ in range(count):
        out.append({k: (v.float() + 0.01 * torch.randn(numel, generator=g)).to(torch.bfloat16) for k, v in base.items()})
    return out


def _torch_linear(models: list[dict[str, torch.Tensor]], weights: list[float],
                  out: dict[str, torch.Tensor], scratch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted mean in torch: float32 accumulation in ``scratch`` (one flat buffer reused for
    every tensor; bf16 inputs are added without float copies), then one cast into ``out``."""
    total = sum(weights)
    for name in models[0]:
        acc = scratch[:models[0][name].numel()].view(models[0][name].shape)
        torch.mul(models[0][name], weights[0], out=acc)
        for m, w in zip(models[1:], weights[1:]):
            acc.add_(m[name], alpha=w)
        out[name].copy_(acc.div_(total))
    return out


def _torch_ties(base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]], density: float) -> dict[str, torch.Tensor]:
    out = {}
    for name, b in base.items():
        b32 = b.float()
        deltas = []
        for m in models:
            d = m[name].float() - b32
            k = int(density * d.numel())
            threshold = d.abs().kthvalue(d.numel() - k + 1).values
            deltas.append(torch.where(d.abs() >= threshold, d, 0.0))
        stacked = torch.stack(deltas)
        elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
        agree = stacked.sign() == elected
        mixed = (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
        out[name] = (b32 + mixed).to(torch.bfloat16)
    return out


def inmem_sides(method: str, base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]]
                ) -> tuple[Callable[[], dict[str, torch.Tensor]], Callable[[], dict[str, torch.Tensor]], int]:
    """(ours, baseline, streams) for one in-memory method: each side returns its merged state
    dict (ours writes into outputs allocated once); ``streams`` counts the state-dict-sized
    arrays each merge reads plus the one it writes."""
    from pangu_core.merge import MergeConfig, ModelSpec, merge_one

    names = {f"m{i}": m for i, m in enumerate(models)}
    if method == "ties":
        names["base"] = base
    config = MergeConfig(method=method, base_model=None if method == "linear" else "base", density=0.5,
                         models=tuple(ModelSpec(f"m{i}") for i in range(len(models))))
    outs = {k: torch.empty_like(v) for k, v in base.items()}

    def ours() -> dict[str, torch.Tensor]:
        for k in base:
            merge_one(config, k, {s: d[k] for s, d in names.items()}, out=outs[k])
        return outs

    if method == "linear":
        theirs = {k: torch.empty_like(v) for k, v in base.items()}
        scratch = torch.empty(max(v.numel() for v in base.values()), dtype=torch.float32)

        def baseline() -> dict[str, torch.Tensor]:
            return _torch_linear(models, [1.0] * len(models), theirs, scratch)
    else:
        def baseline() -> dict[str, torch.Tensor]:
            return _torch_ties(base, models, 0.5)
    return ours, baseline, len(names) + 1


def _inmem_cases(quick: bool, ceiling: float, threads: int) -> list[dict[str, Any]]:
    size = (4 << 20) if quick else (256 << 20)
    dicts = _state_dicts(size, N_MODELS)
    base, models = dicts[0], dicts[1:]
    elements = sum(t.numel() for t in base.values())
    cases = []
    for method in ("linear", "ties"):
        case = f"inmem_{method}_bf16_n3"
        _progress(f"{case} ...")
        ours, baseline, streams = inmem_sides(method, base, models)
        with torch_threads(threads):
            ours_s, base_s, spread = interleaved_medians(ours, baseline)
            reference = baseline()
        mine = ours()
        diff = max(float((mine[k].float() - reference[k].float()).abs().max()) for k in base)
        moved = streams * 2 * elements  # bf16: 2 bytes per element per stream

        def gbps(seconds: float) -> float:
            return moved / seconds / 1e9

        cases.append(make_case(
            case, "GB/s", gbps(ours_s), f"torch ops (float32 accumulate), {threads} torch threads", gbps(base_s),
            ceiling="memory copy", ceiling_value=ceiling, bytes_per_model_mb=2 * elements / 2**20,
            streams_read_written=streams, bytes_moved=moved, max_abs_diff_vs_baseline=diff,
            ours_seconds=ours_s, baseline_seconds=base_s, threads=threads, repeats=MIN_REPEATS,
            child_process=False, ratio_range=spread,
            notes=f"GB/s = {streams} x bytes per model / s on both sides ({streams - 1} state dicts read, "
                  "1 written); ceiling: torch copy_ of float32 at the same threads counting read + "
                  "written bytes; ours and the linear baseline write into preallocated outputs, the TIES "
                  "baseline (kthvalue threshold, sign election, disjoint mean) allocates its own"))
        _progress(f"{case}: ours {gbps(ours_s):.2f} GB/s, baseline {gbps(base_s):.2f} GB/s")
    return cases


# ---------------------------------------------------------------------------------------------
# files


def _llama_config(quick: bool) -> dict[str, Any]:
    if quick:  # about 5M parameters: 10 MB in bf16
        hidden, inter, layers, vocab = 256, 688, 2, 4000
    else:  # about 84M parameters: 161 MiB in bf16, so that mergekit's repetitions fit the suite's time
        hidden, inter, layers, vocab = 1024, 2816, 4, 16000
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": hidden // 128,
            "num_key_value_heads": hidden // 128, "vocab_size": vocab, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}


def _llama_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,),
              "lm_head.weight": (c["vocab_size"], h)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (h, h)
        shapes[p + "mlp.gate_proj.weight"] = (i, h)
        shapes[p + "mlp.up_proj.weight"] = (i, h)
        shapes[p + "mlp.down_proj.weight"] = (h, i)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    return shapes


def _write_checkpoints(root: Path, quick: bool) -> list[str]:
    from pangu_core.merge import save_checkpoint

    config = _llama_config(quick)
    shapes = _llama_shapes(config)
    g = torch.Generator().manual_seed(1)
    paths = []
    base = {n: (0.02 * torch.randn(s, generator=g)).to(torch.bfloat16) for n, s in shapes.items()}
    for index in range(N_MODELS + 1):
        sd = base if index == 0 else {n: (t.float() + 0.002 * torch.randn(t.shape, generator=g)).to(torch.bfloat16)
                                      for n, t in base.items()}
        path = root / f"model{index}"
        save_checkpoint(sd, path, max_shard_bytes=(4 << 20) if quick else (64 << 20))
        (path / "config.json").write_text(json.dumps(config))
        paths.append(str(path))
        del sd
    return paths


def _yaml(method: str, paths: list[str]) -> dict[str, Any]:
    models = paths[1:]
    doc: dict[str, Any] = {"merge_method": method, "dtype": "float32", "out_dtype": "bfloat16",
                           "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models]}
    if method == "ties":
        doc["base_model"] = paths[0]
        doc["parameters"] = {"density": 0.5, "normalize": True}
    else:
        doc["parameters"] = {"normalize": True}
    return doc


_CHILD = r"""
import json, shutil, sys, time
def vm_hwm_mb():  # peak RSS of this process image (fresh at exec, unlike ru_maxrss, which a fork inherits)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
kind, config_path, out, repeats, warmup, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
threads = int(sys.argv[7])
import torch, yaml
import pangu_core
torch.set_num_threads(threads)  # both sides at the same thread count
pangu_core.set_num_threads(threads)
doc = yaml.safe_load(open(config_path))
if kind == "ours":
    from pangu_core.merge import MergeConfig, merge_checkpoints
    config = MergeConfig.from_dict({k: v for k, v in doc.items() if k != "dtype"})
    def merge():
        merge_checkpoints(config, out, overwrite=True, progress=False, durable=False)
else:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    config = MergeConfiguration.model_validate(doc)
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, lazy_unpickle=True,
                           out_shard_size=400 << 20)
    def merge():
        run_merge(config, out, options=options)
rss_before = vm_hwm_mb()
seconds = []
for i in range(warmup + repeats):  # warm-up runs fill the page cache and are not timed
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    merge()
    if i >= warmup:
        seconds.append(time.perf_counter() - start)
    if sum(seconds) > budget:  # a very slow baseline: fewer repeats (reported), not hours
        break
print(json.dumps({"seconds": seconds, "peak_rss_mb": vm_hwm_mb(), "rss_before_mb": rss_before}))
"""


def _child(kind: str, config_path: str, out: str, repeats: int, warmup: int, budget: float,
           threads: int) -> dict[str, Any]:
    """Runs up to ``repeats`` timed merges (after ``warmup``) in a fresh process, stopping once they
    took ``budget`` seconds; the process's peak RSS covers them all."""
    result = subprocess.run([sys.executable, "-c", _CHILD, kind, config_path, out, str(repeats), str(warmup),
                             str(budget), str(threads)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} merge failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _compare(ours: str, theirs: str, base: str | None, model_paths: list[str]) -> dict[str, Any]:
    """How far two merged checkpoints are apart. With a base (TIES), entries whose delta magnitude
    equals a model's k-th magnitude are counted apart: top-k may keep any of several tied entries
    (mergekit by argsort order, we by lowest index), and bf16 deltas tie often."""
    from pangu_core import _core
    from pangu_core.merge import load_checkpoint

    a, b = load_checkpoint(ours), load_checkpoint(theirs)
    if set(a) != set(b):
        return {"outputs_equal_within_rounding": False, "name_mismatch": sorted(set(a) ^ set(b))[:5]}
    models = [load_checkpoint(p) for p in model_paths] if base else []
    base_sd = load_checkpoint(base) if base else {}
    far, far_untied, total, worst = 0, 0, 0, 0.0
    for k in a:
        x, y = a[k].float(), b[k].float()
        ulp = torch.maximum(x.abs(), y.abs()) * 2.0**-7 + 1e-30  # one bf16 ulp, generously
        bad = (x - y).abs() > ulp
        far += int(bad.sum())
        if base:
            tied = torch.zeros_like(bad)
            for m in models:
                k_keep = int(0.5 * x.numel())
                if 0 < k_keep < x.numel():
                    value = _core.merge.kth_magnitude(base_sd[k], m[k], k_keep)[0]
                    tied |= (m[k].float() - base_sd[k].float()).abs() == value
            far_untied += int((bad & ~tied).sum())
        total += x.numel()
        worst = max(worst, float((x - y).abs().max()))
    out = {"elements_beyond_one_ulp": far, "fraction_beyond_one_ulp": far / total, "max_abs_diff": worst}
    if base:
        out["elements_beyond_one_ulp_outside_threshold_ties"] = far_untied
        out["outputs_equal_within_rounding"] = far_untied == 0
    else:
        out["outputs_equal_within_rounding"] = far == 0
    return out


def _compare_outputs(root: Path, method: str, paths: list[str]) -> dict[str, Any]:
    return _compare(str(root / "out_ours"), str(root / "out_mergekit"), paths[0] if method == "ties" else None, paths[1:])


def _mergekit_available() -> str | None:
    try:
        import mergekit  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: compare with torch ops
        return f"mergekit unavailable ({type(exc).__name__}: {exc})"
    return None


def _interleaved_children(kinds: list[str], config_path: str, root: Path, rounds: int, warmup: int,
                          budget: float, case: str, threads: int) -> dict[str, dict[str, Any]]:
    """One merge per child process, kinds alternating (ours, mergekit, ours, ...), ``warmup`` untimed
    rounds first; stops early (fewer repeats, reported) once the rounds took ``budget`` seconds."""
    runs = {kind: {"seconds": [], "peak_rss_mb": 0.0, "rss_before_mb": 0.0} for kind in kinds}
    spent = 0.0
    for i in range(warmup + rounds):
        for kind in kinds:
            got = _child(kind, config_path, str(root / f"out_{kind}"), 1, 0, float("inf"), threads)
            spent += got["seconds"][0]
            if i >= warmup:
                runs[kind]["seconds"] += got["seconds"]
            runs[kind]["peak_rss_mb"] = max(runs[kind]["peak_rss_mb"], got["peak_rss_mb"])
            runs[kind]["rss_before_mb"] = max(runs[kind]["rss_before_mb"], got["rss_before_mb"])
        if i >= warmup:
            _progress(f"{case}: round {i - warmup + 1}/{rounds}: "
                      + ", ".join(f"{k} {runs[k]['seconds'][-1]:.2f} s" for k in kinds))
        if spent > budget and i >= warmup + 2:  # at least three timed rounds
            break
    return runs


def _file_cases(quick: bool, threads: int) -> list[dict[str, Any]]:
    rounds = MIN_REPEATS
    cases = []
    with tempfile.TemporaryDirectory(prefix="pangu_bench_merge_") as tmp:
        root = Path(tmp)
        _progress("writing synthetic checkpoints ...")
        paths = _write_checkpoints(root, quick)
        in_bytes = sum(f.stat().st_size for f in Path(paths[1]).glob("*.safetensors"))
        llama = _llama_config(quick)
        params = sum(_numel(s) for s in _llama_shapes(llama).values())
        missing = _mergekit_available()
        for method in ("linear", "ties"):
            case = f"file_{method}_n3"
            config_path = root / f"{method}.yaml"
            import yaml

            config_path.write_text(yaml.safe_dump(_yaml(method, paths)))
            kinds = ["ours"] + ([] if missing else ["mergekit"])
            _progress(f"{case}: {N_MODELS} models of {params / 1e6:.0f}M parameters ({in_bytes / 2**20:.0f} MB "
                      f"each) {'+ base ' if method == 'ties' else ''}...")
            # quick: the inputs were just written, so the page cache is warm already
            runs = _interleaved_children(kinds, str(config_path), root, rounds, 0 if quick else 1,
                                         30.0 if quick else 150.0, case, threads)
            ours_s = statistics.median(runs["ours"]["seconds"])
            ours_rss = runs["ours"]["peak_rss_mb"]
            extra: dict[str, Any] = {
                "checkpoint_mb": in_bytes / 2**20, "parameters_per_model": params,
                "sizes": f"{N_MODELS} models{' + base' if method == 'ties' else ''}, {params / 1e6:.0f}M "
                         f"parameters, {in_bytes / 2**20:.0f} MB bf16 each",
                "inputs": len(paths) - (method == "linear"), "ours_peak_rss_mb": ours_rss,
                "ours_rss_before_merge_mb": runs["ours"]["rss_before_mb"],
                "repeats": len(runs["ours"]["seconds"]), "child_process": True}
            if missing:
                # The comparison cannot run here: a skipped case (ours still recorded), not a failure.
                extra["baseline_note"] = missing
                extra["skipped"] = f"no baseline: {missing} (pip install .[bench])"
                cases.append(make_case(case, "seconds", ours_s, "mergekit (not installed here: not measured)",
                                       float("nan"), higher_is_better=False, **extra))
                continue
            mk_s = statistics.median(runs["mergekit"]["seconds"])
            mk_rss = runs["mergekit"]["peak_rss_mb"]
            extra.update(baseline_peak_rss_mb=mk_rss, rss_ratio=mk_rss / ours_rss,
                         baseline_repeats=len(runs["mergekit"]["seconds"]),
                         baseline_rss_before_merge_mb=runs["mergekit"]["rss_before_mb"],
                         ours_options="durable=False (no fsync, like mergekit); input XXH64 digests recorded "
                                      "(default input_hash: xxh64; sha256 available); mergekit hashes nothing",
                         **_compare_outputs(root, method, paths))
            # Every round runs both sides, so repetition i of each is paired (an early stop ends a whole round).
            cases.append(make_case(case, "seconds", ours_s,
                                   f"mergekit run_merge (lazy_unpickle, one process, {threads} torch threads)",
                                   mk_s, higher_is_better=False,
                                   ratio_range=ratio_range(runs["ours"]["seconds"], runs["mergekit"]["seconds"]),
                                   **extra))
    return cases


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The four merge cases (smaller sizes with ``quick``)."""
    from pangu_core import get_num_threads

    threads = get_num_threads()
    with torch_threads(threads):
        ceiling = memcpy_gbps(64 << 20 if quick else 256 << 20)
    return _inmem_cases(quick, ceiling, threads) + _file_cases(quick, threads)
