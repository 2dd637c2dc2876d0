"""Merge kernels against a float64 NumPy reference, TIES/DARE properties, config and YAML parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pangu_core
from pangu_core import _core
from pangu_core.merge import (CopyRule, MergeConfig, MergeMethod, ModelSpec, Override, get_method, merge_state_dicts,
                              merge_tensor, register_method, tensor_id_of)

EPS = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
METHODS = ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"]


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dare_uniform_ref(seed: int, tensor_id: int, model: int, n: int) -> np.ndarray:
    key = _mix64(_mix64(_mix64(np.array([seed], np.uint64)) ^ np.uint64(tensor_id)) ^ np.uint64(model))
    draws = _mix64(key ^ np.arange(n, dtype=np.uint64)) >> np.uint64(40)
    return draws.astype(np.float32) * np.float32(1.0 / 16777216.0)


def reference(method, models, base, weights, densities, lam, normalize, seed=0, tensor_id=0):
    """float64 merge; the masks (top-k, drops, elected sign) are decided on float32 values like C++."""
    spec = get_method(method)
    f32 = [m.float().numpy().ravel() for m in models]
    b32 = base.float().numpy().ravel() if (base is not None and spec.needs_base) else np.zeros_like(f32[0])
    deltas32 = [m - b32 for m in f32]
    deltas = [m.astype(np.float64) - b32.astype(np.float64) for m in f32]
    n = f32[0].size
    for i in range(len(deltas)):
        if spec.sparsify == "magnitude":
            k = int(np.floor(densities[i] * n))
            keep = np.zeros(n, bool)
            keep[np.argsort(-np.abs(deltas32[i]), kind="stable")[:k]] = True
            deltas[i] = np.where(keep, deltas[i], 0.0)
            deltas32[i] = np.where(keep, deltas32[i], np.float32(0))
        elif spec.sparsify == "random" and densities[i] < 1:
            keep = dare_uniform_ref(seed, tensor_id, i, n) < np.float32(densities[i])
            deltas[i] = np.where(keep, deltas[i] / densities[i], 0.0) if densities[i] > 0 else 0.0 * deltas[i]
            deltas32[i] = np.where(keep, deltas32[i] / np.float32(densities[i]), np.float32(0)) if densities[i] > 0 \
                else np.zeros(n, np.float32)
    weighted = [w * d for w, d in zip(weights, deltas)]
    if spec.sign_consensus:
        total32 = np.zeros(n, np.float32)
        for w, d in zip(weights, deltas32):
            total32 = total32 + np.float32(w) * d
        elected = np.where(total32 >= 0, 1.0, -1.0)
        masks = [np.sign(np.float32(w) * d) == elected for w, d in zip(weights, deltas32)]
    else:
        masks = [np.ones(n, bool) for _ in weights]
    mixed = sum(np.where(m, v, 0.0) for m, v in zip(masks, weighted))
    if normalize:
        divisor = sum(np.where(m, w, 0.0) for m, w in zip(masks, weights))
        mixed = mixed / np.where(np.abs(divisor) < 1e-8, 1.0, divisor)
    scale = sum(np.abs(b32.astype(np.float64)), np.zeros(n)) + abs(lam) * sum(np.abs(v) for v in weighted)
    return (b32.astype(np.float64) + lam * mixed).reshape(models[0].shape), scale.reshape(models[0].shape)


def assert_close(ours: torch.Tensor, ref: np.ndarray, scale: np.ndarray) -> None:
    # Final rounding to the output dtype, plus float32 accumulation over a handful of terms.
    bound = EPS[ours.dtype] * np.abs(ref) + 16 * 2.0**-24 * (scale + 1e-30)
    err = np.abs(ours.double().numpy() - ref)
    assert (err <= bound).all(), f"max error {err.max()} above bound at {np.argmax(err - bound)}"


def _inputs(shape, dtypes, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    models = [(base + 0.1 * torch.randn(shape, generator=g)).to(d) for d in dtypes]
    return base, models


# Every method, mixed input dtypes, awkward sizes (not block multiples), every output dtype.
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1,), (97, 59), (3, 4099)])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_methods_match_float64_reference(method, shape, out_dtype):
    base, models = _inputs(shape, [torch.bfloat16, torch.float32, torch.float16])
    base = base.to(torch.float16)
    weights, densities = [0.5, 1.25, -0.3], [0.5, 0.3, 0.9]
    normalize = get_method(method).default_normalize
    ours = merge_tensor(method, models, base=base, weights=weights, densities=densities, lambda_=0.8, seed=7,
                        tensor_id=11, out_dtype=out_dtype)
    ref, scale = reference(method, models, base, weights, densities, 0.8, normalize, seed=7, tensor_id=11)
    assert ours.dtype == out_dtype and ours.shape == shape
    assert_close(ours, ref, scale)


# normalize flips between mergekit's defaults; both settings follow the reference.
@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties"])
@pytest.mark.parametrize("normalize", [True, False])
def test_normalize_switch(method, normalize):
    base, models = _inputs((513,), [torch.float32] * 3, seed=3)
    ours = merge_tensor(method, models, base=base, weights=[1.0, 2.0, 0.5], densities=[0.6] * 3, normalize=normalize,
                        out_dtype=torch.float32)
    ref, scale = reference(method, models, base, [1.0, 2.0, 0.5], [0.6] * 3, 1.0, normalize)
    assert_close(ours, ref, scale)


def _slerp_reference(a, b, t):
    x, y = a.double().numpy().ravel(), b.double().numpy().ravel()
    cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    if abs(cos) > 0.9995:
        return ((1 - t) * x + t * y).reshape(a.shape)
    theta = np.arccos(cos)
    return ((np.sin((1 - t) * theta) * x + np.sin(t * theta) * y) / np.sin(theta)).reshape(a.shape)


# slerp: the angle path, the nearly-colinear (linear) path, and the end points.
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("colinear", [False, True])
def test_slerp_matches_reference(t, colinear):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(37, 113, generator=g)
    b = a * 1.5 + 1e-4 * torch.randn(37, 113, generator=g) if colinear else torch.randn(37, 113, generator=g)
    ours = merge_tensor("slerp", [b.to(torch.bfloat16)], base=a, t=t, out_dtype=torch.float32)
    ref = _slerp_reference(a, b.to(torch.bfloat16).float(), t)
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-5, atol=1e-5)


# TIES keeps exactly floor(density * n) entries per task vector, even with tied magnitudes.
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.999, 1.0])
def test_ties_density_is_exact(density):
    base = torch.zeros(10007)
    model = torch.randint(-3, 4, (10007,)).float()  # many ties in |delta|
    out = merge_tensor("ties", [model], base=base, densities=[density], out_dtype=torch.float32)
    kept = int((out != 0).sum())
    nonzero = int((model != 0).sum())
    assert kept == min(int(np.floor(density * 10007)), nonzero)
    mags = model.abs()
    if 0 < kept < nonzero:  # every kept magnitude is >= every dropped one
        assert mags[out != 0].min() >= mags[(out == 0) & (model != 0)].max()


# The radix select finds the same k-th magnitude as a sort.
@pytest.mark.parametrize("k", [1, 2, 500, 9999, 10000])
def test_kth_magnitude_matches_sort(k):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(10000, generator=g).to(torch.bfloat16)
    model = torch.randn(10000, generator=g)
    value, greater, equal = _core.merge.kth_magnitude(base, model, k)
    mags = (model - base.float()).abs()
    assert value == float(mags.sort(descending=True).values[k - 1])
    assert greater == int((mags > value).sum()) and equal == int((mags == value).sum())


# Sign election: the elected sign comes from the weighted sum; only agreeing entries are averaged.
def test_ties_sign_election_and_disjoint_mean():
    base = torch.zeros(3)
    m1 = torch.tensor([1.0, 2.0, -1.0])
    m2 = torch.tensor([1.0, -1.0, -1.0])
    m3 = torch.tensor([-3.0, -0.5, 4.0])
    out = merge_tensor("ties", [m1, m2, m3], base=base, densities=[1.0] * 3, out_dtype=torch.float32)
    # element 0: sum -1 -> negative wins, only m3 agrees -> -3; element 1: sum +0.5 -> only m1 -> 2;
    # element 2: sum +2 -> only m3 -> 4.
    assert out.tolist() == [-3.0, 2.0, 4.0]


# DARE: about density of the entries survive, each rescaled by 1/density, so the mean is kept.
def test_dare_drop_rate_and_rescale():
    n, p = 200_000, 0.3
    base = torch.zeros(n)
    model = torch.full((n,), 0.6)
    out = merge_tensor("dare_linear", [model], base=base, densities=[p], seed=3, out_dtype=torch.float32)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(0.6 / p))
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(int(kept.sum()) - n * p) < 5 * sigma
    assert abs(float(out.double().mean()) - 0.6) < 0.02
    # the C++ draw is the documented hash
    assert _core.merge.dare_uniform(3, 0, 0, 12345) == float(dare_uniform_ref(3, 0, 0, 12346)[12345])


# DARE results are bit-identical for every thread count and ISA path (counter-based draws, fixed blocks).
@pytest.mark.sanitize
@pytest.mark.parametrize("method", ["dare_ties", "ties", "linear"])
def test_bit_identical_across_threads_and_isas(method):
    base, models = _inputs((1000, 301), [torch.bfloat16] * 3, seed=9)
    previous = pangu_core.get_num_threads()
    results = []
    try:
        for isa in pangu_core.available_isas():
            pangu_core.set_isa(isa)
            for threads in (1, 2, 3, 8):
                pangu_core.set_num_threads(threads)
                results.append(merge_tensor(method, models, base=base, densities=[0.4, 0.5, 0.6], seed=5,
                                            out_dtype=torch.float32))
    finally:
        pangu_core.reset_isa()
        pangu_core.set_num_threads(previous)
    for r in results[1:]:
        assert torch.equal(r, results[0])


# Model counts with their own unrolled block loop (1 to 4) and the general loop (5, 6) agree with the
# reference and give the same bits on every ISA path.
@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_model_counts(method, count):
    base, models = _inputs((4099 + 5,), [torch.bfloat16] * count, seed=count)
    weights = [0.5 + 0.25 * i for i in range(count)]
    normalize = get_method(method).default_normalize
    results = []
    try:
        for isa in pangu_core.available_isas():
            pangu_core.set_isa(isa)
            results.append(merge_tensor(method, models, base=base, weights=weights, lambda_=0.7,
                                        out_dtype=torch.float32))
    finally:
        pangu_core.reset_isa()
    ref, scale = reference(method, models, base, weights, [1.0] * count, 0.7, normalize)
    assert_close(results[0], ref, scale)
    for r in results[1:]:
        assert torch.equal(r, results[0])


# DARE seeds and tensor ids change the pattern; the same ones reproduce it.
def test_dare_seed_and_tensor_id():
    base, models = _inputs((5000,), [torch.float32], seed=2)
    a = merge_tensor("dare_linear", models, base=base, densities=[0.5], seed=1, tensor_id=tensor_id_of("x"))
    b = merge_tensor("dare_linear", models, base=base, densities=[0.5], seed=1, tensor_id=tensor_id_of("x"))
    c = merge_tensor("dare_linear", models, base=base, densities=[0.5], seed=2, tensor_id=tensor_id_of("x"))
    d = merge_tensor("dare_linear", models, base=base, densities=[0.5], seed=1, tensor_id=tensor_id_of("y"))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


# NaN or infinity in a merged tensor is an error that names it.
def test_nonfinite_output_names_tensor():
    base = torch.zeros(10)
    bad = torch.ones(10)
    bad[3] = float("inf")
    with pytest.raises(ValueError, match="layers.0.weight: the merged tensor holds 1 NaN or infinite"):
        merge_tensor("task_arithmetic", [bad], base=base, name="layers.0.weight")


# Front-door errors name the argument.
def test_merge_tensor_errors():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="unknown merge method 'nope'; known: dare_linear"):
        merge_tensor("nope", [x])
    with pytest.raises(ValueError, match="base: method 'ties' needs a base tensor"):
        merge_tensor("ties", [x])
    with pytest.raises(ValueError, match=r"models\[1\]: expected shape \(4,\)"):
        merge_tensor("linear", [x, torch.zeros(5)])
    with pytest.raises(TypeError, match=r"models\[0\]: expected float32 or float16 or bfloat16, got int64"):
        merge_tensor("linear", [torch.zeros(4, dtype=torch.int64)])
    with pytest.raises(ValueError, match=r"densities\[0\]: expected a value in \[0, 1\], got 1.5"):
        merge_tensor("ties", [x], base=x, densities=[1.5])
    with pytest.raises(ValueError, match="weights, densities: expected 2 values each"):
        merge_tensor("linear", [x, x], weights=[1.0])
    with pytest.raises(ValueError, match="slerp takes exactly one model"):
        merge_tensor("slerp", [x, x], base=x)
    with pytest.raises(ValueError, match="out: expected memory separate from models"):
        _core.merge.task_vectors(None, [x], x, [1.0], [], "none", False, False, 1.0, 0, 0)
    with pytest.raises(ValueError, match="t: expected a value in"):
        _core.merge.slerp(x, x.clone(), 2.0, 0.9995, 1e-8, torch.zeros(4))


def test_registry():
    with pytest.raises(ValueError, match="already registered"):
        register_method(MergeMethod("ties", True))
    assert get_method("dare_ties").sparsify == "random"


# Config: every problem reported at once, naming fields.
def test_config_reports_all_problems():
    with pytest.raises(ValueError) as info:
        MergeConfig(method="ties", models=(ModelSpec("a", density=2.0),), lambda_=float("nan"), t=3.0,
                    dtype="int8", seed=-1, overrides=(Override("[", t=5.0),), copy_tensors=(CopyRule("x", "zz"),))
    text = str(info.value)
    for part in ["base_model: method 'ties' needs a base model", "models[0].density", "lambda:", "t: expected",
                 "dtype: expected", "seed:", "overrides[0].pattern", "overrides[0].t", "copy_tensors[0].source"]:
        assert part in text, part
    with pytest.raises(ValueError, match="slerp merges the base with exactly one other model, got 2"):
        MergeConfig(method="slerp", base_model="b", models=(ModelSpec("x"), ModelSpec("y")))


# mergekit YAML fields: per-model weight/density, top-level parameters, filtered parameter lists, dtype.
def test_mergekit_yaml(tmp_path):
    text = """
merge_method: ties
base_model: base
models:
  - model: base
  - model: a
    parameters: {weight: 0.7, density: 0.4}
  - model: b
    parameters: {weight: 0.3}
parameters:
  density: 0.6
  normalize: false
  lambda: 0.9
  t:
    - filter: self_attn
      value: 0.2
    - value: 0.5
dtype: bfloat16
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    config = MergeConfig.from_yaml(str(path))
    assert config.method == "ties" and config.dtype == "bfloat16" and config.lambda_ == 0.9
    assert [m.model for m in config.merged_models()] == ["a", "b"]
    p = config.tensor_parameters("model.layers.0.self_attn.q_proj.weight")
    assert p["t"] == 0.2 and p["weights"] == [0.7, 0.3] and p["densities"] == [0.4, 0.6] and p["normalize"] is False
    assert config.tensor_parameters("model.layers.0.mlp.up_proj.weight")["t"] == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: magic\nmodels: [{model: a, parameters: {wait: 1}}]\nfoo: 1\nparameters: {t: 7}\n")
    with pytest.raises(ValueError) as info:
        MergeConfig.from_yaml(str(bad))
    text = str(info.value)
    for part in ["unknown fields ['foo']", "models[0].parameters: unknown fields ['wait']",
                 "unknown merge method 'magic'", "t: expected a number in [0, 1], got 7"]:
        assert part in text, part


# State dicts: overrides and copied tensors; integer buffers pass through; mismatches listed at once.
def test_merge_state_dicts_overrides_copy_and_mismatch():
    g = torch.Generator().manual_seed(0)
    sds = {k: {"attn.w": torch.randn(8, 8, generator=g), "mlp.w": torch.randn(8, 8, generator=g),
               "embed": torch.randn(4, 8, generator=g), "steps": torch.tensor([k == "a"], dtype=torch.int64)}
           for k in ("a", "b")}
    config = MergeConfig(method="slerp", base_model="a", models=(ModelSpec("a"), ModelSpec("b")), t=0.5,
                         overrides=(Override("attn", t=0.0),), copy_tensors=(CopyRule("embed", "b"),))
    merged = merge_state_dicts(sds, config)
    assert torch.equal(merged["attn.w"], sds["a"]["attn.w"])  # t = 0: the base
    assert torch.equal(merged["embed"], sds["b"]["embed"])
    assert torch.equal(merged["steps"], sds["a"]["steps"])
    assert not torch.equal(merged["mlp.w"], sds["a"]["mlp.w"])
    broken = {"a": dict(sds["a"]), "b": dict(sds["b"])}
    broken["b"]["mlp.w"] = torch.zeros(8, 9)
    del broken["b"]["embed"]
    broken["b"]["extra"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        merge_state_dicts(broken, config)
    text = str(info.value)
    assert "3 problems" in text and "embed: missing from b" in text and "extra: in state dict 'b'" in text
    assert "mlp.w: shape [8, 9] in state dict 'b', [8, 8] in state dict 'a'" in text
    with pytest.raises(KeyError, match="no state dict for"):
        merge_state_dicts({"a": sds["a"]}, config)


# Inputs are read zero-copy: merging does not copy contiguous inputs (no extra allocation needed).
def test_state_dict_inputs_not_modified():
    base, models = _inputs((64, 64), [torch.bfloat16] * 2)
    before = [m.clone() for m in models]
    merge_tensor("ties", models, base=base, densities=[0.5, 0.5])
    assert all(torch.equal(a, b) for a, b in zip(before, models))


# When one magnitude covers every entry, exactly k entries are kept, lowest indices first among ties.
def test_ties_exact_k_with_massive_ties():
    n = (2 << 20) + 3
    model = torch.where(torch.arange(n) % 3 == 0, -1.0, 1.0)
    out = merge_tensor("ties", [model], base=torch.zeros(n), densities=[0.4], out_dtype=torch.float32)
    k = int(np.floor(0.4 * n))
    assert int((out != 0).sum()) == k
    assert bool((out[:k] != 0).all()) and bool((out[k:] == 0).all())


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


# The fused one-pass path (all inputs float32 or all bfloat16, 1 to 4 models, no trim or election)
# gives the bits of the block path, which mixed input dtypes take: same values, one input stored in
# the other dtype. Signed zeros, subnormals and a value near the largest float included.
@pytest.mark.sanitize
@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_fused_path_matches_block_path(method, in_dtype, out_dtype):
    other = torch.float32 if in_dtype == torch.bfloat16 else torch.bfloat16
    for count in (1, 3, 4):
        base, models = _inputs((4096 * 3 + 7,), [torch.bfloat16] * count, seed=20 + count)
        base = base.to(torch.bfloat16)
        for m in [base] + models:
            m[:4] = torch.tensor([0.0, -0.0, 1e-39, -3e-40])  # zeros, float32 subnormals (exact in bf16)
        models[0][4] = 3.3e38  # near the top of the range
        weights = [0.75 + 0.125 * i for i in range(count)]
        uniform = [m.to(in_dtype) for m in models]
        mixed = [uniform[0].to(other)] + uniform[1:]  # same values, not fusable
        results = []
        try:
            for isa in pangu_core.available_isas():
                pangu_core.set_isa(isa)
                for inputs in (uniform, mixed):
                    results.append(merge_tensor(method, inputs, base=base.to(in_dtype), weights=weights,
                                                normalize=False, lambda_=0.5, out_dtype=out_dtype))
        finally:
            pangu_core.reset_isa()
        for r in results[1:]:
            assert torch.equal(_bits(r), _bits(results[0])), (count, method)


# first_index places a slice within its whole tensor: DARE merged slice by slice gives the bits of
# the merge at once (the draws follow the element's position); a bad first_index is refused.
@pytest.mark.parametrize("method", ["dare_linear", "dare_ties", "linear"])
def test_first_index_slices_equal_whole(method):
    base, models = _inputs((10_001,), [torch.bfloat16] * 2, seed=4)
    kw = dict(base=base, densities=[0.4, 0.7], seed=9, tensor_id=tensor_id_of("w"), out_dtype=torch.float32)
    whole = merge_tensor(method, models, **kw)
    cuts = [0, 1, 4096, 5000, 9999, 10_001]
    parts = [merge_tensor(method, [m[a:b] for m in models], **{**kw, "base": base[a:b]}, first_index=a)
             for a, b in zip(cuts, cuts[1:])]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="first_index: expected an int >= 0, got -1"):
        merge_tensor(method, models, **kw, first_index=-1)
