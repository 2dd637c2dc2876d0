"""The rewards benchmark's baselines do the same work as ours: same verdicts, same tests passed."""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import pytest

from pangu_core.bench import rewards as bench
from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig, MathConfig
from pangu_core.rewards.math import MathVerifier

PAIRS = bench.math_pairs(16, seed=11)


@pytest.fixture(scope="module")
def ours():
    with MathVerifier(MathConfig(workers=2, timeout_seconds=10.0, cache_size=0, fast_verdicts=False)) as v:
        yield [s.score == 1.0 for s in v.compare(PAIRS)], v


def test_inputs_never_repeat_a_string():
    pairs = bench.math_pairs(400, seed=3)
    strings = [s for pair in pairs for s in pair]
    assert len(set(strings)) == len(strings) == 800
    assert 0.3 < sum(bench.verify_one(p) for p in pairs[:16]) / 16 < 0.8  # both verdicts occur


def test_pool_baseline_gives_our_verdicts(ours):
    verdicts, _ = ours
    with ProcessPoolExecutor(2, initializer=bench._quiet_math_verify) as pool:
        assert bench.verify_in_pool(pool, PAIRS, 2) == verdicts
    assert any(verdicts) and not all(verdicts)


def test_process_per_call_baseline_gives_our_verdicts(ours):
    verdicts, verifier = ours
    latencies: list[float] = []
    assert bench.verify_process_per_call(PAIRS, 2, latencies) == verdicts
    assert len(latencies) == len(PAIRS) and all(t > 0 for t in latencies)
    ours_latencies: list[float] = []
    assert bench.verify_ours_per_call(verifier, PAIRS, 2, ours_latencies) == verdicts
    assert len(ours_latencies) == len(PAIRS)


def test_process_per_call_baseline_kills_an_overrun(monkeypatch):
    monkeypatch.setattr(bench, "TIMEOUT_SECONDS", 1.0)
    assert bench.verify_process_per_call([("1", "(10^{10})!"), ("2", "2")], 2) == [False, True]


@pytest.mark.usefixtures("own_sandbox_runs")
def test_fresh_interpreter_baseline_passes_the_same_tests():
    programs = bench.code_programs(4)
    verifier = CodeVerifier(CodeConfig(workers=2))
    ours = bench.run_ours_code(verifier, programs, 2)
    assert ours == bench.run_fresh_interpreters(programs, 2) == [5, 5, 5, 0]


@pytest.mark.usefixtures("own_sandbox_runs")
def test_cases_carry_the_shared_fields(capsys, check_spread):
    cases = bench.math_cases(4, 2, repeats=1) + [bench.code_case(2, repeats=1)]
    assert [c["case"] for c in cases] == ["math_verify_1k", "math_verify_1k_safe", "code_exec_200"]
    for case in cases:
        assert case["repeats"] == 1 and case["child_process"] is True
        assert math.isfinite(case["ours"]) and math.isfinite(case["baseline_value"])
        assert case["baseline"]
        check_spread(case)
    assert cases[0]["agreement"] == cases[1]["agreement"] == 1.0
    assert "ProcessPoolExecutor, 2 processes" in cases[0]["baseline"]
    assert {"p50_s", "p99_s", "baseline_p50_s", "baseline_p99_s"} <= set(cases[1])
    assert cases[2]["tests_passed"] == cases[2]["baseline_tests_passed"] == 10
    err = capsys.readouterr().err
    assert all(f"[rewards] {name}" in err for name in ("math_verify_1k:", "math_verify_1k_safe:", "code_exec_200:"))
