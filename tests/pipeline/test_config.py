"""The pipeline config: stage sections on a base, one test split, seeds, hashes, named errors."""

from __future__ import annotations

import pytest

from pangu_core.config import ConfigError
from pangu_core.distill.config import DistillConfig
from pangu_core.distill.config import builtin_config as distill_builtin
from pangu_core.pipeline.config import PipelineConfig, builtin_config, load_config
from pangu_core.pipeline.run import stage_hashes


def write(tmp_path, text: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load_agree_on_the_split_and_round_trip():
    for name in ("pipeline_default", "pipeline_quick"):
        config = load_config(builtin_config(name))
        assert PipelineConfig.from_dict(config.to_dict()) == config
        splits = {(tuple(getattr(config, s).levels), getattr(config, s).test_per_level) for s in ("sft", "distill", "rl", "dual")}
        assert len(splits) == 1
    default = load_config(builtin_config("pipeline_default"))
    assert default.rl.test_per_level == 100 and default.rl.eval.modes == ("slow", "fast")


def test_a_section_with_only_a_base_is_that_built_in_and_a_missing_one_the_default_pipelines(tmp_path):
    config = load_config(write(tmp_path, "distill:\n  base: distill_default\n"))
    assert config.distill == DistillConfig.from_yaml(distill_builtin("distill_default"))
    assert config.rl == load_config(builtin_config("pipeline_default")).rl


def test_a_section_changes_only_the_fields_it_lists(tmp_path):
    config = load_config(write(tmp_path, "distill:\n  base: distill_default\n  rounds: 2\n  merging: {lambda_: 0.5}\n"))
    base = DistillConfig.from_yaml(distill_builtin("distill_default"))
    assert config.distill == base.replace(rounds=2, merging=base.merging.replace(lambda_=0.5))


def test_a_base_may_be_a_yaml_file_next_to_the_pipeline_config(tmp_path):
    (tmp_path / "mine.yaml").write_text(distill_builtin("distill_quick").read_text())
    config = load_config(write(tmp_path, "sft:\n  base: sft_quick\n  levels: [1, 2, 3]\n  level_weights: []\n"
                                         "  fast_fraction: 0.4\n  test_per_level: 30\n"
                                         "distill:\n  base: mine.yaml\n"
                                         "rl:\n  base: rl_quick\n  test_per_level: 30\n"
                                         "dual:\n  base: dual_quick\n"))
    assert config.distill.rounds == DistillConfig.from_yaml(distill_builtin("distill_quick")).rounds


@pytest.mark.parametrize("text, message", [
    ("rl:\n  base: rl_default\n  test_per_level: 7\n", "rl.test_per_level: expected sft.test_per_level (100)"),
    ("dual:\n  base: dual_quick\n", "dual.levels: expected sft.levels ([1, 2, 3, 4, 5])"),
    ("distill:\n  base: distill_nonesuch\n", "distill.base: config: no built-in 'distill_nonesuch'"),
    ("distill:\n  base: missing.yaml\n", "distill.base"),
    ("distill:\n  base: 3\n", "distill.base: expected a built-in config name or a YAML path"),
    ("distill:\n  base: distill_default\n  rounds: 0\n", "distill.rounds: expected an int >= 1"),
    ("distill:\n  base: distill_default\n  roundz: 2\n", "distill.roundz: unknown key"),
    ("seed: -1\n", "seed: expected an int >= 0"),
    ("stages: 3\n", "stages: unknown key"),
])
def test_bad_configs_are_refused_naming_the_stage_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert message in str(error.value)
    assert str(tmp_path / "pipeline.yaml") in str(error.value)


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline.yaml:2: seed: duplicate key"):
        load_config(write(tmp_path, "seed: 1\nseed: 2\n"))


def test_the_seed_replaces_every_stage_seed():
    config = load_config(builtin_config("pipeline_quick")).replace(seed=7)
    assert config.stage("sft").trainer.seed == 7
    assert [config.stage(s).seed for s in ("distill", "rl", "dual")] == [7, 7, 7]
    with pytest.raises(KeyError, match="unknown stage 'eval'"):
        config.stage("eval")


def test_a_stage_hash_changes_with_its_config_and_every_stage_before_it():
    config = load_config(builtin_config("pipeline_quick"))
    before = stage_hashes(config)
    assert stage_hashes(config) == before
    rl = stage_hashes(config.replace(rl=config.rl.replace(steps=5)))
    assert [rl[s] == before[s] for s in ("sft", "distill", "rl", "dual")] == [True, True, False, False]
    seeded = stage_hashes(config.replace(seed=1))
    assert all(seeded[s] != before[s] for s in before)


def test_a_section_without_base_changes_the_default_pipelines_section(tmp_path):
    config = load_config(write(tmp_path, "rl:\n  steps: 80\n"))
    default = load_config(builtin_config("pipeline_default"))
    assert config.rl == default.rl.replace(steps=80)
    assert config.rl.eval.modes == ("slow", "fast")         # kept from the default pipeline's section
    assert config.replace(rl=default.rl) == default
