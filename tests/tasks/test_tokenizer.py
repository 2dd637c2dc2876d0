"""The character tokenizer: digits are single tokens, markers are single tokens, save/load round trips."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from pangu_core.dual.chat_format import render_conversation, render_prompt
from pangu_core.tasks.math_tasks import generate_math_tasks
from pangu_core.tasks.teacher import teacher_response
from pangu_core.tasks.tokenizer import BOXED, build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(["Ünïcode"])


def test_digits_and_markers_are_single_tokens(tokenizer):
    # Arithmetic stays learnable only if every digit is its own token.
    for digit in "0123456789":
        assert len(tokenizer(digit, add_special_tokens=False)["input_ids"]) == 1
    text = "<think></think>" + BOXED + "42}<|end|>"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens == ["<think>", "</think>", BOXED, "4", "2", "}", "<|end|>"]


def test_encode_decode_round_trip_including_corpus_characters(tokenizer):
    text = "<|bos|><|user|>Ünïcode 12+3 /no_think\nnew line<|end|><|assistant|><think>x</think>\\boxed{15}<|end|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Ünïcode 12+3 /no_think\nnew line<think>x</think>\\boxed{15}"


def test_teacher_answers_encode_without_unknown_tokens_from_an_empty_corpus():
    # The default tokenizer covers every teacher answer (the labels are Greek letters) one
    # character per token.
    plain = build_tokenizer()
    for task in generate_math_tasks(200, seed=3):
        response = teacher_response(task, "slow")
        ids = plain(response, add_special_tokens=False)["input_ids"]
        assert plain.unk_token_id not in ids and plain.decode(ids) == response


def test_unknown_characters_map_to_unk(tokenizer):
    assert tokenizer("€", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


@pytest.mark.parametrize("mode", ["slow", "fast", "auto"])
def test_chat_template_matches_python_rendering(tokenizer, mode):
    # One format: apply_chat_template and render_conversation agree for every mode.
    messages = [{"role": "user", "content": "1+2"}, {"role": "assistant", "content": "<think></think>\\boxed{3}"},
                {"role": "user", "content": "47+38 "}]
    via_template = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, mode=mode)
    assert via_template == render_conversation(messages, mode=mode, add_generation_prompt=True)


def test_chat_template_modes_and_qwen_style_switch(tokenizer):
    messages = [{"role": "user", "content": "3+5"}]
    render = lambda **kw: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)  # noqa: E731
    assert render() == "<|bos|><|user|>3+5<|end|><|assistant|>"
    assert render(mode="fast") == render_prompt("3+5", "fast") == "<|bos|><|user|>3+5 /no_think<|end|><|assistant|>"
    assert render(enable_thinking=False) == render(mode="fast")
    assert render(mode="auto").endswith("3+5 /auto_think<|end|><|assistant|>")
    tagged = [{"role": "user", "content": "3+5 /no_think"}]
    assert tokenizer.apply_chat_template(tagged, tokenize=False, add_generation_prompt=True, mode="slow") == render()
    with pytest.raises(Exception, match="mode"):
        render(mode="medium")


def test_save_and_load_give_the_same_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        text = render_prompt("Ünïcode 9-4", "fast") + "<think></think>\\boxed{5}<|end|>"
        assert loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert loaded.chat_template == tokenizer.chat_template
        assert (loaded.eos_token, loaded.pad_token, loaded.bos_token) == ("<|end|>", "<|pad|>", "<|bos|>")
    with pytest.raises(FileNotFoundError, match="path"):
        load_tokenizer(tmp_path / "missing")


def test_bad_corpus_is_rejected():
    with pytest.raises(TypeError, match="corpus"):
        build_tokenizer([1, 2])
