"""The rewards benchmark's generated inputs are what they claim: deterministic, right and wrong as labelled."""

from __future__ import annotations

from pangu_core.bench.rewards import code_programs, math_pairs
from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig
from pangu_core.rewards.types import CodeTest


def test_inputs_are_deterministic():
    assert math_pairs(16, seed=3) == math_pairs(16, seed=3) != math_pairs(16, seed=4)
    assert code_programs(4) == code_programs(4)


def test_every_fourth_program_is_wrong():
    verifier = CodeVerifier(CodeConfig(workers=2))
    scores = [verifier.score_program(source, [CodeTest(i, o) for i, o in cases]).score
              for source, cases in code_programs(4)]
    assert scores == [1.0, 1.0, 1.0, 0.0]
