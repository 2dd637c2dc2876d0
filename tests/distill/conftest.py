"""Shared fixtures of the distillation tests."""

from __future__ import annotations


import json

import pytest

from pangu_core.distill.config import DistillConfig



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
