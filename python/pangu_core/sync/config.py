"""Weight-sync settings (SyncConfig) and the SSP freshness arithmetic (required_version)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pangu_core import _core
from pangu_core.config import Config, expect, expect_name, is_number
from pangu_core.sync.registry import transports
from pangu_core.tensors import FLOAT_DTYPE_NAMES


def required_version(clock: int, staleness: int) -> int:
    """Oldest weight version a reader at ``clock`` may use under bound ``staleness``: clock - s - 1.

    Pure arithmetic (the SSP freshness invariant): a reader at clock c sees every update through
    c - s - 1. Negative results mean any version (even the initial weights) is fresh enough.
    """
    for value, name in ((clock, "clock"), (staleness, "staleness")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if staleness < 0:
        raise ValueError(f"staleness: expected >= 0, got {staleness}")
    return int(_core.sync.required_version(clock, staleness))


def _is_channel_name(value: object) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii()
            and all(c.isalnum() or c in "_-" for c in value))


@dataclass(frozen=True)
class SyncConfig(Config):
    """How weights travel from the learner to rollout workers (checked on construction)."""

    # Registry name of the transport: "inprocess", "shm", "torch_distributed" or a registered one.
    transport: str = "shm"
    # Channel name shared by the publisher and its subscribers ([A-Za-z0-9_-], at most 64 characters).
    name: str = "weights"
    # Shared-memory name prefix; segments are "/<prefix>.<pid>.<start>.<name>" (same characters).
    prefix: str = "pangu"
    # Versions the ring keeps (2..255); readers may pin all but the newest.
    slots: int = 3
    # Dtype of the published copy of float tensors ("bfloat16", "float16", "float32"), or None to
    # keep each tensor's own dtype. Non-float tensors are never cast.
    publish_dtype: str | None = "bfloat16"
    # Bucket size in MiB: the unit of a torch.distributed broadcast.
    bucket_mb: float = 64.0
    # Seconds a publish or pull waits (for a free slot, for a fresh version) before TimeoutError;
    # torch.distributed waits use the process group's own timeout instead.
    timeout_s: float = 60.0
    # The SSP bound s used by Subscriber.pull when a clock is attached (iterations).
    staleness: int = 1
    # torch.distributed only: send only the buckets that changed since the last send.
    changed_only: bool = False
    # torch.distributed only: the learner's rank.
    src_rank: int = 0

    def validate(self) -> list[str]:
        # Fields of the wrong type are reported by the type check; the rules skip them (is_number).
        problems: list[str] = []
        expect_name(problems, "transport", self.transport, transports(), "transport")
        for field in ("name", "prefix"):
            value = getattr(self, field)
            expect(problems, _is_channel_name(value), field, "1-64 characters of [A-Za-z0-9_-]", value)
        expect(problems, is_number(self.slots) and 2 <= self.slots <= 255, "slots", "an int in 2..255", self.slots)
        expect(problems, self.publish_dtype is None or self.publish_dtype in FLOAT_DTYPE_NAMES, "publish_dtype",
               f"None or one of {', '.join(FLOAT_DTYPE_NAMES)}", self.publish_dtype)
        for field in ("bucket_mb", "timeout_s"):
            value = getattr(self, field)
            ok = is_number(value) and math.isfinite(value) and value > 0
            expect(problems, ok, field, "a finite number > 0", value)
        expect(problems, is_number(self.staleness) and self.staleness >= 0, "staleness", "an int >= 0", self.staleness)
        expect(problems, is_number(self.src_rank) and self.src_rank >= 0, "src_rank", "an int >= 0", self.src_rank)
        return problems

    @property
    def bucket_bytes(self) -> int:
        """The bucket size in bytes (at least 1)."""
        return max(1, int(self.bucket_mb * (1 << 20)))


__all__ = ["SyncConfig", "required_version"]
