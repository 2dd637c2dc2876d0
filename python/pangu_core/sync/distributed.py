"""Weight-sync transport over torch.distributed: "torch_distributed" (gloo, NCCL, HCCL).

The learner (``config.src_rank``) flattens a version into contiguous buckets in C++ and broadcasts
them bucket by bucket to the rollout ranks, which unflatten straight into their models. Every
publish is a sync point that all ranks enter (the publisher in :meth:`Publisher.publish`, each
rollout rank in :meth:`Subscriber.pull`), and it is gated by the SSP clock: ranks first agree
(one all-reduce of 8 bytes) whether anyone needs a newer version than it holds (``min_version``,
usually ``required_version(clock, s)``); only then do the buckets travel. With
``config.changed_only`` only the buckets whose bytes changed since the last send are broadcast.

Buckets are staged in CPU memory; for NCCL (CUDA) and HCCL (Ascend) each bucket passes through a
device buffer of one bucket's size. Models on an accelerator reach this transport through the
host buffers of the Publisher and Subscriber (so with gloo, too, CUDA models sync). Waits use the
process group's own timeout.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pangu_core import _core
from pangu_core.sync.config import SyncConfig
from pangu_core.sync.layout import flat_layout, parse_layout_text
from pangu_core.sync.registry import register_transport
from pangu_core.tensors import DTYPES

_sync = _core.sync
_STREAMS = 2  # gloo connections a version is striped over (more only add contention here)


def _dist(who: str = "transport 'torch_distributed'") -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{who}: call torch.distributed.init_process_group first")
    return dist


def _comm_device(dist: Any) -> torch.device:
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    if "hccl" in backend:
        return torch.device("npu", torch.npu.current_device())  # type: ignore[attr-defined]
    return torch.device("cpu")


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 tensor (no copy)."""
    return tensor.reshape(-1).view(torch.uint8)


class _Buckets:
    """Moves the buckets of a version through the process group.

    A bucket that holds one tensor travels straight from the learner's tensor (when no cast is
    needed) into the rollout rank's parameter: no flatten, no unflatten. Buckets of several small
    tensors are coalesced in a flat CPU buffer. On CPU (gloo) every bucket is an asynchronous
    broadcast, striped over ``_STREAMS`` process groups by queued bytes (own connections), so several
    are in flight while the sender prepares the next and the receiver unflattens the ones that
    landed. Every rank builds its groups at the same point (after the layout broadcast). On
    accelerators each bucket passes through one device buffer.
    """

    def __init__(self, dist: Any, layout: Any, src: int) -> None:
        self.dist, self.layout, self.src = dist, layout, src
        self.device = _comm_device(dist)
        self.members: list[list[int]] = [[] for _ in range(layout.num_buckets)]
        entries = layout.entries()
        for i, entry in enumerate(entries):
            self.members[entry[5]].append(i)
        # A single-tensor bucket carries exactly the tensor's bytes, so either end may use the
        # tensor itself or the flat buffer without the other knowing.
        self.sizes = [entries[m[0]][4] if len(m) == 1 else layout.bucket_bytes(b) for b, m in enumerate(self.members)]
        largest = max(self.sizes, default=0)
        self.stage = None if self.device.type == "cpu" else torch.empty(largest, dtype=torch.uint8, device=self.device)
        # Separate gloo groups are separate connections and worker threads: buckets striped over
        # them travel in parallel instead of queueing behind one another on one socket.
        streams = _STREAMS if self.device.type == "cpu" else 1
        self.groups = [None] + [dist.new_group(backend="gloo") for _ in range(streams - 1)]

    def flat_view(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        offset = self.layout.bucket_offset(b)
        return flat[offset:offset + self.sizes[b]]

    def single(self, b: int) -> int | None:
        """The tensor index of a one-tensor bucket, else None."""
        return self.members[b][0] if len(self.members[b]) == 1 else None

    def send(self, buckets: list[int], view_of: Callable[[int], torch.Tensor]) -> None:
        """Broadcasts ``buckets`` from the source; ``view_of(b)`` prepares and returns its bytes."""
        buckets = [b for b in buckets if self.sizes[b] > 0]
        if self.stage is not None:
            for b in buckets:
                stage = self.stage[:self.sizes[b]]
                stage.copy_(view_of(b))
                self.dist.broadcast(stage, src=self.src)
            return
        lanes = self._lanes(buckets)
        works = [self._start(view_of(b), lane) for b, lane in zip(buckets, lanes)]
        for work in works:
            work.wait()

    def _lanes(self, buckets: list[int]) -> list[int]:
        """The group of each bucket: the one with the fewest bytes queued so far (same on every rank)."""
        queued = [0] * len(self.groups)
        lanes = []
        for b in buckets:
            lane = queued.index(min(queued))
            queued[lane] += self.sizes[b]
            lanes.append(lane)
        return lanes

    def _start(self, tensor: torch.Tensor, lane: int) -> Any:
        return self.dist.broadcast(tensor, src=self.src, group=self.groups[lane], async_op=True)

    def receive(self, buckets: list[int], view_of: Callable[[int], torch.Tensor], landed: Callable[[int], None]) -> None:
        """Receives ``buckets`` into ``view_of(b)``, calling ``landed(b)`` as each one completes."""
        buckets = [b for b in buckets if self.sizes[b] > 0]
        if self.stage is not None:
            for b in buckets:
                stage = self.stage[:self.sizes[b]]
                self.dist.broadcast(stage, src=self.src)
                view_of(b).copy_(stage)
                landed(b)
            return
        lanes = self._lanes(buckets)
        works = [self._start(view_of(b), lane) for b, lane in zip(buckets, lanes)]
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
    """The learner rank's end: broadcasts the layout once, then each needed version bucket by bucket."""

    def __init__(self, config: SyncConfig, layout: Any, layout_text: str) -> None:
        dist = self._dist = _dist()
        if dist.get_rank() != config.src_rank:
            raise ValueError(
                f"src_rank: a Publisher runs on the learner's rank {config.src_rank}, this is rank {dist.get_rank()}"
            )
        self.config, self.layout = config, layout
        self.address = f"rank{config.src_rank}"
        pin = _comm_device(dist).type != "cpu"
        # Zero-filled: the alignment gaps between tensors are never written and must compare equal.
        self._staging = torch.zeros(layout.total_bytes, dtype=torch.uint8, pin_memory=pin)
        self._sent = torch.zeros_like(self._staging) if config.changed_only else None
        self._sent_any = False
        self._version = -1
        # Bytes of buckets broadcast so far (each broadcast counted once, whatever the receivers).
        self.bytes_transferred = 0
        self._stored = [DTYPES[entry[1]] for entry in layout.entries()]
        dist.broadcast_object_list([{"layout": layout_text, "bucket_bytes": config.bucket_bytes}], src=config.src_rank)
        # After the layout broadcast: subscribers build theirs (and its process groups) only then.
        self._buckets = _Buckets(dist, layout, config.src_rank)

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
        self.bytes_transferred += sum(self._buckets.sizes[b] for b in buckets)
        if self._sent is not None:
            self._buckets.send(buckets, lambda b: self._buckets.flat_view(self._staging, b))
        else:
            self._buckets.send(buckets, lambda b: self._prepare(tensors, b))
        if self._sent is not None:
            self._staging, self._sent = self._sent, self._staging
            self._sent_any = True
            # The next flatten overwrites every byte of the new staging buffer, so no copy here.

    def _prepare(self, tensors: list, b: int) -> torch.Tensor:
        single = self._buckets.single(b)
        if single is not None and self._stored[single] == tensors[single].dtype:
            return _bytes_of(tensors[single])  # sent in place: no copy
        _sync.flatten(self.layout, tensors, self._staging, [b])
        return self._buckets.flat_view(self._staging, b)

    def latest_version(self) -> int:
        return self._version

    def versions(self) -> list[int]:
        return [self._version] if self._version >= 0 else []

    def close(self) -> None:
        self._staging = self._sent = None  # type: ignore[assignment]


class DistSubscriberEndpoint:
    """A rollout rank's end: receives the layout, then the buckets of each version it (or any rank) needs."""

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
        # Bytes of buckets received so far (what crossed the network into this rank).
        self.bytes_transferred = 0

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
            buckets = self._buckets

            def view_of(b: int) -> torch.Tensor:
                single = buckets.single(b)
                # Subscriber targets match the published dtype and are contiguous (checked at
                # construction), so a one-tensor bucket lands directly in the parameter.
                return _bytes_of(tensors[single]) if single is not None else buckets.flat_view(self._flat, b)

            def landed(b: int) -> None:
                if buckets.single(b) is None:
                    _sync.unflatten(self.layout, self._flat, tensors, [b])

            buckets.receive(changed, view_of, landed)
            self.bytes_transferred += sum(buckets.sizes[b] for b in changed)
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
