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
    """Answers like the teacher in slow mode; in fast mode right on levels 1-2 and off by one above.

    In auto mode it answers fast on levels 1-2 and slow above (``auto_fast`` changes the levels);
    ``looping`` levels write the first line of their slow thinking over and over. Like transformers'
    generate it goes token by token and asks the stopping criteria after each one.
    """

    def __init__(self, tokenizer, tasks, auto_fast=(1, 2), looping=()):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.by_prompt = {t.prompt: t for t in tasks}
        self.auto_fast, self.looping = auto_fast, looping

    def response(self, text):
        prompt, mode = split_mode_tag(text)
        task = self.by_prompt[prompt]
        if mode == "auto":
            mode = "fast" if task.difficulty in self.auto_fast else "slow"
        response = teacher_response(task, mode)
        if mode == "fast" and task.difficulty >= 3:
            response = response.replace(f"{{{task.reference}}}", f"{{{int(task.reference) + 1}}}")
        if task.difficulty in self.looping and mode == "slow":
            line = response.split("\n")[0][len("<think>"):] + "\n"
            response = "<think>" + line * 100
        return response + "<|end|>"

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, num_return_sequences=1,
                 stopping_criteria=(), **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            assert mask[0] == 0 or all(mask)  # left padding
            text = self.tokenizer.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=True)
            if "Wait, I am repeating" in text:  # after a repair: go on to the end
                new = self.tokenizer("</think>\\boxed{0}<|end|>", add_special_tokens=False)["input_ids"]
            else:
                user = text[:text.index("<think>")] if "<think>" in text else text
                new = self.tokenizer(self.response(user), add_special_tokens=False)["input_ids"]
            rows.extend([new[:max_new_tokens]] * num_return_sequences)
        ends = set(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else {eos_token_id}
        prompts = [ids for ids in input_ids.tolist() for _ in range(num_return_sequences)]
        out = [list(ids) for ids in prompts]
        done = [False] * len(rows)
        for step in range(max(len(r) for r in rows)):
            for row, new in enumerate(rows):
                token = pad_token_id if done[row] or step >= len(new) else new[step]
                out[row].append(token)
                done[row] = done[row] or token in ends or step + 1 >= len(new)
            if stopping_criteria:
                stop = stopping_criteria(torch.tensor(out), None)
                done = [d or bool(s) for d, s in zip(done, stop.tolist())]
            if all(done):
                break
        return torch.tensor(out)


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


def test_auto_mode_fast_share_mode_follow_and_records(tokenizer):
    # The scripted model answers auto prompts fast on levels 1-2 and slow above: the fast share per
    # level says so, the explicit tags are followed, and the records are per task, in task order.
    tasks = generate_math_tasks(25, split="test", seed=4)
    model = ScriptedModel(tokenizer, tasks)
    with MathVerifier(MathConfig(workers=1)) as verifier:
        result = evaluate_model(model, tokenizer, tasks, EvalConfig(modes=("slow", "fast", "auto"), batch_size=6),
                                progress=False, verifier=verifier, records=True)
    assert result["fast_share"]["auto"] == {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0, "5": 0.0}
    assert result["fast_share"]["fast"] == {lv: 1.0 for lv in "12345"}
    assert result["fast_share"]["slow"] == {lv: 0.0 for lv in "12345"}
    assert set(result["mode_follow"]) == {"slow", "fast"}
    assert all(v == 1.0 for mode in result["mode_follow"].values() for v in mode.values())
    # auto is right everywhere (fast where fast is right), with fast's tokens on levels 1-2
    assert all(v == 1.0 for v in result["accuracy"]["auto"].values())
    for level in ("1", "2"):
        assert result["tokens"]["auto"][level] == result["tokens"]["fast"][level]
    for level in ("3", "4", "5"):
        assert result["tokens"]["auto"][level] == result["tokens"]["slow"][level]
    assert all(v == 0.0 for name in ("looped", "repairs") for mode in result[name].values() for v in mode.values())
    records = result["records"]["auto"]
    assert [r["level"] for r in records] == [t.difficulty for t in tasks]
    assert [r["fast"] for r in records] == [t.difficulty <= 2 for t in tasks]
    assert sum(r["tokens"] for r in records if r["level"] == 3) / 5 == result["tokens"]["auto"]["3"]


def test_loops_are_counted_and_repaired(tokenizer):
    # Level-4 slow answers loop on one line. Without repair each runs to the budget with its loop left
    # in; with repair the loop is cut once and the answer goes on (to a wrong answer, here).
    tasks = generate_math_tasks(10, levels=[3, 4], split="test", seed=2)
    model = ScriptedModel(tokenizer, tasks, looping=(4,))
    config = EvalConfig(modes=("slow", "auto"), max_new_tokens=120, batch_size=4)
    with MathVerifier(MathConfig(workers=1)) as verifier:
        plain = evaluate_model(model, tokenizer, tasks, config, progress=False, verifier=verifier)
        fixed = evaluate_model(model, tokenizer, tasks, config.replace(self_repair=True), progress=False,
                               verifier=verifier, records=True)
    for mode in ("slow", "auto"):
        assert plain["looped"][mode] == {"3": 0.0, "4": 1.0} and plain["repairs"][mode] == {"3": 0.0, "4": 0.0}
        assert plain["tokens"][mode]["4"] == 120 and plain["accuracy"][mode] == {"3": 1.0, "4": 0.0}
        assert fixed["looped"][mode] == {"3": 0.0, "4": 0.0} and fixed["repairs"][mode] == {"3": 0.0, "4": 1.0}
        assert fixed["accuracy"][mode]["3"] == 1.0
    # A repaired answer: three copies of its looped line, then the scripted ending after the control text.
    ending = len(tokenizer("</think>\\boxed{0}<|end|>", add_special_tokens=False)["input_ids"])
    for task, record in zip(tasks, fixed["records"]["slow"]):
        if task.difficulty == 4:
            line = teacher_response(task, "slow").split("\n")[0][len("<think>"):] + "\n"
            period = len(tokenizer(line, add_special_tokens=False)["input_ids"])
            assert (record["tokens"], record["repairs"], record["looped"]) == (1 + 3 * period + ending, 1, False)
    # the slow tag is still followed (thinking text, though never closed) by a looping answer
    assert plain["mode_follow"]["slow"]["4"] == 1.0


class FirstTokenOpens(torch.nn.Module):
    """A real tiny model whose first generated token is forced to be the open marker (so auto mode's
    decision is the second token, where the bias applies)."""

    def __init__(self, model, open_id):
        super().__init__()
        self.model, self.open_id = model, open_id

    def generate(self, input_ids, logits_processor=None, **kwargs):
        from transformers import LogitsProcessorList

        width, open_id = input_ids.shape[1], self.open_id

        def opens(ids, scores):
            if ids.shape[1] == width:
                scores = torch.full_like(scores, -float("inf"))
                scores[:, open_id] = 0.0
            return scores

        processors = LogitsProcessorList([opens, *(logits_processor or [])])
        return self.model.generate(input_ids=input_ids, logits_processor=processors, **kwargs)


def test_auto_bias_moves_the_decision(tokenizer):
    # A large bias on the close marker at the decision makes every auto answer fast; a large negative
    # one makes none fast. The explicit modes are untouched by it.
    tasks = generate_math_tasks(6, levels=[1, 2], split="test")
    open_id = tokenizer("<think>", add_special_tokens=False)["input_ids"][0]
    model = FirstTokenOpens(tiny_pangu("nano", tokenizer, seed=0), open_id)
    shares = {}
    for bias in (-1e4, 1e4):
        config = EvalConfig(modes=("auto",), max_new_tokens=4, batch_size=4, auto_bias=bias)
        shares[bias] = evaluate_model(model, tokenizer, tasks, config, progress=False)["fast_share"]["auto"]
    assert shares[1e4] == {"1": 1.0, "2": 1.0} and shares[-1e4] == {"1": 0.0, "2": 0.0}
    with pytest.raises(ConfigError, match="auto_bias: expected a finite number"):
        EvalConfig(auto_bias=float("inf"))


def test_sampled_decoding_is_seeded(tokenizer):
    # decoding: sample draws the answers at the temperature; the same seed gives the same result.
    tasks = generate_math_tasks(4, levels=[1], split="test")
    model = tiny_pangu("nano", tokenizer, seed=0)
    config = EvalConfig(modes=("slow",), max_new_tokens=6, decoding="sample", temperature=1.3, seed=3)
    first = evaluate_model(model, tokenizer, tasks, config, progress=False, records=True)
    again = evaluate_model(model, tokenizer, tasks, config, progress=False, records=True)
    greedy = evaluate_model(model, tokenizer, tasks, config.replace(decoding="greedy"), progress=False, records=True)
    assert first["records"] == again["records"] and first["examples"] == again["examples"]
    assert first["examples"] != greedy["examples"]
    with pytest.raises(ConfigError, match="decoding"):
        EvalConfig(decoding="beam")


def test_an_auto_mode_sample_of_a_task_is_scored_by_mars():
    # Task.to_sample(response, "auto") gives a MARS sample that is scored by the mode the response took.
    from pangu_core.rewards import RewardConfig, RewardScorer

    task = generate_math_tasks(1, levels=[2], split="test")[0]
    fast = task.to_sample(teacher_response(task, "fast"), "auto")
    slow = task.to_sample(teacher_response(task, "slow"), "auto")
    wrong = task.to_sample(teacher_response(task, "fast").replace(task.reference, str(int(task.reference) + 1)), "auto")
    assert fast.mode == "auto" and fast.reference == task.reference
    with RewardScorer(RewardConfig(workers=1)) as scorer:
        results = scorer.score([fast, slow, wrong])
    assert [r.scores["math"] for r in results] == [1.0, 1.0, 0.0]
    assert [r.scores["format"] for r in results] == [1.0, 1.0, 1.0]
