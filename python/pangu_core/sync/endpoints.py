"""The two ends of a weight-sync channel: the learner's Publisher and a rollout worker's Subscriber.

Both take a ``torch.nn.Module`` or a mapping of name -> tensor. The transport (chosen by
``SyncConfig.transport``) moves bytes between CPU tensors; tensors on an accelerator (CUDA, NPU)
are staged through host buffers that each end allocates once, pinned for CUDA: the publisher copies
(and casts to the published dtype) device -> host before each publication, the subscriber copies
host -> device after each pull.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pangu_core.sync.clock import SSPClock
from pangu_core.sync.config import SyncConfig, required_version
from pangu_core.sync.layout import check_compatible, describe, flat_layout, layout_text, parse_layout_text, state_of
from pangu_core.sync.registry import get_transport
from pangu_core.tensors import DTYPES


# Tests set this to send CPU tensors through the staging path too (the path device tensors take).
_stage_cpu_tensors = False


def _staged(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` goes through a host buffer (it lives on an accelerator)."""
    return tensor.device.type != "cpu" or _stage_cpu_tensors


def _host_buffer(shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A CPU tensor to stage a tensor of ``device`` through (pinned for CUDA: faster, async-capable copies)."""
    return torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")


def _check_config(config: SyncConfig | None) -> SyncConfig:
    config = config if config is not None else SyncConfig()
    if not isinstance(config, SyncConfig):
        raise TypeError(f"config: expected a SyncConfig, got {type(config).__name__}")
    return config


class Publisher:
    """The learner's end: publishes versions of a model's (or state dict's) weights.

    ``source`` is bound at construction and defines the layout (names, shapes, published dtypes);
    :meth:`publish` flattens its current values. With ``clock`` (an :class:`SSPClock`) each
    publication also advances the clock's learner version, waking readers that wait for it.
    """

    def __init__(self, source: Any, config: SyncConfig | None = None, *, clock: SSPClock | None = None) -> None:
        self.config = _check_config(config)
        if clock is not None and not isinstance(clock, SSPClock):
            raise TypeError(f"clock: expected an SSPClock, got {type(clock).__name__}")
        self._source = source
        self.specs = describe(source, self.config.publish_dtype)
        self._names = [s["name"] for s in self.specs]
        self.layout = flat_layout(self.specs, self.config.bucket_bytes)
        self._clock = clock
        # Host buffers of device tensors, in the published dtype (the cast happens on the device copy).
        self._host: dict[str, torch.Tensor] = {}
        self._endpoint = get_transport(self.config.transport).open_publisher(self.config, self.layout,
                                                                             layout_text(self.specs))

    @property
    def address(self) -> str:
        """Where subscribers find this publisher (shm segment name, in-process channel, rank)."""
        return self._endpoint.address

    @property
    def latest_version(self) -> int:
        """Newest version published so far (-1 before the first)."""
        return self._endpoint.latest_version()

    @property
    def nbytes(self) -> int:
        """Bytes of one published version."""
        return int(self.layout.total_bytes)

    @property
    def bytes_transferred(self) -> int | None:
        """Weight bytes this end has broadcast (each broadcast counted once) over the network so far (torch_distributed); None for the
        transports of one host (inprocess, shm), which move no bytes between machines."""
        value = getattr(self._endpoint, "bytes_transferred", None)
        return None if value is None else int(value)

    def publish(self, source: Any = None, version: int | None = None) -> int:
        """Publishes ``source`` (default: the bound one) as ``version`` (default: latest + 1).

        ``source`` must have the bound layout's names and shapes. Returns the version number.
        """
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise ValueError(f"version: expected None or an int >= 0, got {version!r}")
        state = state_of(self._source if source is None else source, "source")
        if source is not None:
            self._check_same_layout(state)
        published = self._endpoint.publish(self._host_tensors(state), -1 if version is None else version)
        if self._clock is not None:
            self._clock.publish(published)
        return published

    def _host_tensors(self, state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The tensors to flatten, in layout order: CPU ones as they are, device ones copied to host."""
        out = []
        for spec in self.specs:
            tensor = state[spec["name"]].detach()
            if _staged(tensor):
                host = self._host.get(spec["name"])
                if host is None:
                    published = DTYPES[spec["dtype"]]
                    host = self._host[spec["name"]] = _host_buffer(spec["shape"], published, tensor.device)
                host.copy_(tensor)
                tensor = host
            # Non-contiguous sources (rare: transposed views) are copied once per publish.
            out.append(tensor if tensor.is_contiguous() else tensor.contiguous())
        return out

    def _check_same_layout(self, state: Mapping[str, torch.Tensor]) -> None:
        names = set(self._names)
        if set(state) != names:
            missing = sorted(names - set(state))[:8]
            extra = sorted(set(state) - names)[:8]
            raise KeyError(f"source: tensor names differ from the bound model: missing {missing}, unexpected {extra}")
        for spec in self.specs:
            if list(state[spec["name"]].shape) != spec["shape"]:
                got = tuple(state[spec["name"]].shape)
                raise ValueError(f"source[{spec['name']!r}]: expected shape {tuple(spec['shape'])}, got {got}")

    def close(self) -> None:
        """Stops publishing: subscribers get pangu_core.PeerLost; shared segments are removed."""
        self._endpoint.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """A rollout worker's end: pulls published versions into its model's parameters in place.

    The target's names, shapes and dtypes must match the publisher's published layout (errors
    name the first tensor that disagrees). With ``clock`` and ``worker_id``, :meth:`pull` enforces
    the SSP freshness bound: it waits until a version >= clock - s - 1 exists and pulls it.
    ``address`` overrides discovery by name (e.g. :attr:`Publisher.address`).
    """

    def __init__(
        self,
        target: Any,
        config: SyncConfig | None = None,
        *,
        address: str | None = None,
        clock: SSPClock | None = None,
        worker_id: int | None = None,
    ) -> None:
        self.config = _check_config(config)
        if (clock is None) != (worker_id is None):
            raise ValueError("clock, worker_id: expected both or neither")
        if clock is not None and not isinstance(clock, SSPClock):
            raise TypeError(f"clock: expected an SSPClock, got {type(clock).__name__}")
        self._clock, self._worker = clock, worker_id
        state = state_of(target, "target")
        self._endpoint = get_transport(self.config.transport).open_subscriber(self.config, address)
        try:
            self.specs = parse_layout_text(self._endpoint.layout_text)
            check_compatible(self.specs, state, "target")
        except BaseException:
            self._endpoint.close()
            raise
        self._targets = [state[s["name"]].detach() for s in self.specs]
        # What the transport writes into: the targets themselves on CPU, host buffers for device ones.
        self._tensors = [_host_buffer(list(t.shape), t.dtype, t.device) if _staged(t) else t for t in self._targets]
        self.version: int | None = None

    @property
    def latest_version(self) -> int:
        """Newest version published so far (-1 before the first)."""
        return self._endpoint.latest_version()

    def versions(self) -> list[int]:
        """Versions the publisher's ring holds now, oldest first."""
        return self._endpoint.versions()

    @property
    def bytes_transferred(self) -> int | None:
        """Weight bytes this end has received over the network so far (torch_distributed); None for the
        transports of one host (inprocess, shm), which move no bytes between machines."""
        value = getattr(self._endpoint, "bytes_transferred", None)
        return None if value is None else int(value)

    def pull(self, *, version: int | None = None, min_version: int | None = None,
             timeout_s: float | None = None) -> int:
        """Copies a published version into the target in place; returns its number.

        version: exactly this one (KeyError naming the versions held if it is gone or unknown).
        min_version: the newest, waiting until one >= min_version exists (TimeoutError after
        ``timeout_s``, default config.timeout_s). With a clock, min_version is raised to the
        worker's SSP requirement. PeerLost if the publisher closed or died.
        """
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout_s: expected a number > 0, got {timeout_s!r}")
        for value, name in ((version, "version"), (min_version, "min_version")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name}: expected None or an int, got {type(value).__name__}")
        if version is not None and version < 0:
            raise KeyError(f"version: {version} does not exist (versions are >= 0)")
        floor = -1 if min_version is None else min_version
        if self._clock is not None:
            self._clock.wait_version(self._worker, timeout)
            floor = max(floor, required_version(self._clock.clock(self._worker), self._clock.staleness))
        got = self._endpoint.pull(self._tensors, -1 if version is None else version, floor, float(timeout))
        for target, host in zip(self._targets, self._tensors):
            if target is not host:
                target.copy_(host)
        self.version = got
        return got

    def close(self) -> None:
        """Detaches from the publisher (the publisher and other subscribers carry on)."""
        self._endpoint.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Publisher", "Subscriber"]
