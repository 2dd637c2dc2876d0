"""The evaluator: answer matching, pass@k, per-mode per-level accuracy and tokens, JSON + PNG."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

from pangu_core.dual.chat_format import split_mode_tag
from pangu_core.config import ConfigError
from pangu_core.evaluation import EvalConfig, evaluate_model, match_answers, pass_at_k, write_report
from pangu_core.rewards.config import MathConfig
from pangu_core.rewards.math import MathVerifier
from pangu_core.tasks.math_tasks import generate_math_tasks
from pangu_core.tasks.model import tiny_pangu
from pangu_core.tasks.teacher import teacher_response


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ScriptedModel(torch.nn.Module):
    """Answers like the teacher in slow mode; in fast mode right on levels 1-2 and off by one above."""

    def __init__(self, tokenizer, tasks):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.by_prompt = {t.prompt: t for t in tasks}

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, num_return_sequences=1, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            assert mask[0] == 0 or all(mask)  # left padding
            text = self.tokenizer.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=True)
            prompt, mode = split_mode_tag(text)
            task = self.by_prompt[prompt]
            response = teacher_response(task, "slow" if mode == "slow" else "fast")
            if mode == "fast" and task.difficulty >= 3:
                response = response.replace(f"{{{task.reference}}}", f"{{{int(task.reference) + 1}}}")
            new = self.tokenizer(response + "<|end|>", add_special_tokens=False)["input_ids"][:max_new_tokens]
            rows.extend([ids + new] * num_return_sequences)
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(MathConfig(workers=1, timeout_seconds=10.0)) as v:
        yield v


@pytest.mark.parametrize("predicted, reference, expected", [
    ("66", "66", True), ("66.0", "66", True), ("1,007", "1007", True), ("1/2", "0.5", True),
    ("65", "66", False), (None, "66", False), ("\\frac{1}{2}", "0.5", True), ("x^2+1", "1+x^2", True),
    ("\\sqrt{4}", "3", False),
])
def test_match_answers(verifier, predicted, reference, expected):
    assert match_answers(verifier, [predicted], [reference]) == [expected]


def _old_rule(predicted, reference):
    """The rule evaluation used before it moved to MARS's verifier, for numbers: exact rationals."""
    def number(text):
        try:
            return Fraction(text.strip().strip("$").replace(",", "").replace(" ", ""))
        except (ValueError, ZeroDivisionError):
            return None
    return predicted is not None and number(predicted) is not None and number(predicted) == number(reference)


def test_verdicts_on_the_embedded_tasks_are_unchanged(verifier):
    # The embedded tasks have integer references; every form a model writes for a number gets the
    # verdict the old in-process rule gave, and one batch decides them all.
    tasks = generate_math_tasks(40, split="test", seed=5)
    predicted, references = [], []
    for task in tasks:
        value = int(task.reference)
        forms = [str(value), str(value + 1), str(value - 10), f"{value}.0", f"${value}$", f" {value} ", f"0{value}",
                 f"{2 * value}/2", f"{value * 1000:,}", f"{value:,}", str(-value) if value else "7", None]
        predicted += forms
        references += [task.reference] * len(forms)
    got = match_answers(verifier, predicted, references)
    expected = [_old_rule(p, r) for p, r in zip(predicted, references)]
    assert got == expected, [(p, r) for p, r, a, b in zip(predicted, references, got, expected) if a != b]
    assert match_answers(verifier, ["twelve", "\\boxed{"], ["12", "12"]) == [False, False]
    with pytest.raises(ValueError, match="references"):
        match_answers(verifier, ["1"], [])


def test_pass_at_k_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_accuracy_and_tokens_per_mode_and_level(tokenizer, tmp_path):
    # Batched, left-padded evaluation reports exactly what the scripted model did, per mode and level.
    tasks = generate_math_tasks(30, split="test", seed=4)
    model = ScriptedModel(tokenizer, tasks)
    verifier = MathVerifier(MathConfig(workers=1))
    result = evaluate_model(model, tokenizer, tasks, EvalConfig(batch_size=7, samples_per_prompt=2, pass_k=(1, 2)),
                            progress=False, verifier=verifier)
    # The given verifier checked every answer (integers: decided in this process, no worker started).
    assert verifier.stats["fast"] + verifier.stats["cache_hits"] == 30 * 2 * 3
    verifier.close()
    assert set(result["accuracy"]) == {"slow", "fast"} and list(result["accuracy"]["slow"]) == ["1", "2", "3", "4", "5"]
    assert all(v == 1.0 for v in result["accuracy"]["slow"].values())
    assert result["accuracy"]["fast"] == {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0, "5": 0.0}
    assert result["pass_at_k"]["fast"]["3"] == {"1": 0.0, "2": 0.0} and result["pass_at_k"]["slow"]["5"]["2"] == 1.0
    for level in ("1", "5"):
        group = [t for t in tasks if str(t.difficulty) == level]
        expected = sum(len(tokenizer(teacher_response(t, "slow") + "<|end|>", add_special_tokens=False)["input_ids"])
                       for t in group) / len(group)
        assert result["tokens"]["slow"][level] == pytest.approx(expected)
        assert result["count"]["slow"][level] == len(group)
    assert result["tokens"]["fast"]["5"] < result["tokens"]["slow"]["5"] / 5
    level1 = [t.reference for t in tasks if t.difficulty == 1]
    assert result["constant_answer_accuracy"]["1"] == max(level1.count(r) for r in level1) / len(level1)
    json_path, png_path = write_report(result, tmp_path)
    assert json.loads(json_path.read_text())["accuracy"] == result["accuracy"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_model_generation_is_batched_and_cut_at_eos(tokenizer):
    # An untrained tiny model runs through transformers' generate in both modes without error.
    tasks = generate_math_tasks(6, levels=[1, 2], split="test")
    model = tiny_pangu("nano", tokenizer, seed=0)
    result = evaluate_model(model, tokenizer, tasks, EvalConfig(max_new_tokens=5, batch_size=4), progress=False)
    assert all(0 < v <= 5 for mode in result["tokens"].values() for v in mode.values())
    assert model.training  # evaluation restores the mode it found


def test_bad_config_and_inputs(tokenizer):
    with pytest.raises(ConfigError) as error:
        EvalConfig(modes=("medium",), max_new_tokens=0, samples_per_prompt=2, pass_k=(3,), temperature=0)
    assert all(n in str(error.value) for n in ("modes[0]", "max_new_tokens", "pass_k", "temperature"))
    with pytest.raises(ConfigError, match="modes: expected a non-empty list"):
        EvalConfig(modes=())
    with pytest.raises(ConfigError, match="batch_size: expected an int, got 2.5"):
        EvalConfig.from_dict({"batch_size": 2.5})
    with pytest.raises(ConfigError, match="unknown key"):
        EvalConfig.from_dict({"mode": ["slow"]})
    with pytest.raises(ValueError, match="tasks"):
        evaluate_model(None, tokenizer, [])
    with pytest.raises(TypeError, match="verifier"):
        evaluate_model(None, tokenizer, generate_math_tasks(1), verifier="math")


def test_config_round_trips(tmp_path):
    config = EvalConfig(modes=("auto", "slow"), samples_per_prompt=4, pass_k=(1, 4), temperature=0.7)
    assert EvalConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "eval.yaml"
    config.to_yaml(path)
    assert EvalConfig.from_yaml(path) == config
