"""A character-level tokenizer built offline in milliseconds, as a transformers fast tokenizer.

Every character is one token (so each digit is its own token, which keeps arithmetic learnable);
the turn markers are special tokens; the thinking markers, ``\\boxed{`` and the mode tags are
single added tokens, so a fast answer costs a handful of tokens. The vocabulary is printable ASCII
plus newline, the teacher's operand labels (Greek letters) and any other character seen in the
corpus passed to :func:`build_tokenizer`; other characters map to ``<|unk|>``. The chat template
is :func:`pangu_core.dual.chat_format.chat_template`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pangu_core.dual.chat_format import DEFAULT_FORMAT, MODE_SUFFIX, ChatFormat, chat_template
from pangu_core.tasks.teacher import LABELS

UNK = "<|unk|>"
BOXED = "\\boxed{"


def _base_alphabet() -> list[str]:
    """Printable ASCII with space and newline (tabs and other control whitespace left out), and the
    teacher's operand labels, so every teacher answer encodes without unknown tokens."""
    return sorted((set(string.printable) - set("\t\r\x0b\x0c")) | set(LABELS))


def build_tokenizer(corpus: Iterable[str] = (), chat_format: ChatFormat = DEFAULT_FORMAT) -> PreTrainedTokenizerFast:
    """A character-level tokenizer whose vocabulary covers printable ASCII, the teacher's labels and ``corpus``.

    Ids are stable for a given alphabet: specials first, then added tokens, then characters in
    sorted order.
    """
    characters = set(_base_alphabet())
    for text in corpus:
        if not isinstance(text, str):
            raise TypeError(f"corpus: expected str items, got {type(text).__name__}")
        characters.update(text)
    specials = [chat_format.pad, UNK, *chat_format.special_tokens()[1:]]
    added = [chat_format.markers.open, chat_format.markers.close, BOXED,
             MODE_SUFFIX["fast"].strip(), MODE_SUFFIX["auto"].strip()]
    vocab: dict[str, int] = {}
    for token in [*specials, *added, *sorted(characters)]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=chat_format.bos,
        eos_token=chat_format.end,
        pad_token=chat_format.pad,
        unk_token=UNK,
        padding_side="right",
        model_max_length=4096,
    )
    tokenizer.chat_template = chat_template(chat_format)
    return tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Loads a tokenizer saved with ``save_pretrained`` (this one or any transformers tokenizer)."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"path: expected a tokenizer directory, got {str(path)!r}")
    return AutoTokenizer.from_pretrained(str(path))
