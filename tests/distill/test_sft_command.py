"""`pangu-core sft` as a new user meets it: config mistakes, the output folder, what it prints, resuming."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pangu_core.config import ConfigError
from pangu_core.distill import sft_cli

# A run of seconds: 64 problems, 4 steps of 8, a few short test answers.
TINY = {"train_problems": 64, "levels": [1, 2], "test_per_level": 4, "num_threads": 1,
        "trainer": {"max_steps": 4, "batch_size": 8, "warmup_steps": 1, "log_every": 1},
        "eval": {"max_new_tokens": 8, "batch_size": 8}}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _command(*argv):
    parser = argparse.ArgumentParser()
    sft_cli.add_arguments(parser)
    return sft_cli.run(parser.parse_args([str(a) for a in argv]))


def _write(path, config):
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_small_run_writes_checkpoint_eval_json_and_plot_and_says_where(tmp_path, capsys):
    # End to end through the command: eval.json is keyed by mode then level, the plot exists, stdout is
    # a JSON summary naming the files, stderr a start line, a line per tenth of the steps and the paths.
    config = {**TINY, "curriculum": [{"share": 0.34, "level_weights": [1, 0]},
                                     {"share": 0.66, "level_weights": [1, 1]}]}
    path = _write(tmp_path / "run.yaml", config)
    out = tmp_path / "out"
    assert _command("--config", path, "--out", out, "--no-progress") == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result["accuracy"]) == {"slow", "fast"} and set(result["tokens"]["fast"]) == {"1", "2"}
    assert (out / "eval.png").is_file() and (out / "checkpoint" / "model.safetensors").is_file()
    assert result["train"]["steps"] == 4 and result["train"]["resumed_from_step"] == 0
    assert sft_cli.SFTRunConfig.from_dict(result["config"]) == sft_cli.load_run_config(path)
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["accuracy"] == result["accuracy"]
    assert summary["files"] == {"checkpoint": str(out / "checkpoint"), "eval_json": str(out / "eval.json"),
                                "eval_png": str(out / "eval.png")}
    assert "Writing model shards" not in captured.err  # transformers' bar at each checkpoint stays quiet
    lines = captured.err.splitlines()
    assert lines[0] == (f"pangu-core sft: {path}: model nano, 4 steps of 8, levels 1, 2, 1 thread(s) x 1 "
                        f"process(es), out {out}")
    steps = [line for line in lines if line.startswith("pangu-core sft: step ")]
    assert [line.split()[3] for line in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(" loss " in line and line.endswith(" s") for line in steps)
    assert lines[-1] == (f"pangu-core sft: wrote {out / 'checkpoint'} (weights, tokenizer, training state), "
                         f"{out / 'eval.json'}, {out / 'eval.png'}")


@pytest.mark.parametrize("make, error, message", [
    (lambda d: d / "missing.yaml", ConfigError, "missing.yaml: no such file"),
    (lambda d: d, ConfigError, "is a directory, expected a YAML file"),
    (lambda d: _write(d / "bad.yaml", {"trainer": {"lr": 1}}), ConfigError,
     "bad.yaml:2: trainer.lr: unknown key; known: max_steps"),
    (lambda d: _write(d / "bad.yaml", {"num_processes": 0}), ConfigError,
     "bad.yaml:1: num_processes: expected an int >= 1, got 0"),
    (lambda d: _write(d / "bad.yaml", {"eval": {"max_new_tokens": 0}}), ValueError, "max_new_tokens"),
    (lambda d: (d / "bad.yaml").write_text("levels: [1,\n") and d / "bad.yaml", ConfigError, "YAML syntax"),
])
def test_config_mistakes_surface_as_errors_from_run(tmp_path, make, error, message):
    # Every config mistake is an exception the top-level command prints on one line; nothing is written.
    with pytest.raises(error, match=message.replace("[", r"\[")):
        _command("--config", make(tmp_path), "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_and_quick_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _command("--quick", "--config", tmp_path / "x.yaml", "--out", tmp_path / "out")
    assert "not allowed with argument" in capsys.readouterr().err


def test_out_must_be_new_or_empty_unless_overwrite(tmp_path):
    # A finished run, foreign files or a plain file at --out are refused with a message that says what
    # to do; --overwrite replaces the run's own files and keeps the others.
    path = _write(tmp_path / "run.yaml", TINY)
    out = tmp_path / "out"
    _command("--config", path, "--out", out, "--no-progress")
    first = load_file(out / "checkpoint" / "model.safetensors")
    with pytest.raises(FileExistsError, match="holds a finished run .eval.json.; give --overwrite"):
        _command("--config", path, "--out", out, "--no-progress")
    (out / "notes.txt").write_text("mine")
    _command("--config", _write(tmp_path / "other.yaml", {**TINY, "data_seed": 1}), "--out", out, "--no-progress",
             "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "eval.json").read_text())["config"]["data_seed"] == 1
    assert any(not torch.equal(first[k], v) for k, v in load_file(out / "checkpoint" / "model.safetensors").items())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2")
    with pytest.raises(FileExistsError, match=r"is not empty \(data.csv\); give --overwrite"):
        _command("--config", path, "--out", foreign)
    with pytest.raises(NotADirectoryError, match="is a file, expected a directory"):
        _command("--config", path, "--out", foreign / "data.csv")
    assert sorted(p.name for p in foreign.iterdir()) == ["data.csv"]


def test_an_interrupted_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch, capsys):
    # A run stopped after the checkpoint of step 2 continues there when started again with the same
    # config and --out, and ends with the weights of a straight run; another config is refused there.
    path = _write(tmp_path / "run.yaml", TINY)
    _command("--config", path, "--out", tmp_path / "straight", "--no-progress")
    from pangu_core.distill.sft import SFTTrainer

    save = SFTTrainer.save_checkpoint

    def save_then_stop(trainer, where):
        save(trainer, where)
        if trainer.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(SFTTrainer, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _command("--config", path, "--out", tmp_path / "out", "--no-progress")
    monkeypatch.setattr(SFTTrainer, "save_checkpoint", save)
    with pytest.raises(FileExistsError, match="unfinished run of another config"):
        _command("--config", _write(tmp_path / "other.yaml", {**TINY, "data_seed": 1}), "--out", tmp_path / "out")
    capsys.readouterr()
    _command("--config", path, "--out", tmp_path / "out", "--no-progress")
    assert "resuming the unfinished run in" in capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert result["train"]["resumed_from_step"] == 2 and result["train"]["steps"] == 4
    straight = json.loads((tmp_path / "straight" / "eval.json").read_text())
    assert result["train"]["loss_last"] == straight["train"]["loss_last"]
    a, b = (load_file(tmp_path / run / "checkpoint" / "model.safetensors") for run in ("straight", "out"))
    assert all(torch.equal(a[name], b[name]) for name in a)
