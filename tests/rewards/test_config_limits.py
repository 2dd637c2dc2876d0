"""Limits that reach the OS or a comparison are refused at config time when they cannot work there."""

from __future__ import annotations

import math

import pytest

from pangu_core.rewards import CodeTest, ConfigError, JudgeConfig, MathConfig, RewardConfig, SandboxLimits
from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import MAX_SECONDS, CodeConfig
from pangu_core.rewards.math import MathVerifier

SECONDS = f"a finite number of seconds in (0, {MAX_SECONDS:g}]"


@pytest.mark.parametrize("name", ["test_seconds", "startup_seconds"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -math.inf, 0.0, MAX_SECONDS * 2])
def test_sandbox_wall_clocks_must_be_finite_and_bounded(name, value):
    # inf used to pass and then zero every code reward (the child's select() overflowed).
    with pytest.raises(ConfigError) as info:
        SandboxLimits(**{name: value})
    assert info.value.problems == [f"{name}: expected {SECONDS}, got {value!r}"]


@pytest.mark.parametrize("field, value, expected", [
    ("cpu_seconds", 10 ** 30, SECONDS),
    ("memory_bytes", 1 << 60, "an int <= 281474976710656"),
    ("file_bytes", 1 << 60, "an int <= 281474976710656"),
    ("processes", 1 << 30, "an int <= 4194304"),
    ("open_files", 1 << 30, "an int <= 1048576"),
    ("output_bytes", 1 << 40, "an int <= 1073741824"),
])
def test_sandbox_rlimits_must_fit_the_os(field, value, expected):
    with pytest.raises(ConfigError) as info:
        SandboxLimits(**{field: value})
    assert info.value.problems == [f"{field}: expected {expected}, got {value}"]


@pytest.mark.parametrize("value", [math.inf, math.nan, MAX_SECONDS + 1])
def test_math_timeout_must_be_finite(value):
    # inf used to raise OverflowError at the first comparison; now the config says which field.
    with pytest.raises(ConfigError, match="timeout_seconds: expected a finite number of seconds"):
        MathConfig(timeout_seconds=value)
    with pytest.raises(ConfigError, match="max_answer_chars: expected a number > 0"):
        MathConfig(max_answer_chars=0)


def test_yaml_infinity_is_refused_with_its_line(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text("math:\n  timeout_seconds: .inf\ncode:\n  limits:\n    test_seconds: .inf\n")
    with pytest.raises(ConfigError) as info:
        RewardConfig.from_yaml(path)
    assert info.value.problems == [f"{path}:2: math.timeout_seconds: expected {SECONDS}, got inf",
                                   f"{path}:5: code.limits.test_seconds: expected {SECONDS}, got inf"]


def test_judge_model_path_is_checked_at_config_time(tmp_path):
    # A model path that is not a model folder fails here, not at the first general sample.
    with pytest.raises(ConfigError, match=r"model_path: expected a local folder with a transformers model "
                                          r"\(config.json\), got '/"):
        JudgeConfig(model_path=str(tmp_path / "missing"))
    # Weighted on the evaluator alone, the judge needs a model.
    with pytest.raises(ConfigError, match=r"judge.model_path: expected a local model folder \(judge_weight is the "
                                          r"only weight > 0\), got '' \(str\)"):
        RewardConfig.from_dict({"judge": {"exact_weight": 0, "f1_weight": 0, "judge_weight": 1}})
    (tmp_path / "config.json").write_text("{}")
    assert JudgeConfig(model_path=str(tmp_path), exact_weight=0, f1_weight=0).model_path == str(tmp_path)
    assert JudgeConfig().model_path == ""  # rules and metrics only, the default, stays valid


@pytest.mark.usefixtures("own_sandbox_runs")
def test_the_largest_limits_are_passable_to_the_os():
    # The bounds are not only accepted by the config: a run under them works end to end.
    limits = SandboxLimits(test_seconds=MAX_SECONDS, startup_seconds=MAX_SECONDS, cpu_seconds=int(MAX_SECONDS))
    verifier = CodeVerifier(CodeConfig(workers=1, limits=limits))
    assert verifier.score_program("print(int(input()) * 2)", [CodeTest("21", "42")]).score == 1.0
    with MathVerifier(MathConfig(workers=1, timeout_seconds=MAX_SECONDS, fast_verdicts=False)) as v:
        assert v.compare([("1/2", "0.5")])[0].score == 1.0
