"""Configs (validation, YAML, pickling) and the scorer end to end from threads."""

from __future__ import annotations

import pickle
import threading

import pytest

from pangu_core.rewards import CodeTest, ConfigError, RewardConfig, RewardScorer, Sample, SandboxLimits


def test_all_problems_are_reported_at_once():
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
    with pytest.raises(ConfigError, match="unknown keys.*timeout"):
        RewardConfig.from_yaml(str(path))
    path.write_text("router:\n  weighting: magic\n")
    with pytest.raises(ConfigError, match="weighting"):
        RewardConfig.from_yaml(str(path))


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
        Sample("math", "p", "r", "1", mode="auto")
    with pytest.raises(TypeError, match="config"):
        RewardScorer({"workers": 1})  # type: ignore[arg-type]


def test_the_documented_yaml_twin_matches_the_defaults():
    import os

    import pangu_core.rewards as rewards

    path = os.path.join(os.path.dirname(rewards.__file__), "rewards.yaml")
    assert RewardConfig.from_yaml(path) == RewardConfig()
