"""Shared fixtures of the distillation tests."""

from __future__ import annotations

from pathlib import Path

import json

import pytest

from pangu_core.distill.config import DistillConfig

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


SMALL = {
    "rounds": 2, "levels": [1, 2], "test_per_level": 3, "num_threads": 1, "tokens_per_round": 600,
    "selection": {"pool_size": 8, "select": 4, "k": 2, "max_new_tokens": 12, "batch_size": 8},
    "sft": {"batch_size": 4, "learning_rate": 0.003, "warmup_steps": 1, "max_length": 128, "log_every": 1},
    "eval": {"modes": ["slow"], "max_new_tokens": 12, "batch_size": 8},
    "warm_start": {"levels": [1, 2], "train_problems": 40,
                   "trainer": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "max_length": 128}},
}


def _small_config(**changes) -> DistillConfig:
    data = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return DistillConfig.from_dict(data)


@pytest.fixture
def small_config():
    """Builds a DistillConfig of a few seconds (levels 1-2, two rounds, tiny pools); keyword changes
    replace top-level fields and update nested mappings."""
    return _small_config
