"""Weight-sync transports on one host over the C++ versioned weight store: "inprocess" and "shm".

"inprocess" keeps the ring in heap memory shared by the threads of one process (channels by
name). "shm" keeps it in a POSIX shared-memory segment that rollout processes on the same host map
and copy from directly. The owner removes its segment on close, at exit and on fatal signals;
a publisher sweeps the segments of dead runs when it starts; subscribers of a dead publisher get
pangu_core.PeerLost. :func:`sweep`, :func:`list_segments` and :func:`find_segment` look after
the segments.

An endpoint (what ``open_publisher`` / ``open_subscriber`` of any transport return) has
``address``, ``layout_text`` (subscribers), ``publish(tensors, version)`` (publishers),
``pull(tensors, version, min_version, timeout_s)`` (subscribers), ``latest_version()``,
``versions()`` and ``close()``; ``tensors`` are contiguous CPU tensors in layout order.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any

from pangu_core import PeerLost, _core
from pangu_core.sync.config import SyncConfig
from pangu_core.sync.registry import register_transport

_sync = _core.sync


class StoreEndpoint:
    """A publisher's or subscriber's handle on one C++ WeightStore (a ring of ``slots`` versions)."""

    def __init__(self, store: Any, address: str, timeout_s: float, *, owner: bool = False) -> None:
        self._store = store
        self._owner = owner
        self.address = address
        self._timeout = float(timeout_s)

    @property
    def layout_text(self) -> str:
        """The publisher's layout as JSON text (see pangu_core.sync.layout)."""
        return str(self._store.layout_text)

    def publish(self, tensors: list, version: int) -> int:
        return int(self._store.publish(tensors, version, self._timeout))

    def pull(self, tensors: list, version: int, min_version: int, timeout_s: float) -> int:
        return int(self._store.pull(tensors, version, min_version, timeout_s))

    def latest_version(self) -> int:
        return int(self._store.latest_version())

    def versions(self) -> list[int]:
        return list(self._store.versions())

    def pin_count(self, version: int) -> int:
        """How many readers hold ``version`` pinned right now."""
        return int(self._store.pin_count(version))

    def close(self) -> None:
        # In-process subscribers share the publisher's store object: only the publisher closes it.
        if self._owner:
            self._store.close()


# ---- in-process --------------------------------------------------------------------------------

_channels: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
_channels_lock = threading.Lock()


@register_transport("inprocess")
class InProcessTransport:
    """Threads of one process: the ring lives in heap memory, looked up by ``config.name``."""

    @classmethod
    def open_publisher(cls, config: SyncConfig, layout: Any, layout_text: str) -> StoreEndpoint:
        with _channels_lock:
            existing = _channels.get(config.name)
            if existing is not None and not _is_closed(existing):
                raise ValueError(f"name: an in-process channel {config.name!r} already has a live publisher")
            store = _sync.WeightStore.create_heap(layout, config.slots, layout_text)
            _channels[config.name] = store
        return StoreEndpoint(store, config.name, config.timeout_s, owner=True)

    @classmethod
    def open_subscriber(cls, config: SyncConfig, address: str | None) -> StoreEndpoint:
        name = address or config.name
        deadline = time.monotonic() + config.timeout_s
        while True:
            with _channels_lock:
                store = _channels.get(name)
            if store is not None:
                if _is_closed(store):
                    raise PeerLost(f"in-process channel {name!r}: the publisher closed it")
                return StoreEndpoint(store, name, config.timeout_s)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"name: no in-process publisher {name!r} appeared within {config.timeout_s} s")
            time.sleep(0.01)


def _is_closed(store: Any) -> bool:
    try:
        store.latest_version()
    except PeerLost:
        return True
    return False


# ---- shared memory -----------------------------------------------------------------------------

_owned: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _close_owned_at_exit() -> None:
    for store in list(_owned):
        store.close()


atexit.register(_close_owned_at_exit)


@register_transport("shm")
class SharedMemoryTransport:
    """Processes on one host: the ring lives in /dev/shm/<prefix>.<pid>.<start>.<name>."""

    @classmethod
    def open_publisher(cls, config: SyncConfig, layout: Any, layout_text: str) -> StoreEndpoint:
        _sync.sweep_dead_segments(config.prefix)
        _sync.install_cleanup_handlers()
        name = _sync.segment_name(config.prefix, config.name)
        store = _sync.WeightStore.create_shared(name, layout, config.slots, layout_text)
        _owned.add(store)
        return StoreEndpoint(store, name, config.timeout_s, owner=True)

    @classmethod
    def open_subscriber(cls, config: SyncConfig, address: str | None) -> StoreEndpoint:
        deadline = time.monotonic() + config.timeout_s
        while True:
            name = address or find_segment(config.prefix, config.name)
            if name is not None:
                return StoreEndpoint(_sync.WeightStore.open_shared(name), name, config.timeout_s)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"name: no live publisher {config.name!r} under prefix {config.prefix!r} appeared within "
                    f"{config.timeout_s} s"
                )
            time.sleep(0.01)


def find_segment(prefix: str, channel: str) -> str | None:
    """The segment of the live publisher of ``channel``, or None if none exists yet.

    Raises PeerLost when only segments of dead publishers exist (the publisher crashed), and
    ValueError when several live publishers use the same channel name.
    """
    live, dead = [], []
    for name in _sync.list_segments(prefix):
        parts = _sync.parse_segment_name(name)
        if parts is None or parts[0] != prefix or parts[3] != channel:
            continue
        (live if _sync.process_alive(parts[1], parts[2]) else dead).append((name, parts[1]))
    if len(live) > 1:
        raise ValueError(f"name: {len(live)} live publishers use channel {channel!r}: {[n for n, _ in live]}")
    if live:
        return live[0][0]
    if dead:
        raise PeerLost(f"channel {channel!r}: its publisher (pid {dead[0][1]}) died; run sync.sweep() to remove {dead[0][0]}")
    return None


def sweep(prefix: str = "pangu") -> list[str]:
    """Removes the shared-memory segments of dead runs under ``prefix``; returns their names."""
    return list(_sync.sweep_dead_segments(prefix))


def list_segments(prefix: str = "pangu") -> list[str]:
    """Shared-memory segments in /dev/shm under ``prefix`` (live or not)."""
    return list(_sync.list_segments(prefix))


__all__ = ["InProcessTransport", "SharedMemoryTransport", "StoreEndpoint", "sweep", "list_segments", "find_segment"]
