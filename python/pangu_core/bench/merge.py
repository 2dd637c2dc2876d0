"""`pangu-core bench merge`: checkpoint merging, in memory against torch ops and from files against mergekit.

In-memory cases count (N + 1) x bytes per element (N inputs read, one output written) per second and
compare with a memory-copy ceiling measured in the same run. File cases time whole merges of
synthetic sharded bf16 Llama-shaped checkpoints (warm page cache), each run in a child process that
reports its own peak RSS (VmHWM), and check that both outputs agree within rounding.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from pangu_core.bench.common import make_case, median_seconds, memcpy_gbps

NAME = "merge"
DESCRIPTION = "checkpoint merge kernels (in memory vs torch ops) and streaming file merges (vs mergekit)"
N_MODELS = 3


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


def _torch_linear(models: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    out = {}
    for name in models[0]:
        acc = models[0][name].float().mul_(weights[0])
        for m, w in zip(models[1:], weights[1:]):
            acc.add_(m[name].float(), alpha=w)
        out[name] = acc.div_(sum(weights)).to(torch.bfloat16)
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


def _inmem_cases(quick: bool, ceiling: float) -> list[dict[str, Any]]:
    from pangu_core.merge import MergeConfig, ModelSpec, merge_one

    size = (4 << 20) if quick else (256 << 20)
    dicts = _state_dicts(size, N_MODELS)
    base, models = dicts[0], dicts[1:]
    names = {f"m{i}": m for i, m in enumerate(models)} | {"base": base}
    elements = sum(t.numel() for t in base.values())
    cases = []
    for method in ("linear", "ties"):
        config = MergeConfig(method=method, base_model=None if method == "linear" else "base", density=0.5,
                             models=tuple(ModelSpec(f"m{i}") for i in range(N_MODELS)))
        outs = {k: torch.empty_like(v) for k, v in base.items()}

        def ours() -> None:
            for k in base:
                merge_one(config, k, {s: d[k] for s, d in names.items()}, out=outs[k])

        if method == "linear":
            def baseline() -> dict[str, torch.Tensor]:
                return _torch_linear(models, [1.0] * N_MODELS)
        else:
            def baseline() -> dict[str, torch.Tensor]:
                return _torch_ties(base, models, 0.5)
        streams = N_MODELS + 1 + (method == "ties")  # TIES also reads the base
        ours_s = median_seconds(ours)
        base_s = median_seconds(baseline)
        reference = baseline()
        diff = max(float((outs[k].float() - reference[k].float()).abs().max()) for k in base)
        gbps = lambda s: (N_MODELS + 1) * 2 * elements / s / 1e9  # noqa: E731
        cases.append(make_case(
            f"inmem_{method}_bf16_n3", "GB/s", gbps(ours_s), "torch ops", gbps(base_s),
            ceiling="memory copy", ceiling_value=ceiling, bytes_per_model_mb=2 * elements / 2**20,
            streams_read_written=streams, max_abs_diff_vs_baseline=diff,
            ours_seconds=ours_s, baseline_seconds=base_s,
            notes="GB/s = (N + 1) x bytes per element / s for every side; ceiling: torch copy_ of 256 MB "
                  "float32 counting read + written bytes; all sides write into memory already faulted in "
                  "(the ceiling's and the baseline's by their warm-up run, ours into preallocated outputs)"))
    return cases


# ---------------------------------------------------------------------------------------------
# files


def _llama_config(quick: bool) -> dict[str, Any]:
    if quick:  # about 5M parameters
        hidden, inter, layers, vocab = 256, 688, 2, 4000
    else:  # about 536M parameters: 1.07 GB in bf16
        hidden, inter, layers, vocab = 2048, 5504, 8, 32000
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
        save_checkpoint(sd, path, max_shard_bytes=(64 << 20) if quick else (400 << 20))
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
import torch, yaml
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


def _child(kind: str, config_path: str, out: str, repeats: int, warmup: int, budget: float) -> dict[str, Any]:
    """Runs up to ``repeats`` timed merges (after ``warmup``) in a fresh process, stopping once they
    took ``budget`` seconds; the process's peak RSS covers them all."""
    result = subprocess.run([sys.executable, "-c", _CHILD, kind, config_path, out, str(repeats), str(warmup),
                             str(budget)],
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


def _file_cases(quick: bool) -> list[dict[str, Any]]:
    repeats = 5
    cases = []
    with tempfile.TemporaryDirectory(prefix="pangu_bench_merge_") as tmp:
        root = Path(tmp)
        paths = _write_checkpoints(root, quick)
        in_bytes = sum(f.stat().st_size for f in Path(paths[1]).glob("*.safetensors"))
        missing = _mergekit_available()
        for method in ("linear", "ties"):
            config_path = root / f"{method}.yaml"
            import yaml

            config_path.write_text(yaml.safe_dump(_yaml(method, paths)))
            kinds = ["ours"] + ([] if missing else ["mergekit"])
            # quick: the inputs were just written, so the page cache is warm already
            runs = {kind: _child(kind, str(config_path), str(root / f"out_{kind}"), repeats, 0 if quick else 1,
                                 10.0 if quick else 300.0) for kind in kinds}
            ours_s = statistics.median(runs["ours"]["seconds"])
            ours_rss = runs["ours"]["peak_rss_mb"]
            extra: dict[str, Any] = {"checkpoint_mb": in_bytes / 2**20, "inputs": len(paths) - (method == "linear"),
                                     "ours_peak_rss_mb": ours_rss, "ours_repeats": len(runs["ours"]["seconds"]),
                                     "ours_rss_before_merge_mb": runs["ours"]["rss_before_mb"]}
            if missing:
                extra["baseline_note"] = missing
                cases.append(make_case(f"file_{method}_n3", "seconds", ours_s, "mergekit (unavailable)", float("nan"),
                                       higher_is_better=False, **extra))
                continue
            mk_s = statistics.median(runs["mergekit"]["seconds"])
            mk_rss = runs["mergekit"]["peak_rss_mb"]
            extra.update(baseline_peak_rss_mb=mk_rss, rss_ratio=mk_rss / ours_rss,
                         baseline_repeats=len(runs["mergekit"]["seconds"]),
                         baseline_rss_before_merge_mb=runs["mergekit"]["rss_before_mb"],
                         ours_options="durable=False (no fsync, like mergekit); input XXH64 digests recorded "
                                      "(default input_hash: xxh64; sha256 available); mergekit hashes nothing",
                         **_compare_outputs(root, method, paths))
            cases.append(make_case(f"file_{method}_n3", "seconds", ours_s, "mergekit", mk_s, higher_is_better=False,
                                   **extra))
    return cases


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The four merge cases (smaller sizes with ``quick``)."""
    ceiling = memcpy_gbps(64 << 20 if quick else 256 << 20)
    return _inmem_cases(quick, ceiling) + _file_cases(quick)

