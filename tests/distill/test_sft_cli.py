"""The `pangu-core sft` command: config files, validation, and the files a run writes."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml

from pangu_core.distill import sft_cli
from pangu_core.distill.sft_cli import CONFIG_DIR, SFTRunConfig, load_run_config


def test_shipped_configs_load_and_document_every_field():
    # The YAML twins name every field, each with a comment line above it.
    for name in ("sft_default.yaml", "sft_quick.yaml"):
        config = load_run_config(CONFIG_DIR / name)
        assert isinstance(config, SFTRunConfig)
        lines = (CONFIG_DIR / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip() and not line.strip().startswith("#") and not line.rstrip().endswith(":"):
                assert lines[index - 1].strip().startswith("#"), f"{name}: no comment above {line!r}"
    assert load_run_config(CONFIG_DIR / "sft_default.yaml").eval.modes == ("slow", "fast")


def test_config_errors_are_reported_together(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model_size": "huge", "fast_fraction": 2, "trainer": {"max_steps": 0}, "levels": [9]}))
    with pytest.raises(ValueError) as error:
        load_run_config(path)
    assert all(n in str(error.value) for n in ("model_size", "fast_fraction", "trainer", "max_steps", "levels"))
    with pytest.raises(FileNotFoundError, match="config"):
        load_run_config(tmp_path / "missing.yaml")


def test_a_small_run_writes_checkpoint_eval_json_and_plot(tmp_path, capsys):
    # End to end through the command: eval.json is keyed by mode then level, the plot exists.
    before = torch.get_num_threads()
    config = {"train_problems": 64, "levels": [1, 2], "test_per_level": 4, "num_threads": 1,
              "curriculum": [{"share": 0.34, "level_weights": [1, 0]}, {"share": 0.66, "level_weights": [1, 1]}],
              "trainer": {"max_steps": 3, "batch_size": 8, "warmup_steps": 1, "log_every": 1},
              "eval": {"max_new_tokens": 8, "batch_size": 8}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    parser = argparse.ArgumentParser()
    sft_cli.add_arguments(parser)
    try:
        code = sft_cli.run(parser.parse_args(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out"), "--no-progress"]))
    finally:
        torch.set_num_threads(before)
    assert code == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(result["accuracy"]) == {"slow", "fast"} and set(result["tokens"]["fast"]) == {"1", "2"}
    assert (tmp_path / "out" / "eval.png").is_file() and (tmp_path / "out" / "checkpoint" / "model.safetensors").is_file()
    assert result["train"]["steps"] == 3
    assert json.loads(capsys.readouterr().out)["accuracy"] == result["accuracy"]


def test_level_weights_set_how_many_problems_each_level_gets():
    config = SFTRunConfig(train_problems=101, levels=(1, 2, 3), level_weights=(1, 3, 0))
    counts = sft_cli.level_counts(config)
    assert counts[3] == 0 and sum(counts.values()) == 101 and counts[2] in (75, 76)
    [(end, pairs)] = sft_cli.build_training_stages(config)
    assert end == config.trainer.max_steps
    assert len(pairs) == 101 and not any(prompt.count("+") + prompt.count("-") == 2 for prompt, _, _ in pairs)
    # Without weights the levels are even.
    even = sft_cli.level_counts(SFTRunConfig(train_problems=10, levels=(1, 2)))
    assert even == {1: 5, 2: 5}
    with pytest.raises(ValueError, match="level_weights"):
        SFTRunConfig(levels=(1, 2), level_weights=(1,))
    with pytest.raises(ValueError, match="level_weights"):
        SFTRunConfig(levels=(1, 2), level_weights=(0, 0))
    with pytest.raises(ValueError, match="level_weights"):
        SFTRunConfig(levels=(1, 2), level_weights=(1, -1))


def test_fast_fraction_can_be_given_per_level():
    # One share per level: level 1 all fast, level 2 all slow; a single number applies to every level.
    config = SFTRunConfig.from_dict({"train_problems": 40, "levels": [1, 2], "fast_fraction": [1, 0]})
    assert sft_cli.fast_fractions(config) == {1: 1, 2: 0}
    [(_, pairs)] = sft_cli.build_training_stages(config)
    modes = {len(prompt) == 3: mode for prompt, mode, _ in pairs}
    assert len(pairs) == 40 and modes == {True: "fast", False: "slow"}
    assert all((mode == "fast") == (len(prompt) == 3) for prompt, mode, _ in pairs)
    assert sft_cli.fast_fractions(SFTRunConfig(levels=(1, 3), fast_fraction=0.25)) == {1: 0.25, 3: 0.25}
    for bad in ([0.5], [0.5, 1.5], [0.5, True], "half"):
        with pytest.raises(ValueError, match="fast_fraction: expected a number in"):
            SFTRunConfig.from_dict({"levels": [1, 2], "fast_fraction": bad})


def test_a_curriculum_changes_the_levels_between_stages():
    # Two stages: the first half of the steps sees level 2 only, the second level 3 only; each
    # level's problems are dealt out once, so no prompt is in both stages.
    config = SFTRunConfig.from_dict({
        "train_problems": 60, "levels": [1, 2, 3], "trainer": {"max_steps": 9},
        "curriculum": [{"share": 0.5, "level_weights": [0, 1, 0]}, {"share": 0.5, "level_weights": [0, 1, 2]}]})
    assert sft_cli.stage_plan(config) == [(4, {1: 0, 2: 30, 3: 0}), (9, {1: 0, 2: 10, 3: 20})]
    (first_end, first), (second_end, second) = sft_cli.build_training_stages(config)
    assert (first_end, len(first), second_end, len(second)) == (4, 30, 9, 30)
    assert all(len(p) == 5 for p, _, _ in first) and sum(len(p) == 8 for p, _, _ in second) == 20
    level2 = [p for p, _, _ in first + second if len(p) == 5]
    assert len(set(level2)) == len(level2) == 40


@pytest.mark.parametrize("changes, message", [
    ({"level_weights": [1, 1]}, "level_weights or curriculum, not both"),
    ({"curriculum": [{"share": 0.5, "level_weights": [1, 1]}]}, "shares to add up to 1"),
    ({"curriculum": [{"share": 1.0, "level_weights": [1]}]}, r"curriculum\[0\].level_weights"),
    ({"curriculum": [{"share": 1.0, "weights": [1, 1]}]}, r"curriculum\[0\]: CurriculumStage: unknown keys"),
    ({"curriculum": [{"share": 0, "level_weights": [1, 1]}]}, r"curriculum\[0\]: share"),
    ({"curriculum": [{"share": 0.99, "level_weights": [1, 1]}, {"share": 0.01, "level_weights": [1, 1]}]},
     "a stage gets no steps with max_steps=10"),
])
def test_bad_curricula_are_named(changes, message):
    base = {"levels": [1, 2], "trainer": {"max_steps": 10},
            "curriculum": [{"share": 0.5, "level_weights": [1, 0]}, {"share": 0.5, "level_weights": [0, 1]}]}
    with pytest.raises(ValueError, match=message):
        SFTRunConfig.from_dict({**base, **changes})


def test_two_processes_train_the_same_model_as_one(tmp_path):
    # Data parallel over two gloo ranks: each computes half of every batch and the gradients are
    # summed, so the weights match a one-process run up to float summation order (odd batch size:
    # the ranks' shares differ in size).
    from safetensors.torch import load_file

    base = {"train_problems": 40, "levels": [1, 2], "test_per_level": 2, "num_threads": 1,
            "trainer": {"max_steps": 6, "batch_size": 5, "warmup_steps": 1, "log_every": 2},
            "eval": {"max_new_tokens": 4, "batch_size": 4}}
    before = torch.get_num_threads()
    try:
        one = sft_cli.run_sft(SFTRunConfig.from_dict(base), tmp_path / "one", progress=False)
        two = sft_cli.run_sft(SFTRunConfig.from_dict({**base, "num_processes": 2}), tmp_path / "two",
                              progress=False)
    finally:
        torch.set_num_threads(before)
    assert two["train"]["processes"] == 2 and one["train"]["processes"] == 1
    assert two["train"]["tokens"] == one["train"]["tokens"]
    assert two["train"]["loss_last"] == pytest.approx(one["train"]["loss_last"], rel=1e-5)
    a, b = (load_file(tmp_path / run / "checkpoint" / "model.safetensors") for run in ("one", "two"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert json.loads((tmp_path / "two" / "eval.json").read_text())["timings"]["cpu_s"] > 0
