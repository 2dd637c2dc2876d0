"""Translation between mergekit's YAML shape and the fields of :class:`pangu_core.merge.MergeConfig`.

mergekit nests per-model values under ``parameters``, spells lambda without the underscore, may give
a top-level parameter as a filtered list and has ``out_dtype``. :func:`from_mergekit` turns such a
mapping into MergeConfig keyword arguments plus ``origins``: which mapping key each field path came
from, so that :func:`relocate` can name a problem by the key the user wrote (and ``from_yaml`` by its
line). :func:`to_mergekit` writes a config back in that shape. Works on plain data only: no config
class is imported here.
"""

from __future__ import annotations

from typing import Any, Mapping

from pangu_core.config import describe_value
from pangu_core.merge.registry import methods
from pangu_core.tensors import FLOAT_DTYPE_NAMES

TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "seed", "overrides",
            "copy_tensors", "max_shard_bytes", "input_hash")
# top-level `parameters` key -> MergeConfig field (weight: the default of models without their own)
PARAMETERS = {"lambda": "lambda_", "density": "density", "normalize": "normalize", "t": "t", "weight": "weight"}
FILTERED = ("lambda", "density", "t", "weight")  # parameters that may be filtered lists
MODEL_KEYS = ("model", "parameters")
MODEL_PARAMETERS = ("weight", "density")
OVERRIDE_KEYS = {"pattern": "pattern", "t": "t", "lambda": "lambda_", "density": "density", "weight": "weight"}
COPY_KEYS = ("pattern", "source")
_HINTS = {"slices": " (layer slices are not supported; list whole models under models)",
          "tokenizer_source": " (the tokenizer files of the base, or the first model, are copied)"}


def _known(keys: Any) -> str:
    return ", ".join(keys)


def _list(data: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        problems.append(f"{key}: expected a list, got {describe_value(value)}")
        return []
    return list(value)


def _mapping(value: Any, where: str, problems: list[str]) -> Mapping[str, Any]:
    """``value`` if it is a mapping, {} if absent; otherwise {} and a problem naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where}: expected a mapping, got {describe_value(value)}")
        return {}
    return value


def _entry(item: Any, where: str, keys: Any, required: tuple[str, ...], what: str, problems: list[str]) -> bool:
    """Checks one list entry: a mapping with ``required`` keys and no key outside ``keys``."""
    if not isinstance(item, Mapping):
        problems.append(f"{where}: expected {what}, got {describe_value(item)}")
        return False
    problems.extend(f"{where}.{key}: unknown key; known: {_known(keys)}" for key in item if key not in keys)
    missing = [key for key in required if key not in item]
    problems.extend(f"{where}.{key}: expected a value, got nothing" for key in missing)
    return not missing


def from_mergekit(data: Any) -> tuple[dict[str, Any] | None, dict[str, str], list[str]]:
    """MergeConfig keyword arguments from a mergekit-style mapping.

    Returns (kwargs, origins, problems): ``origins`` maps MergeConfig field paths (``models[0].weight``)
    to the mapping's key paths (``models[0].parameters.weight``); ``problems`` are those found in the
    mapping's shape, named by its keys. kwargs is None when ``data`` is not a mapping.
    """
    problems: list[str] = []
    origins: dict[str, str] = {}
    if not isinstance(data, Mapping):
        return None, origins, [f"expected a mapping of merge fields ({_known(TOP_KEYS[:4])}, ...), "
                               f"got {describe_value(data)}"]
    for key in data:
        if key not in TOP_KEYS and key != "method":
            problems.append(f"{key}: unknown key{_HINTS.get(key, '')}; known: {_known(TOP_KEYS)}")
    kwargs: dict[str, Any] = {}

    # method ("method" is accepted for merge_method)
    if "merge_method" in data and "method" in data:
        problems.append("method: expected merge_method or method, got both")
    key = "merge_method" if "merge_method" in data or "method" not in data else "method"
    origins["method"] = key
    kwargs["method"] = data.get(key)
    if key not in data:
        problems.append(f"{key}: expected a merge method (known: {_known(methods())}), got nothing")

    # explicit overrides first: the first matching override wins, so they come before filtered lists
    overrides: list[dict[str, Any]] = []
    for i, item in enumerate(_list(data, "overrides", problems)):
        where = f"overrides[{i}]"
        if _entry(item, where, OVERRIDE_KEYS, ("pattern",), "a mapping with pattern and t, lambda, density or weight",
                  problems):
            origins[f"overrides[{len(overrides)}]"] = where
            for name, field in OVERRIDE_KEYS.items():
                origins[f"overrides[{len(overrides)}].{field}"] = f"{where}.{name}"
            overrides.append({OVERRIDE_KEYS[k]: v for k, v in item.items() if k in OVERRIDE_KEYS})

    # top-level parameters; a filtered list becomes overrides plus the default given without a filter
    parameters = _mapping(data.get("parameters"), "parameters", problems)
    default_weight: tuple[Any, str] | None = None
    for name, value in parameters.items():
        if name not in PARAMETERS:
            problems.append(f"parameters.{name}: unknown key; known: {_known(PARAMETERS)}")
            continue
        field, where = PARAMETERS[name], f"parameters.{name}"
        if isinstance(value, (list, tuple)) and name in FILTERED:
            default = None
            for j, item in enumerate(value):
                at = f"{where}[{j}]"
                if not _entry(item, at, ("filter", "value"), ("value",), "a mapping {filter: NAME, value: NUMBER}",
                              problems):
                    continue
                if isinstance(item["value"], (list, tuple)):
                    problems.append(f"{at}.value: expected a number (gradients over layers are not supported), "
                                    f"got {describe_value(item['value'])}")
                elif item.get("filter") is None:
                    default = (item["value"], f"{at}.value")
                else:
                    k = len(overrides)
                    origins.update({f"overrides[{k}]": at, f"overrides[{k}].pattern": f"{at}.filter",
                                    f"overrides[{k}].{field}": f"{at}.value"})
                    overrides.append({"pattern": item["filter"], field: item["value"]})
            if default is None:
                continue
            value, where = default
        if field == "weight":
            default_weight = (value, where)
        else:
            kwargs[field] = value
            origins[field] = where
    kwargs["overrides"] = overrides

    # models: a plain path or {model, parameters: {weight, density}}; parameters of the model win
    models: list[dict[str, Any]] = []
    for i, item in enumerate(_list(data, "models", problems)):
        where = f"models[{i}]"
        if isinstance(item, str):
            item = {"model": item}
        if not _entry(item, where, MODEL_KEYS, ("model",), "a mapping with a model key, or a path", problems):
            continue
        own = _mapping(item.get("parameters"), f"{where}.parameters", problems)
        problems.extend(f"{where}.parameters.{k}: unknown key; known: {_known(MODEL_PARAMETERS)}"
                        for k in own if k not in MODEL_PARAMETERS)
        j = len(models)
        spec = {"model": item["model"]}
        origins[f"models[{j}]"] = where
        for name in MODEL_PARAMETERS:
            if name in own:
                spec[name] = own[name]
                origins[f"models[{j}].{name}"] = f"{where}.parameters.{name}"
        if "weight" not in spec and default_weight is not None:
            spec["weight"], origins[f"models[{j}].weight"] = default_weight
        models.append(spec)
    kwargs["models"] = models

    copies: list[dict[str, Any]] = []
    for i, item in enumerate(_list(data, "copy_tensors", problems)):
        if _entry(item, f"copy_tensors[{i}]", COPY_KEYS, COPY_KEYS, "a mapping with pattern and source", problems):
            origins[f"copy_tensors[{len(copies)}]"] = f"copy_tensors[{i}]"
            copies.append(dict(item))
    kwargs["copy_tensors"] = copies

    # out_dtype is the output dtype where given; mergekit's dtype beside it is its compute dtype
    if "out_dtype" in data:
        kwargs["dtype"], origins["dtype"] = data["out_dtype"], "out_dtype"
        compute = data.get("dtype")
        if compute is not None and compute not in FLOAT_DTYPE_NAMES:
            problems.append(f"dtype: expected one of {_known(FLOAT_DTYPE_NAMES)} (mergekit's compute dtype; "
                            f"ours is always float32), got {describe_value(compute)}")
    elif "dtype" in data:
        kwargs["dtype"] = data["dtype"]
    for key in ("base_model", "seed", "max_shard_bytes", "input_hash"):
        if key in data:
            kwargs[key] = data[key]
    return kwargs, origins, problems


def to_mergekit(config: Any) -> dict[str, Any]:
    """A MergeConfig as a mergekit-shaped mapping of plain data; every field is written."""
    models = []
    for m in config.models:
        parameters = {"weight": m.weight} if m.density is None else {"weight": m.weight, "density": m.density}
        models.append({"model": m.model, "parameters": parameters})
    overrides = []
    for o in config.overrides:
        entry = {"pattern": o.pattern}
        entry.update({name: getattr(o, field) for name, field in OVERRIDE_KEYS.items()
                      if name != "pattern" and getattr(o, field) is not None})
        overrides.append(entry)
    return {
        "merge_method": config.method,
        "base_model": config.base_model,
        "models": models,
        "parameters": {"lambda": config.lambda_, "density": config.density, "t": config.t,
                       "normalize": config.normalize},
        "dtype": config.dtype,
        "seed": config.seed,
        "overrides": overrides,
        "copy_tensors": [{"pattern": c.pattern, "source": c.source} for c in config.copy_tensors],
        "max_shard_bytes": config.max_shard_bytes,
        "input_hash": config.input_hash,
    }


def relocate(problem: str, origins: Mapping[str, str]) -> str:
    """``problem`` ("field.path: ...") with its field path renamed to the mapping key it came from:
    the longest prefix of the path found in ``origins`` is replaced."""
    field, colon, rest = problem.partition(":")
    prefix = field
    while prefix:
        if prefix in origins:
            return origins[prefix] + field[len(prefix):] + colon + rest
        cut = max(prefix.rfind("."), prefix.rfind("["))
        prefix = prefix[:cut] if cut > 0 else ""
    return problem
