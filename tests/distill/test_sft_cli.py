"""The `pangu-core sft` command: config files, validation, and the files a run writes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from pangu_core.config import ConfigError
from pangu_core.distill import sft_cli
from pangu_core.distill.sft_cli import CONFIG_DIR, CurriculumStage, SFTRunConfig, load_run_config


def test_shipped_configs_load_document_every_field_and_round_trip(tmp_path):
    # The YAML twins name every field, each with a comment line above it, and survive dict and YAML round trips.
    for path in sorted(CONFIG_DIR.glob("sft*.yaml")):
        config = load_run_config(path)
        assert isinstance(config, SFTRunConfig)
        assert SFTRunConfig.from_dict(config.to_dict()) == config
        config.to_yaml(tmp_path / path.name)
        assert load_run_config(tmp_path / path.name) == config
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip() and not line.strip().startswith("#") and not line.rstrip().endswith(":"):
                assert lines[index - 1].strip().startswith("#"), f"{path.name}: no comment above {line!r}"
    assert {p.name for p in CONFIG_DIR.glob("sft*.yaml")} == {"sft_default.yaml", "sft_quick.yaml"}
    assert load_run_config(CONFIG_DIR / "sft_default.yaml").eval.modes == ("slow", "fast")
    curriculum = SFTRunConfig.from_dict({"levels": [1, 2], "curriculum": [{"share": 0.5, "level_weights": [1, 0]},
                                                                         {"share": 0.5, "level_weights": [1, 1]}]})
    assert curriculum.curriculum[0] == CurriculumStage(0.5, (1.0, 0.0))
    assert SFTRunConfig.from_dict(curriculum.to_dict()) == curriculum


def test_config_errors_are_reported_together(tmp_path):
    path = tmp_path / "bad.yaml"
    bad = {"model_size": "huge", "fast_fraction": 2, "trainer": {"max_steps": 0}, "levels": [9]}
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(ConfigError) as error:
        load_run_config(path)
    assert sorted(p.split(": ", 1)[1].split(":")[0] for p in error.value.problems) == [
        "fast_fraction", "levels[0]", "model_size", "trainer.max_steps"]
    assert f"{path}:1: model_size: unknown model size 'huge'; known: nano, micro, mini, small" in error.value.problems
    assert f"{path}:4: trainer.max_steps: expected an int >= 1, got 0" in error.value.problems


@pytest.mark.parametrize("text, problem", [
    ("trainer:\n  max_steps: 5\n  lr: 0.1\n", "3: trainer.lr: unknown key; known: max_steps"),
    ("curriculum:\n  - share: 1.0\n    weights: [1, 1]\n", "3: curriculum[0].weights: unknown key"),
    ("num_threads: two\n", "1: num_threads: expected an int, got 'two' (str)"),
    ("levels: [1, 2]\nfast_fraction: [0.5, 1.5]\n", "2: fast_fraction[1]: expected a number in [0, 1], got 1.5"),
    ("data_seed: 1\ndata_seed: 2\n", "2: data_seed: duplicate key (first at line 1)"),
    ("levels: [1, 2\n", "YAML syntax"),
    ("- 1\n- 2\n", "expected a mapping of SFTRunConfig fields"),
])
def test_config_file_errors_name_file_line_and_field(tmp_path, text, problem):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_run_config(path)
    assert problem in str(error.value), error.value.problems


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
    for bad, problem in (([0.5], "fast_fraction: expected one number or one per level (2 for levels [1, 2])"),
                         ([0.5, 1.5], "fast_fraction[1]: expected a number in [0, 1], got 1.5"),
                         ([0.5, True], "fast_fraction[1]: expected a number, got True"),
                         ("half", "fast_fraction: expected a number or a list of a number, got 'half'")):
        with pytest.raises(ConfigError) as error:
            SFTRunConfig.from_dict({"levels": [1, 2], "fast_fraction": bad})
        assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


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


@pytest.mark.parametrize("changes, problem", [
    ({"level_weights": [1, 1]}, "curriculum: expected no stages when level_weights is given"),
    ({"curriculum": [{"share": 0.5, "level_weights": [1, 1]}]},
     "curriculum: expected shares that add up to 1, got 0.5"),
    ({"curriculum": [{"share": 1.0, "level_weights": [1]}]}, "curriculum[0].level_weights: expected one per level"),
    ({"curriculum": [{"share": 1.0, "weights": [1, 1]}]}, "curriculum[0].weights: unknown key; known: share"),
    ({"curriculum": [{"share": 1.0}]}, "curriculum[0].missing 1 required"),
    ({"curriculum": [{"share": 0, "level_weights": [1, 1]}]},
     "curriculum[0].share: expected a number in (0, 1], got 0.0"),
    ({"curriculum": [{"share": 1.0, "level_weights": [0, 0]}]}, "curriculum[0].level_weights: expected weights with a "
                                                                "positive sum"),
    ({"curriculum": [{"share": 0.99, "level_weights": [1, 1]}, {"share": 0.01, "level_weights": [1, 1]}]},
     "curriculum: expected at least one step per stage of trainer.max_steps=10 (stage ends), got [10, 10]"),
    ({"level_weights": [1, -1], "curriculum": []}, "level_weights[1]: expected a number >= 0, got -1.0"),
    ({"level_weights": [1], "curriculum": []}, "level_weights: expected one per level"),
    ({"levels": [1, 1], "curriculum": []}, "levels[1]: expected a level in [1, 2, 3, 4, 5], each once, got 1"),
    ({"model_size": "huge"}, "model_size: unknown model size 'huge'; known: nano"),
    ({"trainer": {"max_steps": 10, "betas": [0.9, 1.0]}}, "trainer.betas[1]: expected a number in [0, 1), got 1.0"),
])
def test_bad_run_configs_are_named(changes, problem):
    base = {"levels": [1, 2], "trainer": {"max_steps": 10},
            "curriculum": [{"share": 0.5, "level_weights": [1, 0]}, {"share": 0.5, "level_weights": [0, 1]}]}
    with pytest.raises(ConfigError) as error:
        SFTRunConfig.from_dict({**base, **changes})
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_two_processes_train_the_same_model_as_one(tmp_path):
    # Data parallel over two gloo ranks (DistributedDataParallel): each computes its share of every
    # batch and scales its loss so that DDP's average is the whole batch's mean-loss gradient; the
    # weights match a one-process run up to float summation order. 41 problems in batches of 5 make
    # an epoch of 9 steps whose batches split 3/2 and 1/0 (a rank with no share still joins the average).
    from safetensors.torch import load_file

    base = {"train_problems": 41, "levels": [1, 2], "test_per_level": 2, "num_threads": 1,
            "trainer": {"max_steps": 9, "batch_size": 5, "warmup_steps": 1, "log_every": 2},
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
