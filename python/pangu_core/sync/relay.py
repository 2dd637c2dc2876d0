"""Per-node weight relays: one network copy of each version per node, node-local shared memory after.

The learner's rank holds a :class:`RelaySource`; every other node runs one :class:`Relay`. The
relay's :class:`~pangu_core.sync.Subscriber` sits in the torch.distributed collective (transport
``"torch_distributed"``: gloo on CPU, NCCL on CUDA, HCCL on Ascend) and receives every version the
learner publishes; its :class:`~pangu_core.sync.Publisher` republishes that version, under the same
version number, into the node's shared memory (transport ``"shm"``). The node's rollout processes
subscribe to that segment and pull at their own pace under the SSP bound
(``pull(min_version=...)``), so no rollout process is ever part of the collective and none of them
can hold up the learner's publish: the learner waits only for the relays, which wait for nothing
but the next version.

::

    learner rank:  RelaySource.publish(v) -> [PUBLISH, v] broadcast -> buckets of v (one copy per relay)
    relay (node):  receive [PUBLISH, v] -> Subscriber.pull(min_version=v) -> Publisher.publish(version=v) (shm)
    rollouts:      Subscriber(shm, address=relay.address).pull(min_version=c - eta)

Protocol on the default process group, in order: the layout text (one object broadcast), the
torch_distributed channel's own layout broadcast, then per version a two-int control broadcast
``[PUBLISH, v]`` followed by the version's buckets; :meth:`RelaySource.close` sends ``[STOP, -1]``
and every relay closes its shared memory. A relay whose collective fails (the learner died) closes
its segment too, so its rollouts get :class:`pangu_core.PeerLost` instead of waiting.

Counted: the bytes each relay received per version (``Relay.stats()["bytes_per_version"]``: the
payload of one version each, the learner's ``RelaySource.bytes_per_version``, i.e. one network copy
per node per version) and the seconds of each of the learner's publishes (``RelaySource.publish_s``).
A version's payload is its tensors' bytes plus the alignment gaps inside buckets of several small
tensors, so it is at most ``nbytes``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from pangu_core.sync.config import SyncConfig
from pangu_core.sync.endpoints import Publisher, Subscriber
from pangu_core.sync.layout import describe, layout_text, parse_layout_text
from pangu_core.tensors import DTYPES

__all__ = ["RelaySource", "Relay"]

PUBLISH, STOP = 1, 0


def _check(config: SyncConfig, what: str) -> SyncConfig:
    if not isinstance(config, SyncConfig):
        raise TypeError(f"{what}: expected a SyncConfig, got {type(config).__name__}")
    if config.transport != "torch_distributed":
        raise ValueError(f"{what}.transport: expected 'torch_distributed' (the network side of a relay), "
                         f"got {config.transport!r}")
    if config.changed_only:
        raise ValueError(f"{what}.changed_only: expected False (a relay republishes whole versions)")
    return config


def _world() -> tuple[Any, torch.device]:
    """The initialised torch.distributed module and the device its collectives use (the transport's
    own helpers, imported here so that importing pangu_core.sync never imports torch.distributed)."""
    from pangu_core.sync.distributed import _comm_device, _dist

    dist = _dist("relay")
    return dist, _comm_device(dist)


class _PublisherView:
    """What both ends of a relay report about the Publisher they hold (``self._publisher``); each end
    is a context manager that closes itself (its own ``close()``) on exit."""

    _publisher: Publisher

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def latest_version(self) -> int:
        """Newest version published by this end (-1 before the first)."""
        return self._publisher.latest_version

    @property
    def nbytes(self) -> int:
        """Bytes of one version."""
        return self._publisher.nbytes


class RelaySource(_PublisherView):
    """The learner's end: broadcasts each published version to the relays (one per other node).

    ``source`` is the learner's model or state dict; ``config`` a ``"torch_distributed"``
    SyncConfig whose ``src_rank`` is this rank. Every rank of the default process group other
    than ``src_rank`` must construct a :class:`Relay` at the same time.
    """

    def __init__(self, source: Any, config: SyncConfig) -> None:
        self.config = _check(config, "config")
        dist, self._device = _world()
        self._dist = dist
        if dist.get_rank() != config.src_rank:
            raise ValueError(f"src_rank: a RelaySource runs on the learner's rank {config.src_rank}, "
                             f"this is rank {dist.get_rank()}")
        dist.broadcast_object_list([layout_text(describe(source, config.publish_dtype))], src=config.src_rank)
        self._publisher = Publisher(source, config)
        self.relays = dist.get_world_size() - 1
        self.publish_s: list[float] = []
        self.bytes_per_version: dict[int, int] = {}
        self._closed = False

    @property
    def bytes_transferred(self) -> int:
        """Bytes broadcast so far (each broadcast counted once; every relay receives each)."""
        return int(self._publisher.bytes_transferred or 0)

    def _control(self, command: int, version: int) -> None:
        tensor = torch.tensor([command, version], dtype=torch.int64, device=self._device)
        self._dist.broadcast(tensor, src=self.config.src_rank)

    def publish(self, source: Any = None, version: int | None = None) -> int:
        """Sends ``version`` (default latest + 1) to every relay; returns it. Blocks only for the transfer."""
        if self._closed:
            raise RuntimeError("relay source: publish after close()")
        if version is None:
            version = self.latest_version + 1
        if isinstance(version, bool) or not isinstance(version, int) or version <= self.latest_version:
            raise ValueError(f"version: expected an int > {self.latest_version} (the newest sent), got {version!r}")
        started = time.perf_counter()
        before = self.bytes_transferred
        self._control(PUBLISH, version)
        got = self._publisher.publish(source, version=version)
        self.publish_s.append(time.perf_counter() - started)
        self.bytes_per_version[got] = self.bytes_transferred - before
        return got

    def close(self) -> None:
        """Tells every relay to stop (they close their shared memory); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._control(STOP, -1)
        finally:
            self._publisher.close()


class Relay(_PublisherView):
    """One node's relay: receives every version over torch.distributed, republishes it into ``local``.

    ``config``: the ``"torch_distributed"`` SyncConfig of the learner's :class:`RelaySource`.
    ``local``: where the node's rollout processes find the weights (``"shm"``, or ``"inprocess"``
    for threads of this process); its ``publish_dtype`` is ignored (the relay republishes what it
    received, in the published dtypes). Construct it on every non-source rank at the same time as
    the RelaySource; then :meth:`run` (or :meth:`start` for a thread) until the source closes.
    """

    def __init__(self, config: SyncConfig, local: SyncConfig) -> None:
        self.config = _check(config, "config")
        if not isinstance(local, SyncConfig):
            raise TypeError(f"local: expected a SyncConfig, got {type(local).__name__}")
        if local.transport == "torch_distributed":
            raise ValueError("local.transport: expected a node-local transport ('shm' or 'inprocess'), "
                             "got 'torch_distributed'")
        dist, self._device = _world()
        self._dist = dist
        if dist.get_rank() == config.src_rank:
            raise ValueError(f"src_rank: rank {config.src_rank} is the learner's; a Relay runs on the other ranks")
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=config.src_rank)
        self.specs = parse_layout_text(box[0])
        # The relay's own copy of a version, in the published dtypes: the network writes into it,
        # the node's publisher reads from it.
        self.buffers = {s["name"]: torch.zeros(s["shape"], dtype=DTYPES[s["dtype"]]) for s in self.specs}
        self._subscriber = Subscriber(self.buffers, config)
        try:
            self._publisher = Publisher(self.buffers, local.replace(publish_dtype=None))
        except BaseException:
            self._subscriber.close()
            raise
        self.bytes_per_version: dict[int, int] = {}
        self.republish_s: list[float] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """Where the node's rollout processes subscribe (the shm segment name)."""
        return self._publisher.address

    def step(self) -> int | None:
        """Relays one version: waits for the source's next message; the version, or None on STOP."""
        tensor = torch.zeros(2, dtype=torch.int64, device=self._device)
        self._dist.broadcast(tensor, src=self.config.src_rank)
        command, version = (int(v) for v in tensor.cpu().tolist())
        if command == STOP:
            return None
        before = self._subscriber.bytes_transferred or 0
        got = self._subscriber.pull(min_version=version)
        self.bytes_per_version[got] = (self._subscriber.bytes_transferred or 0) - before
        started = time.perf_counter()
        self._publisher.publish(version=got)
        self.republish_s.append(time.perf_counter() - started)
        self._first.set()
        return got

    def run(self) -> None:
        """Relays versions until the source closes, then closes the node's segment.

        A failed collective (the learner died) is kept in :attr:`error` and the segment is
        closed as well, so the node's rollouts get PeerLost.
        """
        try:
            while self.step() is not None:
                pass
        except BaseException as error:   # kept for the owner; the node's readers see PeerLost
            self.error = error
        finally:
            self._first.set()
            self.close()

    def start(self) -> "Relay":
        """Runs :meth:`run` in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.run, name="relay", daemon=True)
        self._thread.start()
        return self

    def wait_first(self, timeout_s: float) -> int:
        """Waits until the first version is republished on this node; returns its number."""
        if not self._first.wait(timeout_s):
            raise TimeoutError(f"relay: no version arrived within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"relay: failed before its first version: {self.error!r}") from self.error
        return self.latest_version

    def join(self, timeout_s: float | None = None) -> None:
        """Waits for the thread started by :meth:`start` to end."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        """Versions relayed, the bytes received per version, one version's size and the republish seconds."""
        return {"versions": len(self.bytes_per_version), "nbytes": self.nbytes,
                "bytes_per_version": dict(self.bytes_per_version),
                "bytes_received": sum(self.bytes_per_version.values()),
                "republish_s": list(self.republish_s), "error": None if self.error is None else repr(self.error)}

    def close(self) -> None:
        """Closes the node's segment (its readers get PeerLost) and the network subscriber; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._publisher.close()
        finally:
            self._subscriber.close()
