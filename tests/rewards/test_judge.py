"""The LLM evaluator: a tiny random model from a local folder, rules first, parsing, metric fusion."""

from __future__ import annotations

import pytest

from pangu_core.rewards.config import JudgeConfig
from pangu_core.rewards.judge import RUBRIC, JudgeScorer, LLMJudge, exact_match, parse_score, rule_check, token_f1

WORDS = ("you are grading an answer rubric question reference to give a score from as correct complete "
         "concise paris capital of france is the city none berlin think yes no good bad").split()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random 1-layer Llama and a word-level tokenizer without digits, built offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", eos_token="[EOS]")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny_judge")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_trivial_answers_never_score_high(tiny_model_dir):
    # Rules decide before the evaluator: a random model must not be able to reward these.
    scorer = JudgeScorer(JudgeConfig(model_path=tiny_model_dir, judge_weight=1.0, exact_weight=0, f1_weight=0))
    trivial = ["", ":", "Thought process:", "<think>long reasoning</think>", "<think>x</think>  ...  ",
               "<think>never closed, Paris", "Answer:", "<think>a</think>Final answer:"]
    scores = scorer.score(["q"] * len(trivial), trivial, ["Paris"] * len(trivial))
    assert all(s.score == 0.0 for s in scores), scores
    assert {s.reason for s in scores} <= {"empty answer", "trivial answer"}


def test_unparsable_evaluator_output_is_neutral(tiny_model_dir):
    config = JudgeConfig(model_path=tiny_model_dir, batch_size=2, max_new_tokens=4, neutral_score=0.5,
                         exact_weight=0.0, f1_weight=0.0, judge_weight=1.0)
    judge = LLMJudge(config)
    outputs = judge.generate(["capital of france", "give a score", "is paris the city"])
    assert len(outputs) == 3 and all(parse_score(o) is None for o in outputs)  # the vocabulary has no digits
    scores = JudgeScorer(config, judge).score(["q1", "q2", "q3"],
                                              ["Berlin is big", "Paris I think", "<think>t</think>No idea really"],
                                              ["Paris", "Paris", None])
    assert [s.score for s in scores] == [0.5, 0.5, 0.5]
    assert all(s.reason == "unparsable evaluator output" and not s.decided for s in scores)
    [with_rubric] = judge.evaluate(["q"], ["paris"], ["berlin"], rubrics=["names the capital"])
    assert with_rubric.score == 0.5 and not with_rubric.decided


def test_greedy_batched_generation_is_deterministic(tiny_model_dir):
    judge = LLMJudge(JudgeConfig(model_path=tiny_model_dir, batch_size=2, max_new_tokens=5))
    prompts = ["paris is the capital", "give a score", "yes", "no good bad"]
    assert judge.generate(prompts) == judge.generate(prompts)
    # Left padding keeps a prompt's continuation independent of its batch mates.
    assert judge.generate(prompts)[2] == judge.generate(["yes"])[0]


def test_metric_fusion_weights():
    scorer = JudgeScorer(JudgeConfig(exact_weight=0.5, f1_weight=0.5, judge_weight=0.0))
    got = scorer.score(["q"], ["the city of Paris"], ["Paris"])[0]
    assert got.score == pytest.approx(0.5 * 0.0 + 0.5 * token_f1("the city of Paris", "Paris"))
    assert scorer.score(["q"], ["paris."], ["Paris"])[0].score == 1.0  # exact match after normalising
    f1_only = JudgeScorer(JudgeConfig(exact_weight=0.0, f1_weight=1.0, judge_weight=0.0))
    assert f1_only.score(["q"], ["Paris France"], ["Paris"])[0].score == pytest.approx(2 / 3)


def test_score_parsing_and_metrics():
    assert parse_score(" 7") == 0.7
    assert parse_score("Score: 8/10") == 0.8
    assert parse_score(" 3 / 5 because") == 0.6
    assert parse_score("I'd say Rating = 12") == 1.0
    assert parse_score("good answer") is None and parse_score("") is None
    assert exact_match("The Answer", "answer") == 1.0 and exact_match("", "") == 0.0
    assert token_f1("x b c", "b c d") == pytest.approx(2 / 3)
    assert rule_check("Paris", "paris").score == 1.0 and rule_check("Paris is nice", "Rome") is None


def test_front_door_errors():
    with pytest.raises(ValueError, match="model_path"):
        LLMJudge(JudgeConfig())
    with pytest.raises(ValueError, match="equal lengths"):
        JudgeScorer().score(["q"], [], [])
    with pytest.raises(ValueError, match="neutral_score"):
        JudgeConfig(neutral_score=2.0)


def test_a_runaway_answer_reaches_the_evaluator_cut_to_its_tail(tiny_model_dir, monkeypatch):
    # Prompts are cut from the left to max_prompt_tokens anyway; a 10 MB answer is cut before the
    # tokenizer sees it (it would spend seconds on it), keeping its end and the "Score:" cue.
    judge = LLMJudge(JudgeConfig(model_path=tiny_model_dir, max_prompt_tokens=64))
    seen = []
    monkeypatch.setattr(judge, "generate", lambda prompts: seen.extend(prompts) or ["Score: 5"] * len(prompts))
    answer = "bad " * 2_500_000 + "paris is the capital"
    [verdict] = judge.evaluate(["q"], [answer], ["paris"])
    assert verdict.score == 0.5
    [prompt] = seen
    assert len(prompt) < 64 * 64 + len(RUBRIC) + 100
    assert "paris is the capital\nGive a score" in prompt and prompt.endswith("Score:")
    assert rule_check(" !" * 5_000_000, "paris").reason == "trivial answer"  # no letter anywhere
