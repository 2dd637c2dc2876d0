"""Fixtures shared by the RL run tests (single host, Ray, torchrun)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """An untrained nano checkpoint folder (model + tokenizer), as `pangu-core sft` writes one."""
    from pangu_core.tasks.model import tiny_pangu
    from pangu_core.tasks.tokenizer import build_tokenizer

    folder = tmp_path_factory.mktemp("init")
    tokenizer = build_tokenizer()
    tiny_pangu("nano", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
