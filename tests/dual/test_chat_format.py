"""The dual-system chat format: mode tags, rendering, and robust response parsing."""

from __future__ import annotations

import pytest

from pangu_core.dual.chat_format import (
    ChatFormat,
    add_mode_tag,
    parse_response,
    render_conversation,
    render_prompt,
    render_response,
    split_mode_tag,
)
from pangu_core.dual.response import ThinkingMarkers


@pytest.mark.parametrize("mode, text", [("slow", "7+5"), ("fast", "7+5 /no_think"), ("auto", "7+5 /auto_think")])
def test_mode_tags_round_trip(mode, text):
    # No tag is slow; the tag at the end of the user turn picks fast or auto.
    assert add_mode_tag("7+5", mode) == text
    assert split_mode_tag(text) == ("7+5", mode)
    assert add_mode_tag(text, "slow") == "7+5"
    assert add_mode_tag(add_mode_tag(text, "fast"), mode) == text


def test_render_prompt_and_conversation():
    assert render_prompt("7+5") == "<|bos|><|user|>7+5<|end|><|assistant|>"
    conversation = render_conversation(
        [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "<think></think>\\boxed{2}"},
         {"role": "user", "content": "2+2"}], mode="fast")
    # Only the last user turn is tagged.
    assert conversation == ("<|bos|><|user|>1+1<|end|><|assistant|><think></think>\\boxed{2}<|end|>"
                            "<|user|>2+2 /no_think<|end|>")


@pytest.mark.parametrize("thinking, answer", [("", "\\boxed{12}"), ("7+5=12\n", "\\boxed{12}"), ("a\nb", "so \\boxed{x^2}")])
def test_response_round_trip(thinking, answer):
    text = render_response(thinking, answer) + "<|end|><|pad|><|pad|>"
    parsed = parse_response(text)
    assert parsed.thinking == thinking.strip() and parsed.answer == answer and parsed.closed
    assert parsed.fast == (thinking == "")
    assert parsed.final_answer == answer[answer.index("{") + 1:-1]


def test_missing_close_marker_means_no_answer():
    # Robustness: a block that never closes is all thinking, and there is no final answer.
    parsed = parse_response("<think>7+5=12 and \\boxed{12} maybe<|end|>")
    assert not parsed.closed and parsed.answer == "" and parsed.final_answer is None
    assert parsed.thinking == "7+5=12 and \\boxed{12} maybe"


def test_missing_open_marker_and_no_markers():
    assert parse_response("7+5=12</think>\\boxed{12}").final_answer == "12"
    plain = parse_response("The answer is 12.")
    assert plain.thinking is None and plain.final_answer == "12"


def test_other_marker_strings():
    chat = ChatFormat(end="[EOS]", markers=ThinkingMarkers("[unused16]", "[unused17]"))
    parsed = parse_response("[unused16]think[unused17]\\boxed{3}[EOS]junk", chat)
    assert (parsed.thinking, parsed.final_answer) == ("think", "3")


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="mode"):
        add_mode_tag("x", "medium")
    with pytest.raises(ValueError, match="role"):
        render_conversation([{"role": "system", "content": "x"}])
    with pytest.raises(TypeError, match="content"):
        render_conversation([{"role": "user", "content": 3}])
    with pytest.raises(TypeError, match="text"):
        parse_response(None)


def test_template_prompts_match_the_template_item_by_item():
    from pangu_core.dual.chat_format import template_prompts
    from pangu_core.tasks.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    items = [("47+38-19", "slow"), ("7+5", "fast"), ("Ann has 3 pens. How many?", "auto"), ("9-4 /no_think", "slow"),
             ("12+3 /auto_think", "fast"), (" padded ", "slow"), ("", "fast")]
    expected = [tokenizer.apply_chat_template([{"role": "user", "content": add_mode_tag(text, mode)}],
                                              tokenize=False, add_generation_prompt=True) for text, mode in items]
    assert template_prompts(tokenizer, items) == expected


def test_template_prompts_fall_back_when_the_template_changes_the_text():
    from pangu_core.dual.chat_format import template_prompts
    from pangu_core.tasks.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] | upper }}]{% endfor %}"
    assert template_prompts(tokenizer, [("ab", "slow"), ("cd", "fast")]) == ["[AB]", "[CD /NO_THINK]"]
