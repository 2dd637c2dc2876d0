"""In-memory merges: one tensor (:func:`merge_tensor`), one named tensor under a config
(:func:`merge_one`) and whole state dicts (:func:`merge_state_dicts`).

Every method is one C++ kernel call per tensor (multi-threaded, GIL released), accumulating in
float32 whatever the input and output dtypes; the result is rounded once, to the output dtype:

* ``linear``: sum_i w_i theta_i (divided by sum_i w_i when ``normalize``, the default).
* ``task_arithmetic``: base + lambda * sum_i w_i (theta_i - base).
* ``ties``: each task vector trimmed to its top ``density`` fraction by magnitude, a sign elected per
  element from the sum, the agreeing entries averaged (disjoint mean), scaled by lambda, added to base.
* ``dare_linear`` / ``dare_ties``: entries dropped with probability 1 - density and the kept ones
  divided by density (counter-based draws: bit-identical for any thread count), then as above.
* ``slerp``: spherical interpolation between base (t = 0) and one other model (t = 1).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from pangu_core import _core
from pangu_core.merge.config import MergeConfig
from pangu_core.merge.registry import MergeMethod, get_method
from pangu_core.tensors import FLOAT_DTYPES, check_tensor


def merge_tensor(
    method: str | MergeMethod,
    models: list[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Iterable[float] | None = None,
    densities: Iterable[float] | None = None,
    lambda_: float = 1.0,
    normalize: bool | None = None,
    t: float = 0.5,
    seed: int = 0,
    tensor_id: int = 0,
    first_index: int = 0,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """Merges one tensor of several models in C++; returns ``out`` (allocated if not given).

    models: float32/float16/bfloat16 CPU tensors of one shape (dtypes may differ), used zero-copy
    when contiguous. base: same shape, needed by every method but linear. Accumulation is float32;
    the result is rounded once to ``out``'s dtype (``out_dtype``, default: base's, else the first
    model's). ``first_index``: where these tensors start within a larger tensor merged slice by
    slice (DARE draws by position in the whole tensor, so the slices give the bits of a merge at
    once). Raises ValueError naming ``name`` when the result holds NaN or infinity.
    """
    spec = method if isinstance(method, MergeMethod) else get_method(method)
    if not isinstance(models, (list, tuple)) or not models:
        raise ValueError("models: expected a non-empty list of tensors")
    tensors = [check_tensor(m, f"models[{i}]", dtypes=FLOAT_DTYPES) for i, m in enumerate(models)]
    if spec.needs_base and base is None:
        raise ValueError(f"base: method {spec.name!r} needs a base tensor")
    if base is not None:
        check_tensor(base, "base", dtypes=FLOAT_DTYPES)
    shape = tensors[0].shape
    for i, m in enumerate(tensors):
        if m.shape != shape:
            raise ValueError(f"models[{i}]: expected shape {tuple(shape)} like models[0], got {tuple(m.shape)}")
    if base is not None and base.shape != shape:
        raise ValueError(f"base: expected shape {tuple(shape)} like models[0], got {tuple(base.shape)}")
    count = len(tensors)
    weights = [1.0] * count if weights is None else [float(w) for w in weights]
    densities = [1.0] * count if densities is None else [float(d) for d in densities]
    if len(weights) != count or len(densities) != count:
        raise ValueError(f"weights, densities: expected {count} values each (one per model), "
                         f"got {len(weights)} and {len(densities)}")
    if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
        raise ValueError(f"first_index: expected an int >= 0, got {first_index!r}")
    if spec.is_slerp and count != 1:
        raise ValueError(f"models: slerp takes exactly one model besides the base, got {count}")
    dtype = out_dtype or (base.dtype if base is not None else tensors[0].dtype)
    if out is None:
        out = torch.empty(shape, dtype=dtype)
    else:
        check_tensor(out, "out", dtypes=FLOAT_DTYPES, contiguous=True)
        if out.shape != shape:
            raise ValueError(f"out: expected shape {tuple(shape)}, got {tuple(out.shape)}")
    tensors = [m.detach().contiguous() for m in tensors]
    base = base.detach().contiguous() if base is not None else None
    if spec.is_slerp:
        bad = _core.merge.slerp(base, tensors[0], float(t), 0.9995, 1e-8, out)
    else:
        norm = spec.default_normalize if normalize is None else bool(normalize)
        bad = _core.merge.task_vectors(base if spec.needs_base else None, tensors, out, weights, densities,
                                       spec.sparsify, spec.sign_consensus, norm, float(lambda_), int(seed),
                                       int(tensor_id), first_index)
    if bad:
        raise ValueError(f"{name}: the merged tensor holds {bad} NaN or infinite values")
    return out


def tensor_id_of(name: str) -> int:
    """A stable 64-bit id of a tensor name (FNV-1a): DARE's draws depend on the name, not the order."""
    h = 0xCBF29CE484222325
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def merge_one(config: MergeConfig, name: str, tensors: Mapping[str, torch.Tensor], *,
              out: torch.Tensor | None = None, first_index: int = 0) -> torch.Tensor:
    """Merges tensor ``name`` given each source's copy (keyed by model path/name) under ``config``.

    The result has ``config.output_dtype`` of the reference's dtype (the base's, else the first
    model's): the config's ``dtype`` for floating tensors when set. Tensors matched by a copy rule
    are their source's values in that dtype; tensors the kernels do not take (integer buffers,
    float64) are the reference's, floating ones converted likewise. Writes into ``out`` when given
    (its dtype is then the caller's choice). ``first_index``: the tensors are the flat slice
    starting there of tensor ``name`` (see :func:`merge_tensor`; not for slerp or magnitude trims,
    which need the whole tensor).
    """
    reference = tensors[config.reference()]
    dtype = config.output_dtype(reference.dtype)
    source = config.copy_source(name)
    if source is not None or reference.dtype not in FLOAT_DTYPES:
        value = tensors[source or config.reference()]
        if out is None:
            return value.to(dtype, copy=True)
        return out.copy_(value)
    p = config.tensor_parameters(name)
    return merge_tensor(
        config.method_spec(), [tensors[m.model] for m in config.merged_models()],
        base=tensors.get(config.base_model or ""), weights=p["weights"], densities=p["densities"],
        lambda_=p["lambda"], normalize=p["normalize"], t=p["t"], seed=config.seed, tensor_id=tensor_id_of(name),
        first_index=first_index, out=out, out_dtype=dtype, name=name)


def merge_state_dicts(state_dicts: Mapping[str, Mapping[str, torch.Tensor]], config: MergeConfig, *,
                      progress: bool = False) -> dict[str, torch.Tensor]:
    """Merges in-memory state dicts, keyed by the names the config uses for its models.

    Inputs are read zero-copy (contiguous CPU tensors); each output tensor is new, in the config's
    ``dtype`` (the OUTPUT dtype; accumulation is float32) or, without one, the reference's dtype
    (see :func:`merge_one`). All name and shape mismatches across inputs are reported together
    before any work. ``progress`` shows a progress bar over tensors.
    """
    if not isinstance(config, MergeConfig):
        raise TypeError(f"config: expected a MergeConfig, got {type(config).__name__}")
    if not isinstance(state_dicts, Mapping):
        raise TypeError(f"state_dicts: expected a mapping of name -> state dict, got {type(state_dicts).__name__}")
    sources = config.sources()
    missing = [s for s in sources if s not in state_dicts]
    if missing:
        raise KeyError(f"state_dicts: no state dict for {missing}; given: {sorted(state_dicts)}")
    shapes = {s: {k: (tuple(v.shape), f"state dict {s!r}") for k, v in state_dicts[s].items()} for s in sources}
    check_same_tensors(shapes)
    from tqdm import tqdm

    merged = {}
    for name in tqdm(list(state_dicts[sources[0]]), desc="merge", unit="tensor", disable=not progress):
        merged[name] = merge_one(config, name, {s: state_dicts[s][name] for s in sources})
    return merged


def check_same_tensors(shapes: Mapping[str, Mapping[str, tuple]]) -> None:
    """Raises one ValueError listing every tensor missing from, extra in, or shaped differently in
    a source compared with the first. ``shapes`` maps source -> tensor name -> (shape, where), where
    ``where`` names the file (or state dict) holding that tensor."""
    sources = list(shapes)
    reference = shapes[sources[0]]
    problems = []
    for s in sources[1:]:
        other = shapes[s]
        for name in sorted(set(reference) - set(other)):
            problems.append(f"{name}: missing from {s} (present in {reference[name][1]})")
        for name in sorted(set(other) - set(reference)):
            problems.append(f"{name}: in {other[name][1]} but missing from {sources[0]}")
        for name in sorted(set(reference) & set(other)):
            if tuple(reference[name][0]) != tuple(other[name][0]):
                problems.append(f"{name}: shape {list(other[name][0])} in {other[name][1]}, "
                                f"{list(reference[name][0])} in {reference[name][1]}")
    if problems:
        raise ValueError(f"inputs do not match ({len(problems)} problems):\n  " + "\n  ".join(problems))
