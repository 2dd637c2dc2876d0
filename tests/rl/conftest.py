"""Fixtures shared by the RL run tests (single host, Ray, torchrun)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def init(tmp_path_factory, save_nano) -> Path:
    """An untrained nano checkpoint folder (model + tokenizer), as `pangu-core sft` writes one."""
    return save_nano(tmp_path_factory.mktemp("init"))
