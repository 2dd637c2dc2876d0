"""MergeConfig and its parts: checks, mergekit YAML translation, problems located by file:line, round trip,
and the method registry."""

from __future__ import annotations

import pytest

from pangu_core.config import ConfigError
from pangu_core.merge import (CopyRule, MergeConfig, MergeMethod, ModelSpec, Override, get_method, methods,
                              register_method)


def _problems(call) -> list[str]:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.problems


def _yaml(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# The registry refuses a second method of one name; an unknown name lists the known ones.
def test_registry():
    with pytest.raises(ValueError, match="already registered"):
        register_method(MergeMethod("ties", True))
    with pytest.raises(TypeError, match="method: expected a MergeMethod"):
        register_method("ties")
    with pytest.raises(ValueError, match="unknown merge method 'nope'; known: dare_linear, dare_ties, linear"):
        get_method("nope")
    assert get_method("dare_ties").sparsify == "random"
    assert {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp"} <= set(methods())


# Built in Python, every problem is reported at once, each naming its field path.
def test_config_reports_all_problems():
    problems = _problems(lambda: MergeConfig(
        method="ties", models=({"model": "a", "density": 2.0},), lambda_=float("nan"), t=3.0, dtype="int8", seed=-1,
        overrides=({"pattern": "[", "t": 5.0},), copy_tensors=(CopyRule("x", "zz"),), input_hash="md5"))
    text = "\n".join(problems)
    for part in ["models[0].density: expected a number in [0, 1], got 2.0", "overrides[0].t: expected a number in",
                 "overrides[0].pattern: expected a valid regular expression",
                 "base_model: expected a base model (method 'ties' needs one), got None",
                 "lambda_: expected a finite number, got nan", "t: expected a number in [0, 1], got 3.0",
                 "dtype: expected one of float32, float16, bfloat16 or null, got 'int8' (str)",
                 "seed: expected an int in [0, 2**64), got -1",
                 "input_hash: expected one of 'xxh64', 'sha256', 'none', got 'md5' (str)"]:
        assert part in text, part
    assert _problems(lambda: MergeConfig(method="linear", models=(ModelSpec("a"),), copy_tensors=(CopyRule("x", "zz"),))) \
        == ["copy_tensors[0].source: expected one of the models ['a'], got 'zz' (str)"]
    # nested parts check themselves when built
    assert "density: expected a number in [0, 1], got 2.0" in _problems(lambda: ModelSpec("a", density=2.0))
    assert any(p.startswith("pattern: expected a valid regular expression") for p in _problems(lambda: Override("[")))
    # wrong types are named too, and the rules between values still run for the other fields
    text = "\n".join(_problems(lambda: MergeConfig(method="linear", models=(ModelSpec("a"),), seed=1.5, normalize="yes")))
    assert "seed: expected an int, got 1.5" in text and "normalize: expected a bool or null, got 'yes' (str)" in text
    assert _problems(lambda: MergeConfig(method="slerp", base_model="b", models=(ModelSpec("x"), ModelSpec("y")))) == [
        "models: expected exactly one model besides the base for slerp, got 2"]
    assert _problems(lambda: MergeConfig(method="magic", models=(ModelSpec("a"),)))[0].startswith(
        "method: unknown merge method 'magic'; known: dare_linear, dare_ties, linear")


# mergekit YAML fields: per-model weight/density, top-level parameters, filtered parameter lists, dtype.
def test_mergekit_yaml(tmp_path):
    config = MergeConfig.from_yaml(_yaml(tmp_path, """
merge_method: ties
base_model: base
models:
  - model: base
  - model: a
    parameters: {weight: 0.7, density: 0.4}
  - model: b
parameters:
  density: 0.6
  normalize: false
  lambda: 0.9
  weight: 0.3
  t:
    - filter: self_attn
      value: 0.2
    - value: 0.5
dtype: bfloat16
"""))
    assert config.method == "ties" and config.dtype == "bfloat16" and config.lambda_ == 0.9
    assert [m.model for m in config.merged_models()] == ["a", "b"]
    p = config.tensor_parameters("model.layers.0.self_attn.q_proj.weight")
    # a model's own weight wins over the top-level one (mergekit's rule)
    assert p["t"] == 0.2 and p["weights"] == [0.7, 0.3] and p["densities"] == [0.4, 0.6] and p["normalize"] is False
    assert config.tensor_parameters("model.layers.0.mlp.up_proj.weight")["t"] == 0.5
    assert config.overrides == (Override("self_attn", t=0.2),)


# mergekit's out_dtype is the output dtype; its compute dtype beside it is checked and otherwise unused.
def test_out_dtype_and_plain_model_paths():
    config = MergeConfig.from_dict({"merge_method": "linear", "models": ["a", "b"], "dtype": "float32",
                                    "out_dtype": "bfloat16"})
    assert config.dtype == "bfloat16" and [m.model for m in config.models] == ["a", "b"]
    problems = _problems(lambda: MergeConfig.from_dict({"merge_method": "linear", "models": ["a"], "dtype": "int8",
                                                        "out_dtype": "float8"}))
    assert problems[0].startswith("dtype: expected one of float32, float16, bfloat16 (mergekit's compute dtype")
    assert problems[1] == "out_dtype: expected one of float32, float16, bfloat16 or null, got 'float8' (str)"


# Problems from YAML say the file and line of the key and use the YAML's key names, all at once.
def test_yaml_problems_located(tmp_path):
    path = _yaml(tmp_path, """merge_method: magic
models:
  - model: a
    parameters: {wait: 1, weight: heavy}
  - 42
foo: 1
parameters:
  t: 7
  lambda: x
  rescale: true
overrides:
  - {pattern: attn, lambda: 2, colour: red}
copy_tensors:
  - {pattern: embed}
slices: []
""")
    problems = _problems(lambda: MergeConfig.from_yaml(path))
    expected = [
        f"{path}:4: models[0].parameters.wait: unknown key; known: weight, density",
        f"{path}:5: models[1]: expected a mapping with a model key, or a path, got 42",
        f"{path}:6: foo: unknown key; known: merge_method, base_model, models",
        f"{path}:10: parameters.rescale: unknown key; known: lambda, density, normalize, t, weight",
        f"{path}:12: overrides[0].colour: unknown key; known: pattern, t, lambda, density, weight",
        f"{path}:14: copy_tensors[0].source: expected a value, got nothing",
        f"{path}:15: slices: unknown key (layer slices are not supported",
        f"{path}:1: merge_method: unknown merge method 'magic'; known: dare_linear",
        f"{path}:9: parameters.lambda: expected a number, got 'x' (str)",
        f"{path}:4: models[0].parameters.weight: expected a number, got 'heavy' (str)",
        f"{path}:8: parameters.t: expected a number in [0, 1], got 7.0",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected)


# The YAML reader refuses duplicate keys, syntax errors and missing files, naming file and line.
def test_yaml_reader_errors(tmp_path):
    path = _yaml(tmp_path, "merge_method: linear\nmodels: [a]\nmerge_method: ties\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: merge_method: duplicate key \(first at line 1\)"):
        MergeConfig.from_yaml(path)
    path = _yaml(tmp_path, "merge_method: linear\nmodels: [a\n", "syntax.yaml")
    with pytest.raises(ConfigError, match=r"syntax.yaml:\d+: YAML syntax"):
        MergeConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="missing.yaml: no such file"):
        MergeConfig.from_yaml(tmp_path / "missing.yaml")
    path = _yaml(tmp_path, "- merge_method: linear\n", "list.yaml")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of merge fields"):
        MergeConfig.from_yaml(path)
    path = _yaml(tmp_path, "", "empty.yaml")
    assert "merge_method: expected a merge method (known: dare_linear" in str(
        pytest.raises(ConfigError, MergeConfig.from_yaml, path).value)


def _full_config() -> MergeConfig:
    return MergeConfig(method="dare_ties", base_model="base",
                       models=(ModelSpec("base"), ModelSpec("a", 0.7, 0.4), ModelSpec("b", -0.25)),
                       lambda_=0.9, density=0.6, normalize=False, t=0.25, dtype="bfloat16", seed=12,
                       overrides=(Override("self_attn", t=0.2, lambda_=1.5), Override(r"layers\.[0-3]\.", density=0.1)),
                       copy_tensors=(CopyRule("embed_tokens", "a"),), max_shard_bytes=12345, input_hash="sha256")


# Round trip: dict and YAML (mergekit-shaped) give back an equal config; defaults survive too.
@pytest.mark.parametrize("config", [_full_config(), MergeConfig(method="linear", models=(ModelSpec("a"),))])
def test_round_trip(config, tmp_path):
    data = config.to_dict()
    assert data["merge_method"] == config.method and "lambda" in data["parameters"]
    assert MergeConfig.from_dict(data) == config
    path = tmp_path / "out.yaml"
    text = config.to_yaml(path)
    assert text.startswith("merge_method:")
    assert MergeConfig.from_yaml(path) == config
    assert config.replace(seed=3).seed == 3 and config.replace(seed=3).models == config.models


# The old field-name spelling of a dict is refused with the known keys, not half-read.
def test_field_names_are_not_mergekit_keys():
    problems = _problems(lambda: MergeConfig.from_dict({"merge_method": "linear", "models": ["a"], "lambda_": 2.0}))
    assert problems == ["lambda_: unknown key; known: merge_method, base_model, models, parameters, dtype, out_dtype, "
                        "seed, overrides, copy_tensors, max_shard_bytes, input_hash"]
    both = _problems(lambda: MergeConfig.from_dict({"merge_method": "linear", "method": "ties", "models": ["a"]}))
    assert both == ["method: expected merge_method or method, got both"]
    assert MergeConfig.from_dict({"method": "linear", "models": ["a"]}).method == "linear"
