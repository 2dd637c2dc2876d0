"""The chat format of the dual system: mode tags, turn rendering, and parsing a response.

Modes follow openPangu-Embedded: a user turn without a tag asks for slow thinking (the default),
one ending in ``" /no_think"`` asks for fast thinking (the thinking block comes back empty) and one
ending in ``" /auto_think"`` lets the model choose. A conversation renders as::

    <|bos|><|user|>47+38-19 /no_think<|end|><|assistant|><think></think>\\boxed{66}<|end|>

:func:`chat_template` is the same rendering as a Jinja template for a transformers tokenizer
(``apply_chat_template(messages, mode="fast", add_generation_prompt=True)``; ``enable_thinking=False``
also selects fast mode), so Python code and ``apply_chat_template`` agree token for token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pangu_core.dual.response import (
    AUTO_TAG,
    DEFAULT_MARKERS,
    FAST_TAG,
    MODES,
    ThinkingMarkers,
    extract_final_answer,
    split_thinking,
)

# What is appended to the user text for each mode (slow is the untagged default).
MODE_SUFFIX = {"slow": "", "fast": f" {FAST_TAG}", "auto": f" {AUTO_TAG}"}


@dataclass(frozen=True)
class ChatFormat:
    """The strings that frame turns and the thinking block."""

    bos: str = "<|bos|>"
    user: str = "<|user|>"
    assistant: str = "<|assistant|>"
    end: str = "<|end|>"
    pad: str = "<|pad|>"
    markers: ThinkingMarkers = DEFAULT_MARKERS

    def special_tokens(self) -> tuple[str, ...]:
        """Tokens that frame turns (dropped when decoding with skip_special_tokens)."""
        return (self.pad, self.bos, self.user, self.assistant, self.end)


DEFAULT_FORMAT = ChatFormat()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def split_mode_tag(text: str) -> tuple[str, str]:
    """(user text without its tag, mode the tag asks for); untagged text is slow."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    stripped = text.rstrip()
    for mode in ("fast", "auto"):
        suffix = MODE_SUFFIX[mode].strip()
        if stripped.endswith(suffix):
            return stripped[: -len(suffix)].rstrip(), mode
    return text, "slow"


def add_mode_tag(text: str, mode: str) -> str:
    """``text`` with the tag of ``mode`` at its end (replacing any tag it had)."""
    _check_mode(mode)
    base, _ = split_mode_tag(text)
    return base + MODE_SUFFIX[mode]


def render_conversation(
    messages: Sequence[Mapping[str, str]],
    mode: str | None = None,
    add_generation_prompt: bool = False,
    chat_format: ChatFormat = DEFAULT_FORMAT,
) -> str:
    """Renders user/assistant turns; ``mode`` (when given) tags the last user turn.

    A user turn that already carries a tag keeps it when ``mode`` is None.
    """
    if mode is not None:
        _check_mode(mode)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    parts = [chat_format.bos]
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise TypeError(f"messages[{index}].content: expected str, got {type(content).__name__}")
        if role == "user":
            if index == last_user and mode is not None:
                content = add_mode_tag(content, mode)
            parts.append(f"{chat_format.user}{content}{chat_format.end}")
        elif role == "assistant":
            parts.append(f"{chat_format.assistant}{content}{chat_format.end}")
        else:
            raise ValueError(f"messages[{index}].role: expected 'user' or 'assistant', got {role!r}")
    if add_generation_prompt:
        parts.append(chat_format.assistant)
    return "".join(parts)


def render_prompt(user_text: str, mode: str = "slow", chat_format: ChatFormat = DEFAULT_FORMAT) -> str:
    """A one-turn prompt ending where the assistant starts writing."""
    return render_conversation([{"role": "user", "content": user_text}], mode, True, chat_format)


def render_response(thinking: str, answer: str, chat_format: ChatFormat = DEFAULT_FORMAT) -> str:
    """An assistant response: the thinking block (empty for fast mode) and the answer, no end token."""
    return f"{chat_format.markers.open}{thinking}{chat_format.markers.close}{answer}"


@dataclass(frozen=True)
class ParsedTurn:
    """A generated response split into parts.

    ``closed`` is False when the thinking block never closed (then ``answer`` is empty and
    ``final_answer`` None); ``fast`` is True when the thinking block is present and empty.
    """

    thinking: str | None
    answer: str
    closed: bool
    final_answer: str | None

    @property
    def fast(self) -> bool:
        return self.thinking == ""


def parse_response(text: str, chat_format: ChatFormat = DEFAULT_FORMAT) -> ParsedTurn:
    """Splits a response (possibly with the end token and padding still in it) into its parts."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    cut = text.find(chat_format.end)
    body = text if cut < 0 else text[:cut]
    body = body.replace(chat_format.pad, "")
    if body.startswith(chat_format.assistant):
        body = body[len(chat_format.assistant):]
    parsed = split_thinking(body, chat_format.markers)
    final = extract_final_answer(body, chat_format.markers) if parsed.closed else None
    return ParsedTurn(parsed.thinking, parsed.answer, parsed.closed, final)


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def chat_template(chat_format: ChatFormat = DEFAULT_FORMAT) -> str:
    """The Jinja chat template equivalent to :func:`render_conversation`."""
    fast, auto = _jinja_string(MODE_SUFFIX["fast"].strip()), _jinja_string(MODE_SUFFIX["auto"].strip())
    user, assistant, end = (_jinja_string(s) for s in (chat_format.user, chat_format.assistant, chat_format.end))
    return (
        "{%- set suffix = {'slow': '', 'fast': ' ' + " + fast + ", 'auto': ' ' + " + auto + "} -%}"
        "{%- if mode is defined and mode is not none -%}{%- set m = mode -%}"
        "{%- elif enable_thinking is defined and not enable_thinking -%}{%- set m = 'fast' -%}"
        "{%- else -%}{%- set m = none -%}{%- endif -%}"
        "{%- if m is not none and m not in suffix -%}"
        "{{- raise_exception('mode: expected one of slow, fast, auto, got ' ~ m) -}}{%- endif -%}"
        "{%- set ns = namespace(last_user=-1) -%}"
        "{%- for message in messages -%}{%- if message['role'] == 'user' -%}"
        "{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
        "{{- bos_token -}}"
        "{%- for message in messages -%}"
        "{%- set content = message['content'] -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- if loop.index0 == ns.last_user and m is not none -%}"
        "{%- set content = content.rstrip() -%}"
        "{%- if content.endswith(" + fast + ") -%}{%- set content = content[:-" + str(len(FAST_TAG)) + "].rstrip() -%}"
        "{%- elif content.endswith(" + auto + ") -%}{%- set content = content[:-" + str(len(AUTO_TAG)) + "].rstrip() -%}"
        "{%- else -%}{%- set content = message['content'] -%}{%- endif -%}"
        "{%- set content = content + suffix[m] -%}"
        "{%- endif -%}"
        "{{- " + user + " + content + " + end + " -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- " + assistant + " + content + " + end + " -}}"
        "{%- else -%}{{- raise_exception('messages: role must be user or assistant, got ' ~ message['role']) -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + assistant + " -}}{%- endif -%}"
    )


_PLACEHOLDER = "\x00pangu-user-text\x00"


def template_prompts(tokenizer, items: Sequence[tuple[str, str]]) -> list[str]:
    """``(user text, mode)`` pairs rendered by the tokenizer's chat template as one tagged user turn
    followed by the generation prompt.

    Rendering a Jinja template costs about a millisecond, which dominates building a large SFT set,
    so each mode's template is rendered once around a placeholder and the texts are spliced in. That
    is exact when the template copies the user text verbatim; it is checked against a real rendering
    of the first text of each mode, and a template that transforms the text is rendered item by item,
    as are texts with surrounding whitespace (which templates often strip).
    """

    def render(text: str) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)

    frames: dict[str, tuple[str, str] | None] = {}
    out = []
    for text, mode in items:
        if mode not in frames:
            frame = render(add_mode_tag(_PLACEHOLDER, mode))
            frames[mode] = None
            if frame.count(_PLACEHOLDER) == 1:
                head, tail = frame.split(_PLACEHOLDER)
                if head + split_mode_tag(text)[0] + tail == render(add_mode_tag(text, mode)):
                    frames[mode] = (head, tail)
        frame = frames[mode]
        if frame is None or text != text.strip():
            out.append(render(add_mode_tag(text, mode)))
        else:
            out.append(frame[0] + split_mode_tag(text)[0] + frame[1])
    return out
