"""Staleness-bounded weight sync for the latency-tolerant RL scheduler (stale synchronous parallel).

The learner publishes versions of its weights; rollout workers pull a version that is at most
``staleness`` behind their clock straight into their own model's parameters (in place). Transports
sit in a registry (:mod:`pangu_core.sync.registry`): ``"inprocess"`` (threads of one process),
``"shm"`` (processes on one host, POSIX shared memory; both in :mod:`pangu_core.sync.store`) and
``"torch_distributed"`` (ranks of a process group: gloo on CPU, NCCL on CUDA, HCCL on Ascend; in
:mod:`pangu_core.sync.distributed`, imported only when that transport is used). Across machines,
:class:`Relay` (one per node) receives each version once over torch.distributed from the learner's
:class:`RelaySource` and republishes it into the node's shared memory (:mod:`pangu_core.sync.relay`). The copies, the
version ring and the clock are C++. Models on CUDA or NPU are staged through host buffers.

Modules: ``config`` (SyncConfig, required_version), ``registry``, ``layout`` (what is published),
``endpoints`` (Publisher, Subscriber), ``clock`` (SSPClock), ``store``, ``distributed`` and ``relay``.

Example::

    config = SyncConfig(transport="shm", name="policy", publish_dtype="bfloat16")
    publisher = Publisher(learner_model, config)          # learner process
    version = publisher.publish()                          # after each optimiser step
    subscriber = Subscriber(rollout_model, config)         # each rollout process
    subscriber.pull(min_version=required_version(clock, config.staleness))
"""

from __future__ import annotations

from pangu_core.sync.clock import SSPClock
from pangu_core.sync.config import SyncConfig, required_version
from pangu_core.sync.endpoints import Publisher, Subscriber
from pangu_core.sync.layout import check_compatible, describe, flat_layout, parse_layout_text
from pangu_core.sync.registry import get_transport, register_transport, transports
from pangu_core.sync.relay import Relay, RelaySource
from pangu_core.sync.store import find_segment, list_segments, sweep

__all__ = [
    "SyncConfig", "Publisher", "Subscriber", "SSPClock", "required_version", "register_transport", "transports",
    "get_transport", "describe", "check_compatible", "flat_layout", "parse_layout_text", "sweep", "list_segments",
    "find_segment", "Relay", "RelaySource",
]
