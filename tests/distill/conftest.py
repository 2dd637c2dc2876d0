"""Shared fixtures of the distillation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pangu_core.tasks.model import tiny_pangu
from pangu_core.tasks.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def start_folder(tmp_path_factory) -> Path:
    """A randomly initialised nano model with the character tokenizer, saved as a model folder."""
    folder = tmp_path_factory.mktemp("start")
    tokenizer = build_tokenizer()
    tiny_pangu("nano", tokenizer, seed=0, max_position_embeddings=128).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
