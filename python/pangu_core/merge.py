"""Checkpoint merging: merge methods, the typed merge config (YAML, mergekit-style) and in-memory merges.

Every method is one C++ kernel call per tensor (float32 accumulation, multi-threaded, GIL released):

* ``linear``: sum_i w_i theta_i (divided by sum_i w_i when ``normalize``, the default).
* ``task_arithmetic``: base + lambda * sum_i w_i (theta_i - base).
* ``ties``: each task vector trimmed to its top ``density`` fraction by magnitude, a sign elected per
  element from the sum, the agreeing entries averaged (disjoint mean), scaled by lambda, added to base.
* ``dare_linear`` / ``dare_ties``: entries dropped with probability 1 - density and the kept ones
  divided by density (counter-based draws: bit-identical for any thread count), then as above.
* ``slerp``: spherical interpolation between base (t = 0) and one other model (t = 1).

Methods live in a registry (:func:`register_method`, :func:`get_method`). Folder merges (sharded
safetensors, streaming, atomic) are in :mod:`pangu_core.merge_files`; :func:`merge_checkpoints`
is re-exported here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from pangu_core import _core
from pangu_core.tensors import FLOAT_DTYPES, check_tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Digests of the input files recorded by folder merges: XXH64 (fast, non-cryptographic: identifies
# the inputs; `xxhsum -H1` checks it), SHA-256 (cryptographic, about 4x slower here), or none.
INPUT_HASHES = ("xxh64", "sha256", "none")


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: which kernel options it uses and which inputs it needs."""

    name: str
    needs_base: bool
    sparsify: str = "none"  # "none", "magnitude" or "random"
    sign_consensus: bool = False
    default_normalize: bool = False
    is_slerp: bool = False
    description: str = ""

    @property
    def elementwise(self) -> bool:
        """Whether each output element depends only on the inputs at its own position, so a tensor
        may be merged slice by slice (not slerp's global angle, not a top-k magnitude trim)."""
        return not self.is_slerp and self.sparsify != "magnitude"


_METHODS: dict[str, MergeMethod] = {}


def register_method(method: MergeMethod) -> MergeMethod:
    """Adds ``method`` to the registry; a second method of the same name is an error."""
    if method.name in _METHODS:
        raise ValueError(f"merge method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``; an unknown name lists the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"method: unknown merge method {name!r}; known: {', '.join(sorted(_METHODS))}") from None


def methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_METHODS)


register_method(MergeMethod("linear", False, default_normalize=True, description="weighted average"))
register_method(MergeMethod("task_arithmetic", True, description="base + lambda * sum w_i (theta_i - base)"))
register_method(MergeMethod("ties", True, "magnitude", True, True, description="trim, elect sign, disjoint mean"))
register_method(MergeMethod("dare_linear", True, "random", description="random drop and rescale, then sum"))
register_method(MergeMethod("dare_ties", True, "random", True, description="random drop and rescale, sign election"))
register_method(MergeMethod("slerp", True, is_slerp=True, description="spherical interpolation of two models"))


@dataclass(frozen=True)
class ModelSpec:
    """One input model: a checkpoint folder (or a state-dict key) with its weight and density."""

    model: str
    weight: float = 1.0
    density: float | None = None  # None: the config's density


@dataclass(frozen=True)
class Override:
    """Parameters for tensors whose name contains ``pattern`` (or matches it as a regex).

    Only the fields given (not None) replace the config's values. The first matching override wins.
    """

    pattern: str
    t: float | None = None
    lambda_: float | None = None
    density: float | None = None
    weight: float | None = None

    def matches(self, name: str) -> bool:
        return self.pattern in name or re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class CopyRule:
    """Tensors whose name contains ``pattern`` (or matches it as a regex) are copied from ``source``."""

    pattern: str
    source: str

    def matches(self, name: str) -> bool:
        return self.pattern in name or re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class MergeConfig:
    """A merge, fully described. Validates itself on construction and reports every problem at once.

    YAML twin (mergekit's common fields are accepted; see :meth:`from_dict`)::

        merge_method: ties          # a registered method
        base_model: ./base          # needed by every method but linear
        models:
          - model: ./math
            parameters: {weight: 1.0, density: 0.5}
        parameters: {lambda: 1.0, density: 0.5, normalize: true, t: 0.5}
        dtype: bfloat16             # output dtype; default: the base's (or first model's) dtype
        seed: 0                     # DARE draws
        overrides: [{pattern: self_attn, t: 0.3}]
        copy_tensors: [{pattern: embed_tokens, source: ./base}]
        input_hash: xxh64           # digest of the input files in the record: xxh64, sha256 or none
    """

    method: str
    models: tuple[ModelSpec, ...]
    base_model: str | None = None
    lambda_: float = 1.0
    density: float = 1.0
    normalize: bool | None = None  # None: the method's default
    t: float = 0.5
    dtype: str | None = None
    seed: int = 0
    overrides: tuple[Override, ...] = ()
    copy_tensors: tuple[CopyRule, ...] = ()
    max_shard_bytes: int = 2 << 30
    input_hash: str = "xxh64"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid merge config:\n  " + "\n  ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of this config, as lines naming the field."""
        out: list[str] = []
        method = _METHODS.get(self.method) if isinstance(self.method, str) else None
        if method is None:
            out.append(f"method: unknown merge method {self.method!r}; known: {', '.join(sorted(_METHODS))}")
        if not isinstance(self.models, tuple) or not all(isinstance(m, ModelSpec) for m in self.models):
            out.append("models: expected a tuple of ModelSpec")
            return out
        inputs = self.merged_models()
        if method is not None:
            if method.needs_base and not self.base_model:
                out.append(f"base_model: method {self.method!r} needs a base model")
            if method.is_slerp and len(inputs) != 1:
                out.append(f"models: slerp merges the base with exactly one other model, got {len(inputs)}")
            if not method.is_slerp and not inputs:
                out.append("models: expected at least one model besides the base")
        for i, m in enumerate(self.models):
            if not isinstance(m.model, str) or not m.model:
                out.append(f"models[{i}].model: expected a non-empty path or name")
            if not _is_number(m.weight):
                out.append(f"models[{i}].weight: expected a number, got {m.weight!r}")
            if m.density is not None and not _in_unit(m.density):
                out.append(f"models[{i}].density: expected a number in [0, 1], got {m.density!r}")
        if not _is_number(self.lambda_):
            out.append(f"lambda: expected a number, got {self.lambda_!r}")
        if not _in_unit(self.density):
            out.append(f"density: expected a number in [0, 1], got {self.density!r}")
        if not _in_unit(self.t):
            out.append(f"t: expected a number in [0, 1], got {self.t!r}")
        if self.normalize is not None and not isinstance(self.normalize, bool):
            out.append(f"normalize: expected true or false, got {self.normalize!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            out.append(f"dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            out.append(f"seed: expected an int >= 0, got {self.seed!r}")
        if isinstance(self.max_shard_bytes, bool) or not isinstance(self.max_shard_bytes, int) or self.max_shard_bytes < 1:
            out.append(f"max_shard_bytes: expected an int >= 1, got {self.max_shard_bytes!r}")
        if self.input_hash not in INPUT_HASHES:
            out.append(f"input_hash: expected one of {', '.join(INPUT_HASHES)}, got {self.input_hash!r}")
        for i, o in enumerate(self.overrides):
            if not isinstance(o, Override):
                out.append(f"overrides[{i}]: expected an Override")
                continue
            out.extend(_pattern_problem(o.pattern, f"overrides[{i}].pattern"))
            for key in ("t", "density"):
                value = getattr(o, key)
                if value is not None and not _in_unit(value):
                    out.append(f"overrides[{i}].{key}: expected a number in [0, 1], got {value!r}")
            for key in ("lambda_", "weight"):
                value = getattr(o, key)
                if value is not None and not _is_number(value):
                    out.append(f"overrides[{i}].{key.rstrip('_')}: expected a number, got {value!r}")
        known = {m.model for m in self.models} | ({self.base_model} if self.base_model else set())
        for i, c in enumerate(self.copy_tensors):
            if not isinstance(c, CopyRule):
                out.append(f"copy_tensors[{i}]: expected a CopyRule")
                continue
            out.extend(_pattern_problem(c.pattern, f"copy_tensors[{i}].pattern"))
            if c.source not in known:
                out.append(f"copy_tensors[{i}].source: expected one of the models {sorted(known)}, got {c.source!r}")
        return out

    def merged_models(self) -> tuple[ModelSpec, ...]:
        """The models whose task vectors are merged (entries naming the base model are left out)."""
        if self.base_model is None or self.method == "linear":
            return self.models
        return tuple(m for m in self.models if m.model != self.base_model)

    def method_spec(self) -> MergeMethod:
        return get_method(self.method)

    def sources(self) -> list[str]:
        """Every checkpoint the merge reads, base first, each once."""
        out = [self.base_model] if self.base_model else []
        for m in self.models:
            if m.model not in out:
                out.append(m.model)
        return out

    def tensor_parameters(self, name: str) -> dict[str, Any]:
        """The parameters in force for tensor ``name`` after overrides: t, lambda, weights, densities."""
        override = next((o for o in self.overrides if o.matches(name)), None)
        models = self.merged_models()
        weights = [m.weight for m in models]
        densities = [self.density if m.density is None else m.density for m in models]
        t, lam = self.t, self.lambda_
        if override is not None:
            t = override.t if override.t is not None else t
            lam = override.lambda_ if override.lambda_ is not None else lam
            if override.weight is not None:
                weights = [override.weight] * len(models)
            if override.density is not None:
                densities = [override.density] * len(models)
        normalize = self.method_spec().default_normalize if self.normalize is None else self.normalize
        return {"t": t, "lambda": lam, "weights": weights, "densities": densities, "normalize": normalize}

    def copy_source(self, name: str) -> str | None:
        """The model tensor ``name`` is copied from unchanged, or None when it is merged."""
        return next((c.source for c in self.copy_tensors if c.matches(name)), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record of the config (stored in the merged checkpoint's metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MergeConfig":
        """Builds a config from a mergekit-style mapping; reports every problem at once.

        Accepted: merge_method (or method), base_model, models (each ``model`` plus optional
        ``parameters`` weight/density), parameters (lambda, density, normalize, t, weight), dtype,
        seed, overrides, copy_tensors, max_shard_bytes, input_hash. A top-level parameter may be mergekit's
        filtered list, e.g. ``t: [{filter: self_attn, value: 0.3}, {value: 0.5}]`` (scalar values).
        """
        return cls(**_parse(data))

    @classmethod
    def from_yaml(cls, path: str) -> "MergeConfig":
        """Reads a YAML file (see :meth:`from_dict`)."""
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _in_unit(x: Any) -> bool:
    return _is_number(x) and 0.0 <= x <= 1.0


def _pattern_problem(pattern: Any, where: str) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        return [f"{where}: expected a non-empty string, got {pattern!r}"]
    try:
        re.compile(pattern)
    except re.error as exc:
        return [f"{where}: not a valid regular expression ({exc})"]
    return []


_TOP_KEYS = {"merge_method", "method", "base_model", "models", "parameters", "dtype", "out_dtype", "seed",
             "overrides", "copy_tensors", "max_shard_bytes", "input_hash", "tokenizer_source", "chat_template", "name"}
_PARAM_KEYS = {"lambda": "lambda_", "density": "density", "normalize": "normalize", "t": "t", "weight": "weight"}


def _parse(data: Mapping[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        problems.append(f"unknown fields {unknown}; known: {sorted(_TOP_KEYS)}")
    if "slices" in data:
        problems.append("slices: not supported; list the models under `models`")
    out: dict[str, Any] = {"method": data.get("merge_method", data.get("method"))}
    if data.get("base_model") is not None:
        out["base_model"] = str(data["base_model"])
    models = []
    for i, entry in enumerate(data.get("models") or []):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or "model" not in entry:
            problems.append(f"models[{i}]: expected a mapping with a `model` field, got {entry!r}")
            continue
        params = entry.get("parameters") or {}
        bad = sorted(set(params) - {"weight", "density"})
        if bad:
            problems.append(f"models[{i}].parameters: unknown fields {bad}; known: ['density', 'weight']")
        models.append(ModelSpec(str(entry["model"]), params.get("weight", 1.0), params.get("density")))
    out["models"] = tuple(models)
    overrides = [Override(**_override_fields(o, i, problems)) for i, o in enumerate(data.get("overrides") or [])]
    for key, value in (data.get("parameters") or {}).items():
        if key not in _PARAM_KEYS:
            problems.append(f"parameters.{key}: unknown; known: {sorted(_PARAM_KEYS)}")
            continue
        field_name = _PARAM_KEYS[key]
        if isinstance(value, list):  # mergekit's [{filter: ..., value: ...}, ..., {value: default}]
            for j, item in enumerate(value):
                if not isinstance(item, Mapping) or "value" not in item or isinstance(item["value"], list):
                    problems.append(f"parameters.{key}[{j}]: expected {{filter: NAME, value: NUMBER}} "
                                    "(gradients over layers are not supported)")
                elif item.get("filter") is None:
                    value = item["value"]
                else:
                    overrides.append(Override(str(item["filter"]), **{field_name: item["value"]}))
            if isinstance(value, list):
                continue
        if field_name == "weight":
            models = [dataclasses.replace(m, weight=value) for m in out["models"]]
            out["models"] = tuple(models)
        else:
            out[field_name] = value
    out["overrides"] = tuple(overrides)
    out["copy_tensors"] = tuple(CopyRule(str(c.get("pattern")), str(c.get("source")))
                                for c in data.get("copy_tensors") or [] if isinstance(c, Mapping))
    dtype = data.get("out_dtype", data.get("dtype"))
    if dtype is not None:
        out["dtype"] = str(dtype)
    for key in ("seed", "max_shard_bytes", "input_hash"):
        if key in data:
            out[key] = data[key]
    if problems:
        try:  # add the dataclass's own findings so the user sees everything at once
            MergeConfig(**{k: v for k, v in out.items() if v is not None})
        except (ValueError, TypeError) as exc:
            problems.extend(line.strip() for line in str(exc).splitlines()[1:])
        raise ValueError("invalid merge config:\n  " + "\n  ".join(problems))
    return out


def _override_fields(entry: Any, i: int, problems: list[str]) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or "pattern" not in entry:
        problems.append(f"overrides[{i}]: expected a mapping with a `pattern` field, got {entry!r}")
        return {"pattern": "."}
    allowed = {"pattern", "t", "lambda", "density", "weight"}
    bad = sorted(set(entry) - allowed)
    if bad:
        problems.append(f"overrides[{i}]: unknown fields {bad}; known: {sorted(allowed)}")
    return {("lambda_" if k == "lambda" else k): v for k, v in entry.items() if k in allowed}


# ---------------------------------------------------------------------------------------------
# One tensor


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
    when contiguous. base: same shape, needed by every method but linear. ``first_index``: where
    these tensors start within a larger tensor merged slice by slice (DARE draws by position in the
    whole tensor, so the slices give the bits of a merge at once). Raises ValueError naming ``name``
    when the result holds NaN or infinity.
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


def merge_one(config: MergeConfig, name: str, tensors: Mapping[str, torch.Tensor],
              out: torch.Tensor | None = None, first_index: int = 0) -> torch.Tensor:
    """Merges tensor ``name`` given each source's copy (keyed by model path/name) under ``config``.

    Tensors matched by a copy rule come unchanged from their source; tensors that are not
    float32/float16/bfloat16 (integer buffers, float64) come unchanged from the base (or the first
    model). Writes into ``out`` when given. ``first_index``: the tensors are the flat slice starting
    there of tensor ``name`` (see :func:`merge_tensor`; not for slerp or magnitude trims, which need
    the whole tensor).
    """
    source = config.copy_source(name)
    dtype = DTYPES[config.dtype] if config.dtype else None
    reference = tensors[config.base_model] if config.base_model else tensors[config.models[0].model]
    if source is not None or not reference.is_floating_point() or reference.dtype not in FLOAT_DTYPES:
        value = tensors[source or (config.base_model or config.models[0].model)]
        if out is None:
            return value.to(dtype) if dtype is not None and value.is_floating_point() else value.clone()
        return out.copy_(value)
    p = config.tensor_parameters(name)
    spec = config.method_spec()
    return merge_tensor(
        spec, [tensors[m.model] for m in config.merged_models()], base=tensors.get(config.base_model or ""),
        weights=p["weights"], densities=p["densities"], lambda_=p["lambda"], normalize=p["normalize"], t=p["t"],
        seed=config.seed, tensor_id=tensor_id_of(name), first_index=first_index, out=out, out_dtype=dtype or reference.dtype, name=name)


def merge_state_dicts(state_dicts: Mapping[str, Mapping[str, torch.Tensor]], config: MergeConfig,
                      progress: bool = False) -> dict[str, torch.Tensor]:
    """Merges in-memory state dicts, keyed by the names the config uses for its models.

    Inputs are read zero-copy (contiguous CPU tensors); each output tensor is new. All name and
    shape mismatches across inputs are reported together before any work.
    """
    if not isinstance(config, MergeConfig):
        raise TypeError(f"config: expected a MergeConfig, got {type(config).__name__}")
    if not isinstance(state_dicts, Mapping):
        raise TypeError(f"state_dicts: expected a mapping of name -> state dict, got {type(state_dicts).__name__}")
    missing = [s for s in config.sources() if s not in state_dicts]
    if missing:
        raise KeyError(f"state_dicts: no state dict for {missing}; given: {sorted(state_dicts)}")
    shapes = {s: {k: (tuple(v.shape), f"state dict {s!r}") for k, v in state_dicts[s].items()} for s in config.sources()}
    check_same_tensors(shapes)
    from tqdm import tqdm

    first = state_dicts[config.sources()[0]]
    merged = {}
    for name in tqdm(list(first), desc="merge", unit="tensor", disable=not progress):
        merged[name] = merge_one(config, name, {s: state_dicts[s][name] for s in config.sources()})
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


def merge_checkpoints(config: MergeConfig, out_dir: str, **kwargs: Any) -> str:
    """Merges checkpoint folders into ``out_dir``; see :func:`pangu_core.merge_files.merge_checkpoints`."""
    from pangu_core.merge_files import merge_checkpoints as run

    return run(config, out_dir, **kwargs)


__all__ = [
    "MergeMethod", "ModelSpec", "Override", "CopyRule", "MergeConfig", "register_method", "get_method", "methods",
    "merge_tensor", "merge_one", "merge_state_dicts", "merge_checkpoints", "check_same_tensors", "tensor_id_of",
    "DTYPES",
]
