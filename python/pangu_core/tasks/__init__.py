"""The embedded default: generated reasoning tasks, a programmatic teacher, tokenizer and tiny model.

Names are imported on first use, so ``import pangu_core.tasks`` stays light (the tokenizer and the
model pull in transformers).
"""

from __future__ import annotations

from pangu_core._lazy import lazy_exports

_EXPORTS = {
    "Task": "dataset", "read_jsonl": "dataset", "write_jsonl": "dataset", "TASK_TYPES": "dataset",
    "generate_math_tasks": "math_tasks", "arithmetic_steps": "math_tasks", "evaluate": "math_tasks",
    "in_test_split": "math_tasks", "LEVELS": "math_tasks",
    "generate_code_tasks": "code_tasks", "run_tests": "code_tasks",
    "teacher_response": "teacher", "slow_thinking": "teacher",
    "build_tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "tiny_pangu": "model", "tiny_config": "model", "SIZES": "model", "count_parameters": "model",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
