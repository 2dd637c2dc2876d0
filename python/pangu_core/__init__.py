"""pangu_core: building blocks for dual-system (fast / slow thinking) LLM reasoners.

Usage::

    import pangu_core
    from pangu_core.queue import PriorityQueue            # samples for the learner, best first
    from pangu_core.merge import MergeConfig, merge_checkpoints
    from pangu_core import attention as attn              # attn.attention(q, k, v, causal=True)

    pangu_core.set_num_threads(2)                          # every C++ parallel loop
    print(pangu_core.build_info())                         # compiler, ISA paths, threads

From a shell: ``pangu-core --help`` (subcommands: sft, merge, bench, info).

The parts (each a submodule, imported on first use):

- ``queue``: the priority data queue between rollout workers and the learner (C++).
- ``sync``: stale-synchronous weight sync: SSP clock, publisher / subscriber, shm and
  torch.distributed transports (C++ copies).
- ``merge``: checkpoint merging (linear, task arithmetic, TIES, DARE, slerp) in memory and
  streamed between safetensors folders (C++).
- ``attention``: fused attention for CPU (C++ kernels), CUDA (SDPA) and Ascend NPUs, and the
  transformers integration.
- ``rewards``: MARS, multi-source rewards (math, code in a sandbox, an evaluator, shaping).
- ``tasks``: the embedded default: generated reasoning tasks, teacher, tokenizer, tiny model.
- ``distill``: the SFT trainer and round merging.
- ``rl``: priorities of RL samples for the queue.
- ``dual``: the fast / slow / auto chat format and response parsing.
- ``evaluation``: accuracy and tokens per mode and level.
- ``config``: the typed config mixin every config uses; ``tensors``: dtypes and casts;
  ``device``: cpu / cuda / npu selection; ``bench``: the microbenchmarks of ``pangu-core bench``.
"""

from __future__ import annotations

import importlib
from typing import Any

from pangu_core import _core
from pangu_core._core import PeerLost, QueueClosed, QueueFull
from pangu_core._version import __version__

_SUBMODULES = {
    "attention", "bench", "config", "device", "distill", "dual", "evaluation", "merge", "queue", "rewards", "rl",
    "sync", "tasks", "tensors",
}

__all__ = [
    "__version__", "build_info", "set_num_threads", "get_num_threads", "set_isa", "reset_isa",
    "available_isas", "QueueFull", "QueueClosed", "PeerLost", *sorted(_SUBMODULES),
]


def build_info() -> dict[str, Any]:
    """How the core was built and what it runs on this machine.

    Keys: version, compiler, threads_backend (the executor of every parallel loop: "openmp", the
    process's OpenMP team, or "pool", the core's own threads), openmp (built with it), isa_compiled
    (paths in the binary), isa_detected (best the CPU supports), isa_selected (what dispatch uses
    now), threads, ascend (Ascend C kernels built), sanitizer ("", "address" or "thread").
    """
    return dict(_core.build_info())


def set_num_threads(n: int) -> None:
    """Sets the threads every C++ parallel loop uses (process-wide). ``n`` must be >= 1."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int >= 1, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the C++ parallel loops use now."""
    return int(_core.get_num_threads())


def set_isa(isa: str) -> None:
    """Caps runtime dispatch at ``isa`` ("scalar", "avx2", "avx512", "avx512_bf16").

    For tests and comparisons; the PANGU_ISA environment variable sets the same cap at start-up.
    Raises ValueError for a name this CPU cannot run.
    """
    _core.set_isa(isa)


def reset_isa() -> None:
    """Removes the cap set by :func:`set_isa`: dispatch uses the best path the CPU has."""
    _core.reset_isa()


def available_isas() -> list[str]:
    """Every dispatch path this CPU can run, lowest first."""
    return list(_core.available_isas())


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"pangu_core.{name}")
    raise AttributeError(f"module 'pangu_core' has no attribute {name!r}")
