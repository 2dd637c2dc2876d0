"""`pangu-core merge`: run(args) merges like the Python API and raises clear errors for bad input."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.merge import (RECORD_NAME, MergeConfig, ModelSpec, load_checkpoint, merge_state_dicts,
                              save_checkpoint)
from pangu_core.merge import cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pangu-core merge")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    sds, paths = {}, {}
    for name in ("base", "m1", "m2"):
        sds[name] = {"w": torch.randn(30, 7, generator=g).to(torch.bfloat16), "b": torch.randn(7, generator=g)}
        paths[name] = save_checkpoint(sds[name], tmp_path / name)
    yaml_text = f"""
merge_method: ties
base_model: {paths['base']}
models:
  - model: {paths['m1']}
    parameters: {{weight: 0.6, density: 0.5}}
  - model: {paths['m2']}
    parameters: {{weight: 0.4, density: 0.7}}
dtype: float32
"""
    (tmp_path / "c.yaml").write_text(yaml_text)
    return sds, paths, str(tmp_path / "c.yaml")


# The command merges from a mergekit-style YAML exactly like the Python API and prints the folder.
def test_merge_command(inputs, tmp_path, capsys):
    sds, paths, config_path = inputs
    out = str(tmp_path / "cli_out")
    assert cli.run(_args(config_path, "--out", out, "--threads", "1", "--no-progress")) == 0
    assert capsys.readouterr().out.strip() == out
    config = MergeConfig(method="ties", base_model=paths["base"], dtype="float32",
                         models=(ModelSpec(paths["m1"], 0.6, 0.5), ModelSpec(paths["m2"], 0.4, 0.7)))
    api = merge_state_dicts({paths[k]: v for k, v in sds.items()}, config)
    got = load_checkpoint(out)
    assert set(got) == set(api) and all(torch.equal(got[k], api[k]) for k in api)
    record = json.loads((tmp_path / "cli_out" / RECORD_NAME).read_text())
    assert "input_xxh64" in record and MergeConfig.from_dict(record["config"]) == config
    assert cli.run(_args(config_path, "--out", str(tmp_path / "sha"), "--input-hash", "sha256", "--no-progress")) == 0
    assert "input_sha256" in json.loads((tmp_path / "sha" / RECORD_NAME).read_text())
    assert cli.run(_args(config_path, "--out", str(tmp_path / "none"), "--no-hash", "--no-progress")) == 0
    assert not [k for k in json.loads((tmp_path / "none" / RECORD_NAME).read_text()) if k.startswith("input_")]


# An existing output without --overwrite is a FileExistsError naming it; with --overwrite it is replaced.
def test_existing_output(inputs, tmp_path):
    _, _, config_path = inputs
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match=r"out_dir: .*out exists; pass overwrite=True \(--overwrite\)"):
        cli.run(_args(config_path, "--out", str(tmp_path / "out"), "--no-progress"))
    assert cli.run(_args(config_path, "--out", str(tmp_path / "out"), "--overwrite", "--no-progress")) == 0


# A bad or missing YAML is a ConfigError naming the file (and line); a missing input checkpoint is a
# FileNotFoundError naming it; nothing is written in either case.
def test_bad_config_and_missing_files(inputs, tmp_path):
    _, paths, _ = inputs
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: ties\nmodels: []\nparameters: {density: 2}\n")
    with pytest.raises(ConfigError) as info:
        cli.run(_args(str(bad), "--out", str(tmp_path / "x")))
    text = info.value.one_line()
    assert f"{bad}:3: parameters.density: expected a number in [0, 1], got 2.0" in text
    assert "base_model: expected a base model (method 'ties' needs one)" in text
    assert f"{bad}:2: models: expected at least one model besides the base" in text
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        cli.run(_args(str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")))
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"merge_method: task_arithmetic\nbase_model: {paths['base']}\n"
                       f"models: [{tmp_path / 'gone'}]\n")
    with pytest.raises(FileNotFoundError, match="gone: no such checkpoint folder or file"):
        cli.run(_args(str(missing), "--out", str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


# Option errors are ValueErrors naming the option.
def test_option_errors(inputs, tmp_path):
    _, _, config_path = inputs
    with pytest.raises(ValueError, match="threads: expected an int >= 1, got 0"):
        cli.run(_args(config_path, "--out", str(tmp_path / "x"), "--threads", "0"))
    with pytest.raises(ValueError, match="--no-hash: conflicts with --input-hash sha256"):
        cli.run(_args(config_path, "--out", str(tmp_path / "x"), "--no-hash", "--input-hash", "sha256"))
