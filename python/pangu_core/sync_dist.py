"""Weight-sync transport over torch.distributed: "torch_distributed" (gloo, NCCL, HCCL).

The learner (``config.src_rank``) flattens a version into contiguous buckets in C++ and broadcasts
them bucket by bucket to the rollout ranks, which unflatten straight into their models. Every
publish is a sync point that all ranks enter (the publisher in :meth:`Publisher.publish`, each
rollout rank in :meth:`Subscriber.pull`), and it is gated by the SSP clock: ranks first agree
(one all-reduce of 8 bytes) whether anyone needs a newer version than it holds (``min_version``,
usually ``required_version(clock, s)``); only then do the buckets travel. With
``config.changed_only`` only the buckets whose bytes changed since the last send are broadcast.

Buckets are staged in CPU memory; for NCCL (CUDA) and HCCL (Ascend) each bucket passes through a
device buffer of one bucket's size. Waits use the process group's own timeout.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pangu_core import _core
from pangu_core.sync import SyncConfig, flat_layout, parse_layout_text, register_transport

_sync = _core.sync


def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("transport 'torch_distributed': call torch.distributed.init_process_group first")
    return dist


def _comm_device(dist: Any) -> torch.device:
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    if "hccl" in backend:
        return torch.device("npu", torch.npu.current_device())  # type: ignore[attr-defined]
    return torch.device("cpu")


class _Buckets:
    """Moves buckets of a flat CPU buffer through the process group.

    On CPU (gloo) every bucket is an asynchronous broadcast, so several are in flight at once and
    the sender flattens bucket b+1 while bucket b travels; the receiver unflattens each bucket as
    soon as it lands. On accelerators each bucket passes through one device staging buffer.
    """

    def __init__(self, dist: Any, layout: Any, src: int) -> None:
        self.dist, self.layout, self.src = dist, layout, src
        self.device = _comm_device(dist)
        largest = max((layout.bucket_bytes(b) for b in range(layout.num_buckets)), default=0)
        self.stage = None if self.device.type == "cpu" else torch.empty(largest, dtype=torch.uint8, device=self.device)

    def _view(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        offset = self.layout.bucket_offset(b)
        return flat[offset:offset + self.layout.bucket_bytes(b)]

    def send(self, flat: torch.Tensor, buckets: list[int], fill: Callable[[int], None] | None = None) -> None:
        """Broadcasts ``buckets`` of ``flat`` from the source; ``fill(b)`` writes bucket b first."""
        if self.stage is not None:
            for b in buckets:
                if fill is not None:
                    fill(b)
                stage = self.stage[:self.layout.bucket_bytes(b)]
                stage.copy_(self._view(flat, b))
                self.dist.broadcast(stage, src=self.src)
            return
        works = []
        for b in buckets:
            if fill is not None:
                fill(b)
            works.append(self.dist.broadcast(self._view(flat, b), src=self.src, async_op=True))
        for work in works:
            work.wait()

    def receive(self, flat: torch.Tensor, buckets: list[int], landed: Callable[[int], None]) -> None:
        """Receives ``buckets`` into ``flat``, calling ``landed(b)`` as each one completes."""
        if self.stage is not None:
            for b in buckets:
                stage = self.stage[:self.layout.bucket_bytes(b)]
                self.dist.broadcast(stage, src=self.src)
                self._view(flat, b).copy_(stage)
                landed(b)
            return
        works = [self.dist.broadcast(self._view(flat, b), src=self.src, async_op=True) for b in buckets]
        for b, work in zip(buckets, works):
            work.wait()
            landed(b)


def _control(dist: Any, values: list[int], src: int, device: torch.device) -> list[int]:
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=src)
    return tensor.cpu().tolist()


def _need(dist: Any, flag: int, device: torch.device) -> bool:
    tensor = torch.tensor([flag], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class DistPublisherEndpoint:
    def __init__(self, config: SyncConfig, layout: Any, layout_text: str) -> None:
        dist = self._dist = _dist()
        if dist.get_rank() != config.src_rank:
            raise ValueError(
                f"src_rank: a Publisher runs on the learner's rank {config.src_rank}, this is rank {dist.get_rank()}"
            )
        self.config, self.layout = config, layout
        self.address = f"rank{config.src_rank}"
        self._buckets = _Buckets(dist, layout, config.src_rank)
        pin = self._buckets.device.type != "cpu"
        # Zero-filled: the alignment gaps between tensors are never written and must compare equal.
        self._staging = torch.zeros(layout.total_bytes, dtype=torch.uint8, pin_memory=pin)
        self._sent = torch.zeros_like(self._staging) if config.changed_only else None
        self._sent_any = False
        self._version = -1
        dist.broadcast_object_list([{"layout": layout_text, "bucket_bytes": config.bucket_bytes}], src=config.src_rank)

    def publish(self, tensors: list, version: int) -> int:
        if version < 0:
            version = self._version + 1
        if version <= self._version:
            raise ValueError(f"version: expected > {self._version} (the newest published), got {version}")
        self._version = version
        self._sync_point(tensors)
        return version

    def _sync_point(self, tensors: list) -> None:
        dist, device = self._dist, self._buckets.device
        n = self.layout.num_buckets
        if self._sent is not None:
            # Changed-only sends compare whole versions, so flatten first (skipped sends included:
            # the next comparison is against what was last sent, not last published).
            _sync.flatten(self.layout, tensors, self._staging)
        if not _need(dist, 0, device):
            return
        if self._sent is not None and self._sent_any:
            mask = [int(c) for c in _sync.changed_buckets(self.layout, self._staging, self._sent)]
        else:
            mask = [1] * n
        _control(dist, [self._version, *mask], self.config.src_rank, device)
        buckets = [b for b in range(n) if mask[b]]
        if self._sent is not None:
            self._buckets.send(self._staging, buckets)
        else:
            self._buckets.send(self._staging, buckets, lambda b: _sync.flatten(self.layout, tensors, self._staging, [b]))
        if self._sent is not None:
            self._staging, self._sent = self._sent, self._staging
            self._sent_any = True
            # The next flatten overwrites every byte of the new staging buffer, so no copy here.

    def latest_version(self) -> int:
        return self._version

    def versions(self) -> list[int]:
        return [self._version] if self._version >= 0 else []

    def close(self) -> None:
        self._staging = self._sent = None  # type: ignore[assignment]


class DistSubscriberEndpoint:
    def __init__(self, config: SyncConfig, address: str | None) -> None:
        dist = self._dist = _dist()
        if dist.get_rank() == config.src_rank:
            raise ValueError(f"src_rank: rank {config.src_rank} is the publisher's; a Subscriber runs on the other ranks")
        self.config = config
        self.address = f"rank{config.src_rank}"
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=config.src_rank)
        self.layout_text = box[0]["layout"]
        self.layout = flat_layout(parse_layout_text(self.layout_text), int(box[0]["bucket_bytes"]))
        self._buckets = _Buckets(dist, self.layout, config.src_rank)
        self._flat = torch.zeros(self.layout.total_bytes, dtype=torch.uint8)
        self._version = -1

    def pull(self, tensors: list, version: int, min_version: int, timeout_s: float) -> int:
        dist, device = self._dist, self._buckets.device
        if version >= 0:
            flag = int(self._version != version)
        else:
            flag = int(min_version < 0 or self._version < min_version)
        if _need(dist, flag, device):
            n = self.layout.num_buckets
            header = _control(dist, [0] * (n + 1), self.config.src_rank, device)
            changed = [b for b in range(n) if header[1 + b]]
            self._buckets.receive(self._flat, changed, lambda b: _sync.unflatten(self.layout, self._flat, tensors, [b]))
            self._version = header[0]
        if version >= 0 and self._version != version:
            raise KeyError(f"version: {version} is not available from the publisher (its newest is {self._version})")
        if self._version < min_version:
            raise RuntimeError(
                f"min_version: the publisher's newest version {self._version} is older than the required {min_version}"
            )
        return self._version

    def latest_version(self) -> int:
        return self._version

    def versions(self) -> list[int]:
        return [self._version] if self._version >= 0 else []

    def close(self) -> None:
        self._flat = None  # type: ignore[assignment]


@register_transport("torch_distributed")
class TorchDistributedTransport:
    """Ranks of the default torch.distributed process group; the learner is ``config.src_rank``."""

    @classmethod
    def open_publisher(cls, config: SyncConfig, layout: Any, layout_text: str) -> DistPublisherEndpoint:
        return DistPublisherEndpoint(config, layout, layout_text)

    @classmethod
    def open_subscriber(cls, config: SyncConfig, address: str | None) -> DistSubscriberEndpoint:
        return DistSubscriberEndpoint(config, address)
