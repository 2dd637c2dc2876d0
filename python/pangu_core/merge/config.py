"""The merge config: the method, the input models and the parameters, read from mergekit-style YAML.

:class:`MergeConfig` is a typed config (:class:`pangu_core.config.Config`): building one checks every
field and reports every problem at once. Its dict and YAML form is mergekit's shape, so a mergekit
YAML file loads as it is (``MergeConfig.from_yaml``) and ``to_dict`` / ``to_yaml`` write that shape
back; problems name the YAML key (``parameters.lambda``, ``models[1].parameters.weight``) and, from
a file, its line.

``dtype`` is the OUTPUT dtype of the merged checkpoint. Accumulation is always float32, whatever the
inputs and ``dtype`` are. mergekit instead computes in its ``dtype`` (and writes ``out_dtype``), so a
mergekit bfloat16 TIES merge differs from ours by more than one bfloat16 ulp in places: ours rounds
once, at the end.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch

from pangu_core.config import Config, ConfigError, describe_value, expect, expect_name, is_number
from pangu_core.merge.mergekit_yaml import from_mergekit, relocate, to_mergekit
from pangu_core.merge.registry import MergeMethod, get_method, methods
from pangu_core.tensors import DTYPES, FLOAT_DTYPE_NAMES

InputHash = Literal["xxh64", "sha256", "none"]
# Digests of the input files recorded by folder merges: XXH64 (fast, non-cryptographic: identifies
# the inputs; `xxhsum -H1` checks it), SHA-256 (cryptographic, about 4x slower here), or none.
INPUT_HASHES: tuple[str, ...] = typing.get_args(InputHash)


def _pattern_problems(pattern: str) -> list[str]:
    if not isinstance(pattern, str):
        return []  # the type is reported already
    if not pattern:
        return [f"pattern: expected a non-empty name or regular expression, got {describe_value(pattern)}"]
    try:
        re.compile(pattern)
    except re.error as error:
        return [f"pattern: expected a valid regular expression ({error}), got {describe_value(pattern)}"]
    return []


# validate() also runs when some fields have the wrong type (to report everything at once), so these
# helpers never raise; a problem they add for a wrongly typed field is dropped by the mixin.
def _in_unit(value: float) -> bool:
    return is_number(value) and 0.0 <= value <= 1.0  # False for NaN


def _finite(value: float) -> bool:
    return is_number(value) and math.isfinite(value)


@dataclass(frozen=True)
class ModelSpec(Config):
    """One input model: a checkpoint folder or file (or a state-dict key) with its weight and density."""

    # checkpoint folder or safetensors file (folder merges), or the state dict's key (in-memory merges)
    model: str
    # w_i: the model's weight in the weighted sum
    weight: float = 1.0
    # kept fraction of the model's task vector for ties / dare_*, in [0, 1]; None: the config's density
    density: float | None = None

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, bool(self.model), "model", "a non-empty path or name", self.model)
        expect(problems, _finite(self.weight), "weight", "a finite number", self.weight)
        if self.density is not None:
            expect(problems, _in_unit(self.density), "density", "a number in [0, 1]", self.density)
        return problems


@dataclass(frozen=True)
class Override(Config):
    """Parameters for tensors whose name contains ``pattern`` (or matches it as a regex).

    Only the fields given (not None) replace the config's values; ``weight`` and ``density`` then
    apply to every model. The first matching override wins.
    """

    # substring or regular expression (re.search) of tensor names
    pattern: str
    # slerp's interpolation point for these tensors, in [0, 1]
    t: float | None = None
    # scale of the merged task vector (YAML key: lambda)
    lambda_: float | None = None
    # kept fraction of every task vector, in [0, 1]
    density: float | None = None
    # weight of every model
    weight: float | None = None

    def validate(self) -> list[str]:
        problems = _pattern_problems(self.pattern)
        for key in ("t", "density"):
            value = getattr(self, key)
            if value is not None:
                expect(problems, _in_unit(value), key, "a number in [0, 1]", value)
        for key in ("lambda_", "weight"):
            value = getattr(self, key)
            if value is not None:
                expect(problems, _finite(value), key, "a finite number", value)
        return problems

    def matches(self, name: str) -> bool:
        """Whether tensor ``name`` contains the pattern or matches it as a regular expression."""
        return self.pattern in name or re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class CopyRule(Config):
    """Tensors whose name contains ``pattern`` (or matches it as a regex) are copied from ``source``.

    A copied tensor is the source's values in the output dtype (the config's ``dtype``, else the
    base's or first model's dtype of that tensor), like every other tensor of the output.
    """

    # substring or regular expression (re.search) of tensor names
    pattern: str
    # the model (one of the config's models or its base_model) the tensors come from
    source: str

    def validate(self) -> list[str]:
        return _pattern_problems(self.pattern)

    def matches(self, name: str) -> bool:
        """Whether tensor ``name`` contains the pattern or matches it as a regular expression."""
        return self.pattern in name or re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class MergeConfig(Config):
    """A merge, fully described; checks itself on construction and reports every problem at once.

    Dict / YAML form (mergekit's fields, plus ours: seed, overrides, copy_tensors, max_shard_bytes,
    input_hash)::

        merge_method: ties          # a registered method (pangu_core.merge.methods())
        base_model: ./base          # needed by every method but linear
        models:
          - model: ./math
            parameters: {weight: 1.0, density: 0.5}
        parameters: {lambda: 1.0, density: 0.5, normalize: true, t: 0.5}
        dtype: bfloat16             # OUTPUT dtype; accumulation is always float32
        seed: 0                     # DARE draws
        overrides: [{pattern: self_attn, t: 0.3}]
        copy_tensors: [{pattern: embed_tokens, source: ./base}]
        max_shard_bytes: 2147483648
        input_hash: xxh64           # digest of the input files in the record: xxh64, sha256 or none

    mergekit's forms are accepted too: ``models`` entries as plain paths, a top-level parameter
    given as a filtered list (``t: [{filter: self_attn, value: 0.3}, {value: 0.5}]``: each filter
    becomes an override), top-level ``weight`` for models without their own, ``out_dtype`` (then the
    output dtype; mergekit's compute ``dtype`` beside it is checked and otherwise unused, since we
    always accumulate in float32), and ``method`` for ``merge_method``. Layer ``slices`` are not.

    ``dtype`` is the dtype of every floating tensor written: merged, copied (``copy_tensors``) and
    passed through (float64 buffers). None: each tensor keeps the dtype it has in the base (or the
    first model). Integer tensors always keep theirs.
    """

    # merge method name, looked up in the registry
    method: str
    # the input models; an entry naming base_model is left out of the merged task vectors
    models: tuple[ModelSpec, ...]
    # the model task vectors are taken against (theta_i - base); slerp's t = 0 end
    base_model: str | None = None
    # scale of the merged task vector (YAML: parameters.lambda)
    lambda_: float = 1.0
    # kept fraction of each task vector for ties / dare_* (models may set their own), in [0, 1]
    density: float = 1.0
    # divide by the sum of the (agreeing) weights; None: the method's default (linear and ties: true)
    normalize: bool | None = None
    # slerp's interpolation point: 0 is the base, 1 the other model
    t: float = 0.5
    # OUTPUT dtype (float32, float16 or bfloat16); None: each tensor's dtype in the base or first model
    dtype: str | None = None
    # seed of DARE's random drops (draws depend on seed, tensor name, model and element only)
    seed: int = 0
    # per-tensor parameters; the first matching override wins
    overrides: tuple[Override, ...] = ()
    # tensors copied unchanged (in the output dtype) from one model instead of merged
    copy_tensors: tuple[CopyRule, ...] = ()
    # largest output shard of a folder merge, in bytes (a bigger single tensor gets its own shard)
    max_shard_bytes: int = 2 << 30
    # digest of each input file recorded in a folder merge's metadata
    input_hash: InputHash = "xxh64"

    def validate(self) -> list[str]:
        problems: list[str] = []
        method = get_method(self.method) if expect_name(problems, "method", self.method, methods(),
                                                        "merge method") else None
        if self.base_model is not None:
            expect(problems, bool(self.base_model), "base_model", "a non-empty path or name, or null", self.base_model)
        models_ok = isinstance(self.models, tuple) and all(isinstance(m, ModelSpec) for m in self.models)
        if method is not None and method.needs_base:
            expect(problems, self.base_model is not None, "base_model",
                   f"a base model (method {self.method!r} needs one)", self.base_model)
        if method is not None and models_ok:
            inputs = self.merged_models()
            if method.is_slerp:
                expect(problems, len(inputs) == 1, "models", "exactly one model besides the base for slerp",
                       len(inputs))
            else:
                expect(problems, len(inputs) > 0, "models", "at least one model besides the base", len(inputs))
        expect(problems, _finite(self.lambda_), "lambda_", "a finite number", self.lambda_)
        expect(problems, _in_unit(self.density), "density", "a number in [0, 1]", self.density)
        expect(problems, _in_unit(self.t), "t", "a number in [0, 1]", self.t)
        if self.dtype is not None:
            expect(problems, self.dtype in FLOAT_DTYPE_NAMES, "dtype",
                   f"one of {', '.join(FLOAT_DTYPE_NAMES)} or null", self.dtype)
        expect(problems, isinstance(self.seed, int) and 0 <= self.seed < 2**64, "seed", "an int in [0, 2**64)",
               self.seed)
        expect(problems, isinstance(self.max_shard_bytes, int) and self.max_shard_bytes >= 1, "max_shard_bytes",
               "an int >= 1", self.max_shard_bytes)
        if models_ok and isinstance(self.copy_tensors, tuple):
            known = sorted({m.model for m in self.models} | ({self.base_model} if self.base_model else set()))
            for i, rule in enumerate(self.copy_tensors):
                if isinstance(rule, CopyRule):
                    expect(problems, rule.source in known, f"copy_tensors[{i}].source",
                           f"one of the models {known}", rule.source)
        return problems

    def merged_models(self) -> tuple[ModelSpec, ...]:
        """The models whose task vectors are merged (entries naming the base model are left out)."""
        if self.base_model is None or self.method == "linear":
            return self.models
        return tuple(m for m in self.models if m.model != self.base_model)

    def method_spec(self) -> MergeMethod:
        """The registry entry of ``method``."""
        return get_method(self.method)

    def sources(self) -> list[str]:
        """Every checkpoint the merge reads, base first, each once."""
        out = [self.base_model] if self.base_model else []
        for m in self.models:
            if m.model not in out:
                out.append(m.model)
        return out

    def reference(self) -> str:
        """The model whose tensors set names, shapes and default dtypes: the base, else the first model."""
        return self.base_model or self.models[0].model

    def output_dtype(self, reference_dtype: torch.dtype) -> torch.dtype:
        """The dtype written for a tensor whose reference copy (:meth:`reference`) has ``reference_dtype``:
        ``dtype`` for floating tensors when set (merged, copied or passed through alike), else the
        reference's own."""
        if self.dtype is not None and reference_dtype.is_floating_point:
            return DTYPES[self.dtype]
        return reference_dtype

    def tensor_parameters(self, name: str) -> dict[str, Any]:
        """The parameters in force for tensor ``name`` after overrides: t, lambda, weights, densities,
        normalize (weights and densities: one per merged model)."""
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
        """The model tensor ``name`` is copied from, or None when it is merged."""
        return next((c.source for c in self.copy_tensors if c.matches(name)), None)

    def to_dict(self) -> dict[str, Any]:
        """The config in mergekit's shape (see the class docstring); ``from_dict`` reads it back equal."""
        return to_mergekit(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MergeConfig":
        """Builds a config from a mergekit-style mapping (see the class docstring).

        Raises :class:`ConfigError` listing every problem at once, each named by its key in the
        mapping (``models[1].parameters.weight: expected a number, got 'x' (str)``); unknown keys list
        the known ones. ``from_yaml`` (inherited) adds the file and line of each key.
        """
        if isinstance(values, cls):
            return values
        kwargs, origins, problems = from_mergekit(values)
        if kwargs is None:
            raise ConfigError(cls.__name__, problems)
        try:
            config = cls(**kwargs)
        except ConfigError as error:
            reported = {p.split(":", 1)[0] for p in problems}
            for problem in error.problems:
                problem = relocate(problem, origins)
                if problem.split(":", 1)[0] not in reported:  # said already, in the mapping's terms
                    problems.append(problem)
            raise ConfigError(cls.__name__, problems) from None
        if problems:
            raise ConfigError(cls.__name__, problems)
        return config
