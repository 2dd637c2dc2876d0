"""Staleness-bounded weight sync for the latency-tolerant RL scheduler (stale synchronous parallel).

The learner publishes versions of its weights; rollout workers pull a version that is at most
``staleness`` behind their clock straight into their own model's parameters (in place). Three
transports sit in a registry: ``"inprocess"`` (threads of one process), ``"shm"`` (processes on
one host, POSIX shared memory) and ``"torch_distributed"`` (ranks of a process group: gloo on
CPU, NCCL on CUDA, HCCL on Ascend). The copies, the version ring and the clock are C++.

Example::

    config = SyncConfig(transport="shm", name="policy", publish_dtype="bfloat16")
    publisher = Publisher(learner_model, config)          # learner process
    version = publisher.publish()                          # after each optimiser step
    subscriber = Subscriber(rollout_model, config)         # each rollout process
    subscriber.pull(min_version=required_version(clock, config.staleness))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from pangu_core import _core
from pangu_core.config import FromMapping
from pangu_core.tensors import check_tensor

_sync = _core.sync

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
    return int(_sync.required_version(clock, staleness))


# ---- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncConfig(FromMapping):
    """How weights travel from the learner to rollout workers. Validates itself on construction.

    transport: registry name ("inprocess", "shm", "torch_distributed"; see :func:`transports`).
    name: channel name shared by the publisher and its subscribers ([A-Za-z0-9_-], <= 64 chars).
    prefix: shared-memory name prefix; segments are "/<prefix>.<pid>.<start>.<name>".
    slots: versions the ring keeps (K >= 2); readers may pin all but the newest.
    publish_dtype: dtype of the published copy ("bfloat16", "float16", "float32"), or None to keep
        each tensor's own dtype. Float tensors are cast on publication; others are never cast.
    bucket_mb: bucket size in MiB: the unit of a torch.distributed broadcast.
    timeout_s: how long a publish or pull waits (for a free slot, for a fresh version) before
        TimeoutError. torch.distributed waits use the process group's own timeout instead.
    staleness: the SSP bound s used by :meth:`Subscriber.pull` when a clock is attached.
    changed_only: torch.distributed only: send only the buckets that changed since the last send.
    src_rank: torch.distributed only: the learner's rank.
    """

    transport: str = "shm"
    name: str = "weights"
    prefix: str = "pangu"
    slots: int = 3
    publish_dtype: str | None = "bfloat16"
    bucket_mb: float = 64.0
    timeout_s: float = 60.0
    staleness: int = 1
    changed_only: bool = False
    src_rank: int = 0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("SyncConfig: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem with this config (empty when valid)."""
        out = []

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.transport, str) or self.transport not in transports():
            out.append(f"transport: expected one of {', '.join(transports())}, got {self.transport!r}")
        for field_name in ("name", "prefix"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value or len(value) > 64 or not all(
                c.isalnum() or c in "_-" for c in value
            ) or not value.isascii():
                out.append(f"{field_name}: expected 1-64 characters of [A-Za-z0-9_-], got {value!r}")
        if not is_int(self.slots) or not 2 <= self.slots <= 255:
            out.append(f"slots: expected an int in 2..255, got {self.slots!r}")
        if self.publish_dtype is not None and self.publish_dtype not in _DTYPES:
            out.append(f"publish_dtype: expected None or one of {', '.join(_DTYPES)}, got {self.publish_dtype!r}")
        if isinstance(self.bucket_mb, bool) or not isinstance(self.bucket_mb, (int, float)) or not self.bucket_mb > 0:
            out.append(f"bucket_mb: expected a number > 0, got {self.bucket_mb!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            out.append(f"timeout_s: expected a number > 0, got {self.timeout_s!r}")
        if not is_int(self.staleness) or self.staleness < 0:
            out.append(f"staleness: expected an int >= 0, got {self.staleness!r}")
        if not isinstance(self.changed_only, bool):
            out.append(f"changed_only: expected a bool, got {self.changed_only!r}")
        if not is_int(self.src_rank) or self.src_rank < 0:
            out.append(f"src_rank: expected an int >= 0, got {self.src_rank!r}")
        return out

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * (1 << 20)))


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- transports registry --------------------------------------------------------------------

_TRANSPORTS: dict[str, Callable[[], Any]] = {}


def register_transport(name: str) -> Callable[[Any], Any]:
    """Class decorator: makes a transport available as ``SyncConfig(transport=name)``.

    A transport class has ``open_publisher(config, layout, layout_text)`` and
    ``open_subscriber(config, address)`` classmethods returning endpoints (see sync_transports.py).
    """

    def wrap(cls: Any) -> Any:
        _TRANSPORTS[name] = cls
        return cls

    return wrap


def transports() -> list[str]:
    """Names of the registered transports."""
    _load_builtin_transports()
    return sorted(_TRANSPORTS)


def get_transport(name: str) -> Any:
    """The transport class registered as ``name``; ValueError listing the known ones otherwise."""
    _load_builtin_transports()
    if name not in _TRANSPORTS:
        raise ValueError(f"transport: unknown {name!r}; known: {', '.join(sorted(_TRANSPORTS))}")
    return _TRANSPORTS[name]


def _load_builtin_transports() -> None:
    import pangu_core.sync_dist  # noqa: F401  (registers "torch_distributed")
    import pangu_core.sync_transports  # noqa: F401  (registers "inprocess" and "shm")


# ---- layouts --------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _state_of(source: Any, arg: str) -> dict[str, torch.Tensor]:
    if isinstance(source, torch.nn.Module):
        state = source.state_dict(keep_vars=False)
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        raise TypeError(f"{arg}: expected a torch.nn.Module or a mapping of name -> tensor, got {type(source).__name__}")
    if not state:
        raise ValueError(f"{arg}: expected at least one tensor, got an empty state dict")
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise TypeError(f"{arg}: expected string keys, got {name!r}")
        check_tensor(tensor, f"{arg}[{name!r}]")
    return state


def _layout_text(specs: list[dict[str, Any]]) -> str:
    return json.dumps({"format": 1, "tensors": specs}, separators=(",", ":"))


def describe(source: Any, publish_dtype: str | None = None, *, arg: str = "source") -> list[dict[str, Any]]:
    """The published layout of a model or state dict: [{"name", "shape", "dtype"}] in order.

    ``dtype`` is the published dtype (``publish_dtype`` for float tensors when given).
    """
    state = _state_of(source, arg)
    target = _DTYPES[publish_dtype] if publish_dtype is not None else None
    specs = []
    for name, tensor in state.items():
        dtype = target if target is not None and tensor.dtype in _FLOAT_DTYPES else tensor.dtype
        specs.append({"name": name, "shape": list(tensor.shape), "dtype": _dtype_name(dtype)})
    return specs


def check_compatible(published: list[dict[str, Any]], state: Mapping[str, torch.Tensor], arg: str = "target") -> None:
    """Raises a clear error when ``state`` cannot receive the ``published`` layout.

    KeyError names missing or unexpected tensors; ValueError a shape; TypeError a dtype.
    """
    names = [spec["name"] for spec in published]
    missing = [n for n in names if n not in state]
    extra = [n for n in state if n not in set(names)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        raise KeyError(f"{arg}: tensor names disagree with the publisher's model: " + ", ".join(parts))
    for spec in published:
        tensor = state[spec["name"]]
        if list(tensor.shape) != list(spec["shape"]):
            raise ValueError(
                f"{arg}[{spec['name']!r}]: expected shape {tuple(spec['shape'])} like the publisher, got {tuple(tensor.shape)}"
            )
        if _dtype_name(tensor.dtype) != spec["dtype"]:
            raise TypeError(f"{arg}[{spec['name']!r}]: expected {spec['dtype']} like the publisher, got {_dtype_name(tensor.dtype)}")
        if tensor.device.type != "cpu":
            raise ValueError(f"{arg}[{spec['name']!r}]: expected a CPU tensor, got one on {tensor.device}")
        if not tensor.is_contiguous():
            raise ValueError(f"{arg}[{spec['name']!r}]: expected a contiguous tensor to write in place")


def flat_layout(specs: list[dict[str, Any]], bucket_bytes: int) -> Any:
    """The C++ FlatLayout (offsets, buckets) of a described layout."""
    numels = []
    for spec in specs:
        n = 1
        for d in spec["shape"]:
            n *= int(d)
        numels.append(n)
    return _sync.FlatLayout([s["name"] for s in specs], [s["dtype"] for s in specs], numels, bucket_bytes)


def parse_layout_text(text: str) -> list[dict[str, Any]]:
    doc = json.loads(text)
    return list(doc["tensors"])


def _source_tensors(state: dict[str, torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    # Non-contiguous sources (rare: transposed views) are copied once per publish.
    return [t if t.is_contiguous() else t.contiguous() for t in (state[n].detach() for n in names)]


# ---- publisher / subscriber -----------------------------------------------------------------


class Publisher:
    """The learner's end: publishes versions of a model's (or state dict's) weights.

    ``source`` is bound at construction and defines the layout (names, shapes, published dtypes);
    :meth:`publish` flattens its current values. With ``clock`` (an :class:`SSPClock`) each
    publication also advances the clock's learner version, waking readers that wait for it.
    """

    def __init__(self, source: Any, config: SyncConfig | None = None, *, clock: "SSPClock | None" = None) -> None:
        self.config = config if config is not None else SyncConfig()
        if not isinstance(self.config, SyncConfig):
            raise TypeError(f"config: expected a SyncConfig, got {type(self.config).__name__}")
        if clock is not None and not isinstance(clock, SSPClock):
            raise TypeError(f"clock: expected an SSPClock, got {type(clock).__name__}")
        self._source = source
        self.specs = describe(source, self.config.publish_dtype)
        self._names = [s["name"] for s in self.specs]
        self.layout = flat_layout(self.specs, self.config.bucket_bytes)
        self._clock = clock
        self._endpoint = get_transport(self.config.transport).open_publisher(self.config, self.layout, _layout_text(self.specs))

    @property
    def address(self) -> str:
        """Where subscribers find this publisher (shm segment name, in-process channel, rank)."""
        return self._endpoint.address

    @property
    def latest_version(self) -> int:
        return self._endpoint.latest_version()

    @property
    def nbytes(self) -> int:
        """Bytes of one published version."""
        return int(self.layout.total_bytes)

    def publish(self, source: Any = None, version: int | None = None) -> int:
        """Publishes ``source`` (default: the bound one) as ``version`` (default: latest + 1).

        ``source`` must have the bound layout's names and shapes. Returns the version number.
        """
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise ValueError(f"version: expected None or an int >= 0, got {version!r}")
        state = _state_of(self._source if source is None else source, "source")
        if source is not None:
            self._check_same_layout(state)
        published = self._endpoint.publish(_source_tensors(state, self._names), -1 if version is None else version)
        if self._clock is not None:
            self._clock.publish(published)
        return published

    def _check_same_layout(self, state: Mapping[str, torch.Tensor]) -> None:
        names = set(self._names)
        if set(state) != names:
            missing = sorted(names - set(state))[:8]
            extra = sorted(set(state) - names)[:8]
            raise KeyError(f"source: tensor names differ from the bound model: missing {missing}, unexpected {extra}")
        for spec in self.specs:
            if list(state[spec["name"]].shape) != spec["shape"]:
                raise ValueError(
                    f"source[{spec['name']!r}]: expected shape {tuple(spec['shape'])}, got {tuple(state[spec['name']].shape)}"
                )

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
        clock: "SSPClock | None" = None,
        worker_id: int | None = None,
    ) -> None:
        self.config = config if config is not None else SyncConfig()
        if not isinstance(self.config, SyncConfig):
            raise TypeError(f"config: expected a SyncConfig, got {type(self.config).__name__}")
        if (clock is None) != (worker_id is None):
            raise ValueError("clock, worker_id: expected both or neither")
        if clock is not None and not isinstance(clock, SSPClock):
            raise TypeError(f"clock: expected an SSPClock, got {type(clock).__name__}")
        self._clock, self._worker = clock, worker_id
        state = _state_of(target, "target")
        self._endpoint = get_transport(self.config.transport).open_subscriber(self.config, address)
        try:
            self.specs = parse_layout_text(self._endpoint.layout_text)
            check_compatible(self.specs, state, "target")
        except BaseException:
            self._endpoint.close()
            raise
        self._tensors = [state[s["name"]].detach() for s in self.specs]
        self.version: int | None = None

    @property
    def latest_version(self) -> int:
        """Newest version published so far (-1 before the first)."""
        return self._endpoint.latest_version()

    def versions(self) -> list[int]:
        """Versions the publisher's ring holds now, oldest first."""
        return self._endpoint.versions()

    def pull(self, *, version: int | None = None, min_version: int | None = None, timeout_s: float | None = None) -> int:
        """Copies a published version into the target in place; returns its number.

        version: exactly this one (KeyError naming the versions held if it is gone or unknown).
        min_version: the newest, waiting until one >= min_version exists (TimeoutError after
        ``timeout_s``, default config.timeout_s). With a clock, min_version is raised to the
        worker's SSP requirement. PeerLost if the publisher closed or died.
        """
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
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
        self.version = got
        return got

    def close(self) -> None:
        self._endpoint.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- the clock --------------------------------------------------------------------------------


class SSPClock:
    """Stale synchronous parallel clock: per-worker clocks, the learner's version, bound s.

    Invariants: no live worker works more than ``staleness`` iterations ahead of the slowest
    (:meth:`tick` waits), and a reader at clock c gets a version >= c - s - 1
    (:meth:`wait_version` waits). Workers join and leave at run time; one silent for more than
    ``heartbeat_timeout_s`` (or declared dead) stops holding the others back. Every wait has a
    timeout and releases the GIL. Thread-safe.
    """

    def __init__(self, staleness: int, heartbeat_timeout_s: float | None = 30.0) -> None:
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            raise ValueError(f"staleness: expected an int >= 0, got {staleness!r}")
        if heartbeat_timeout_s is not None and (
            isinstance(heartbeat_timeout_s, bool) or not isinstance(heartbeat_timeout_s, (int, float)) or heartbeat_timeout_s <= 0
        ):
            raise ValueError(f"heartbeat_timeout_s: expected None or a number > 0, got {heartbeat_timeout_s!r}")
        self._clock = _sync.SSPClock(staleness, -1.0 if heartbeat_timeout_s is None else float(heartbeat_timeout_s))

    @property
    def staleness(self) -> int:
        return int(self._clock.staleness)

    @property
    def version(self) -> int:
        """The learner's newest version (0 = initial weights)."""
        return int(self._clock.version)

    @staticmethod
    def _id(worker_id: int) -> int:
        if isinstance(worker_id, bool) or not isinstance(worker_id, int) or worker_id < 0:
            raise ValueError(f"worker_id: expected an int >= 0, got {worker_id!r}")
        return worker_id

    @staticmethod
    def _timeout(timeout_s: float | None) -> float:
        if timeout_s is None:
            return -1.0
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s < 0:
            raise ValueError(f"timeout_s: expected None (wait forever) or a number >= 0, got {timeout_s!r}")
        return float(timeout_s)

    def join(self, worker_id: int) -> int:
        """Adds a worker at the slowest live clock; returns its clock."""
        return int(self._clock.join(self._id(worker_id)))

    def leave(self, worker_id: int) -> None:
        self._clock.leave(self._id(worker_id))

    def declare_dead(self, worker_id: int) -> bool:
        """Removes a worker so it stops holding others back; False if it was not live."""
        return bool(self._clock.declare_dead(self._id(worker_id)))

    def heartbeat(self, worker_id: int) -> None:
        self._clock.heartbeat(self._id(worker_id))

    def reap(self) -> list[int]:
        """Declares dead the workers whose heartbeat expired; returns their ids."""
        return list(self._clock.reap())

    def tick(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Counts the worker's finished iteration, then waits while it is more than s ahead of the
        slowest live worker; returns its clock. On TimeoutError the iteration still counts."""
        return int(self._clock.tick(self._id(worker_id), self._timeout(timeout_s)))

    def wait_turn(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Waits (without counting an iteration) until the worker is within s of the slowest."""
        return int(self._clock.wait_turn(self._id(worker_id), self._timeout(timeout_s)))

    def wait_version(self, worker_id: int, timeout_s: float | None = None) -> int:
        """Waits until the learner's version >= clock - s - 1; returns the learner's version."""
        return int(self._clock.wait_version(self._id(worker_id), self._timeout(timeout_s)))

    def publish(self, version: int) -> None:
        """The learner: sets its version (never decreasing) and wakes waiting readers."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"version: expected an int, got {type(version).__name__}")
        self._clock.publish(version)

    def clock(self, worker_id: int) -> int:
        return int(self._clock.clock(self._id(worker_id)))

    def min_clock(self) -> int:
        """The slowest live worker's clock (-1 when none is live)."""
        return int(self._clock.min_clock())

    def live_workers(self) -> list[int]:
        return list(self._clock.live_workers())

    def dead_workers(self) -> list[int]:
        return list(self._clock.dead_workers())

    def close(self) -> None:
        """Wakes every waiter with pangu_core.QueueClosed; later calls fail the same way."""
        self._clock.close()


def sweep(prefix: str = "pangu") -> list[str]:
    """Removes the shared-memory segments of dead runs under ``prefix``; returns their names."""
    return list(_sync.sweep_dead_segments(prefix))


def list_segments(prefix: str = "pangu") -> list[str]:
    """Shared-memory segments in /dev/shm under ``prefix`` (live or not)."""
    return list(_sync.list_segments(prefix))


__all__ = [
    "SyncConfig", "Publisher", "Subscriber", "SSPClock", "required_version", "register_transport", "transports",
    "get_transport", "describe", "check_compatible", "sweep", "list_segments",
]
