"""Configs (validation, YAML, pickling) and the scorer end to end from threads."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from pathlib import Path

import pytest
import yaml

from pangu_core.config import load_yaml
from pangu_core.rewards import (
    CodeConfig,
    CodeTest,
    ConfigError,
    JudgeConfig,
    MathConfig,
    RewardConfig,
    RewardScorer,
    RouterConfig,
    Sample,
    SandboxLimits,
    ShapingConfig,
)


def test_all_problems_are_reported_at_once():
    import pangu_core.config

    assert ConfigError is pangu_core.config.ConfigError
    with pytest.raises(ConfigError) as info:
        SandboxLimits(test_seconds=-1, cpu_seconds=0, processes=0)
    message = str(info.value)
    assert "test_seconds" in message and "cpu_seconds" in message and "processes" in message


def test_yaml_round_trip_and_unknown_keys(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text(
        "workers: 2\n"
        "math:\n  timeout_seconds: 1.5\n"
        "code:\n  limits:\n    test_seconds: 0.5\n    processes: 8\n"
        "router:\n  weighting: reliability\n  weights: {math: 2.0}\n  routes: {math: [math, format]}\n"
    )
    cfg = RewardConfig.from_yaml(str(path))
    assert cfg.workers == 2 and cfg.math.timeout_seconds == 1.5 and cfg.code.limits.processes == 8
    assert cfg.router.weight_of("math") == 2.0 and cfg.router.sources_for("math") == ("math", "format")
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    path.write_text("math:\n  timeout: 1\n")
    with pytest.raises(ConfigError, match=r"rewards.yaml:2: math.timeout: unknown key; known: workers, timeout_seconds"):
        RewardConfig.from_yaml(str(path))
    path.write_text("router:\n  weighting: magic\n")
    with pytest.raises(ConfigError, match="router.weighting: expected one of 'fixed'"):
        RewardConfig.from_yaml(str(path))


def test_every_problem_is_refused_with_its_path():
    # Each kind of mistake is named with its field path, all in one error.
    with pytest.raises(ConfigError) as info:
        RewardConfig.from_dict({
            "show_progress": "yes",
            "workers": 0,
            "code": {"limits": {"procesess": 8, "memory_bytes": 1 << 20}},
            "judge": {"batch_size": 2.5},
            "router": {"weights": {"maths": 1.0, "format": -1}, "routes": {"math": ["math", "fromat"], "code": []},
                       "momentum": 1.0},
        })
    problems = info.value.problems
    known = "known: code, format, judge, length, math, repetition"
    for expected in [
        "show_progress: expected a bool, got 'yes' (str)",
        "workers: expected a number > 0, got 0",
        "code.limits.procesess: unknown key; known: test_seconds",
        "code.limits.memory_bytes: expected an int >= 64 MiB",
        "judge.batch_size: expected an int, got 2.5",
        f"router.weights['maths']: unknown reward source 'maths'; {known}",
        "router.weights['format']: expected a number >= 0, got -1.0",
        f"router.routes['math'][1]: unknown reward source 'fromat'; {known}",
        "router.routes['code']: expected a non-empty list of source names",
        "router.momentum: expected a number in (0, 1), got 1.0",
    ]:
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_sources_registered_later_may_be_routed():
    from pangu_core.rewards import register_source
    from pangu_core.rewards.router import _REGISTRY

    with pytest.raises(ConfigError, match="unknown reward source 'brevity'"):
        RewardConfig.from_dict({"router": {"routes": {"math": ["math", "brevity"]}}})
    register_source("brevity")(lambda config: None)
    try:
        config = RewardConfig.from_dict({"router": {"routes": {"math": ["math", "brevity"]}, "weights": {"brevity": 0.5}}})
        assert config.router.sources_for("math") == ("math", "brevity")
    finally:
        del _REGISTRY["brevity"]


def test_duplicate_keys_and_bad_yaml_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("math:\n  workers: 2\n  workers: 3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3: math.workers: duplicate key \(first at line 2\)"):
        RewardConfig.from_yaml(path)
    path.write_text("router: [unclosed\n")
    with pytest.raises(ConfigError, match="dup.yaml:2: YAML syntax"):
        RewardConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="no such file"):
        RewardConfig.from_yaml(tmp_path / "missing.yaml")


def test_round_trips():
    # Every config rebuilds itself from its plain form, through dicts and YAML.
    config = RewardConfig(workers=2, show_progress=True,
                          code=CodeConfig(limits=SandboxLimits(test_seconds=0.5, python_site=True)),
                          router=RouterConfig(routes={"math": ("math", "length")}, weights={"length": 0.2},
                                              weighting="reliability"))
    assert RewardConfig.from_dict(config.to_dict()) == config
    assert RewardConfig.from_dict(yaml.safe_load(config.to_yaml())) == config
    assert config.to_dict()["router"]["routes"] == {"math": ["math", "length"]}
    for cls in (MathConfig, CodeConfig, SandboxLimits, JudgeConfig, ShapingConfig, RouterConfig):
        assert cls.from_dict(cls().to_dict()) == cls()


def test_scorer_from_a_thread_and_after_pickling():
    # No signals: the scorer gives the same verdicts from a worker thread, and pickles as its config.
    samples = [
        Sample("math", "1+1", "<think>add</think>The answer is \\boxed{2}.", "2"),
        Sample("math", "1+1", "<think>add</think>The answer is \\boxed{3}.", "2"),
        Sample("code", "add", "<think>io</think>```python\na, b = map(int, input().split())\nprint(a + b)\n```",
               (CodeTest("1 2", "3"), CodeTest("5 5", "10"))),
        Sample("general", "capital?", "<think>hm</think>Thought process:", "Paris", mode="slow"),
        Sample("general", "capital?", "Paris", "Paris", mode="fast"),
    ]
    cfg = RewardConfig(workers=2, batch_size=2)
    out = []
    with RewardScorer(cfg) as scorer:
        thread = threading.Thread(target=lambda: out.extend(scorer.score(samples)))
        thread.start()
        thread.join(120)
        clone = pickle.loads(pickle.dumps(scorer))
        try:
            again = clone.score(samples[:2])
        finally:
            clone.close()
    assert [r.scores.get("math", r.scores.get("code", r.scores.get("judge"))) for r in out] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert out[1].reasons["math"] == "wrong answer" and "judge: trivial answer" in out[3].reason
    assert out[0].reward == pytest.approx(1.0 + 0.1 + 0.1 + 0.05)
    assert [r.scores["math"] for r in again] == [1.0, 0.0]


def test_scorer_front_door():
    with RewardScorer(RewardConfig(workers=1)) as scorer:
        with pytest.raises(TypeError, match=r"samples\[0\]"):
            scorer.score(["text"])
        with pytest.raises(KeyError, match="poetry"):
            scorer.score([Sample("poetry", "p", "r")])
    with pytest.raises(ValueError, match="Sample.mode"):
        Sample("math", "p", "r", "1", mode="medium")
    with pytest.raises(TypeError, match="config"):
        RewardScorer({"workers": 1})  # type: ignore[arg-type]


def _field_paths(config, prefix=()):
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        yield prefix + (f.name,)
        if dataclasses.is_dataclass(value):
            yield from _field_paths(value, prefix + (f.name,))


def test_the_documented_yaml_twin_matches_the_defaults(tmp_path):
    # rewards.yaml loads to the defaults, lists every field, and has a comment right above each one.
    import pangu_core.rewards as rewards

    path = Path(rewards.__file__).with_name("rewards.yaml")
    assert RewardConfig.from_yaml(path) == RewardConfig()
    data, lines = load_yaml(path)
    assert data == RewardConfig().to_dict()
    text = path.read_text(encoding="utf-8").splitlines()
    for field_path in _field_paths(RewardConfig()):
        line = lines[field_path]
        assert text[line - 2].lstrip().startswith("#"), f"rewards.yaml:{line}: {'.'.join(field_path)}: no comment above"
    copy = tmp_path / "copy.yaml"
    RewardConfig().to_yaml(copy)
    assert RewardConfig.from_yaml(copy) == RewardConfig()


def test_auto_mode_samples_are_scored_by_the_mode_taken():
    # An auto-mode prompt lets the model answer fast (empty thinking) or slow; both are well formed,
    # an unclosed thinking block is not.
    samples = [Sample("math", "1+1", "<think></think>\\boxed{2}", "2", mode="auto"),
               Sample("math", "1+1", "<think>one plus one</think>\\boxed{2}", "2", mode="auto"),
               Sample("math", "1+1", "<think>one plus one \\boxed{2}", "2", mode="auto")]
    with RewardScorer(RewardConfig(workers=1)) as scorer:
        fast, slow, broken = scorer.score(samples)
    assert fast.scores["format"] == slow.scores["format"] == 1.0 and fast.scores["math"] == slow.scores["math"] == 1.0
    assert broken.scores["format"] == 0.0 and broken.reasons["format"] == "thinking block not closed"
    assert broken.scores["math"] == 0.0 and fast.reward > broken.reward
