"""The rewards benchmark's generated inputs are what they claim: deterministic, right and wrong as labelled."""

from __future__ import annotations

import pytest

from pangu_core.bench.rewards import code_programs, math_pairs
from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig
from pangu_core.rewards.types import CodeTest

pytestmark = pytest.mark.usefixtures("own_sandbox_runs")


def test_inputs_are_deterministic():
    assert math_pairs(16, seed=3) == math_pairs(16, seed=3) != math_pairs(16, seed=4)
    assert code_programs(4) == code_programs(4)


def test_every_fourth_program_is_wrong():
    verifier = CodeVerifier(CodeConfig(workers=2))
    programs = code_programs(4)
    assert all(isinstance(t, CodeTest) for _, tests in programs for t in tests)  # the one test schema
    scores = [verifier.score_program(source, tests).score for source, tests in programs]
    assert scores == [1.0, 1.0, 1.0, 0.0]
