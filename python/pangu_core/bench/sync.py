"""Benchmark `pangu-core bench sync`: weight publication speed against what torch offers.

Cases (ids fixed; --quick shrinks the sizes, reported in each case's "bytes"); every torch baseline
runs with torch.set_num_threads equal to pangu_core's thread count, interleaved with ours:
  publish_pull_shm_1g        publish a bf16 model into shared memory, a second process pulls it
                             into its own model; vs the torch shared-memory path (learner copy_ into
                             share_memory_() tensors, reader copy_ out: two copies, like ours).
                             Ceiling: two memory copies at the memcpy bandwidth of the same run.
  publish_pull_shm_1g_device the same with both models on --device (cuda, npu); skipped, with
                             the reason, without one.
  flatten_1g                 flatten + unflatten into a second state dict vs torch.cat(out=
                             preallocated) + a copy_ per tensor back out.
  gloo_broadcast_256m_2ranks one version to one other rank over gloo vs async_op=True broadcasts
                             of torch.cat buckets of the same bucket size.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import torch

from pangu_core.bench.common import (MIN_REPEATS, interleaved_medians, make_case, memcpy_gbps, ratio_range,
                                     skipped_case, torch_threads)
from pangu_core.tensors import dtype_name, numel
from pangu_core.tensors import element_size as bytes_per_element

NAME = "sync"
DESCRIPTION = "weight sync: shared-memory publish/pull, flatten/unflatten, gloo broadcast"

GB = 1 << 30
MB = 1 << 20


def model_shapes(nbytes: int, element_size: int = 2) -> dict[str, tuple[int, ...]]:
    """Shapes of a Llama-like decoder (GQA, q/k/v/o biases, SwiGLU, RMSNorm) of about ``nbytes``."""
    hidden = 2048 if nbytes >= 512 * MB else 1024 if nbytes >= 64 * MB else 128  # small: for tests
    inter, kv, vocab = hidden * 11 // 4, hidden // 4, 16384 if nbytes >= 64 * MB else 1024
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (vocab, hidden)}
    layer = {
        "q.weight": (hidden, hidden), "q.bias": (hidden,), "k.weight": (kv, hidden), "k.bias": (kv,),
        "v.weight": (kv, hidden), "v.bias": (kv,), "o.weight": (hidden, hidden), "o.bias": (hidden,),
        "gate.weight": (inter, hidden), "up.weight": (inter, hidden), "down.weight": (hidden, inter),
        "input_norm.weight": (hidden,), "post_norm.weight": (hidden,),
    }
    budget = nbytes // element_size - 2 * vocab * hidden
    i = 0
    while True:
        per_layer = sum(numel(s) for s in layer.values())
        if budget < per_layer and i > 0:
            break
        for name, shape in layer.items():
            shapes[f"layers.{i}.{name}"] = shape
        budget -= per_layer
        i += 1
    shapes["norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def make_state(nbytes: int, dtype: torch.dtype = torch.bfloat16, fill: bool = True) -> dict[str, torch.Tensor]:
    """A state dict of about ``nbytes``; every tensor holds a distinct constant (cheap to make)."""
    state = {}
    for i, (name, shape) in enumerate(model_shapes(nbytes, bytes_per_element(dtype)).items()):
        state[name] = torch.full(shape, (i % 97) * 0.01, dtype=dtype) if fill else torch.zeros(shape, dtype=dtype)
    return state


def _nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def _progress(message: str) -> None:
    print(f"[bench sync] {message}", file=sys.stderr, flush=True)


def _expected(i: int) -> float:
    return (i % 97) * 0.01


def state_matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether every tensor holds the constant :func:`make_state` put into it."""
    return all(bool(torch.all(t == torch.full((1,), _expected(i), dtype=t.dtype, device=t.device)))
               for i, t in enumerate(state.values()))


def _zero(state: dict[str, torch.Tensor]) -> None:
    for t in state.values():
        t.zero_()


def _device_sync(device: str) -> None:
    """Waits for queued work on ``device`` ("cpu": nothing to wait for)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "npu":
        torch.npu.synchronize()  # type: ignore[attr-defined]


# ---- flatten_1g -------------------------------------------------------------------------------


def bench_flatten(nbytes: int, repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """Flattens a state dict into one buffer and unflattens it into a second state dict.

    Ours: the core's FlatLayout flatten + unflatten; baseline: torch.cat(views, out=preallocated)
    + one copy_ per tensor out of the joined buffer, with torch's threads set to ours. Each side's
    targets are zeroed and checked after every call (untimed)."""
    from pangu_core import _core, get_num_threads

    threads = get_num_threads()
    state = make_state(nbytes)
    targets = make_state(nbytes, fill=False)
    names, tensors, outs = list(state), list(state.values()), list(targets.values())
    numels = [t.numel() for t in tensors]
    layout = _core.sync.FlatLayout(names, [dtype_name(t.dtype) for t in tensors], numels, 64 * MB)
    flat = torch.empty(layout.total_bytes, dtype=torch.uint8)
    joined = torch.empty(sum(numels), dtype=tensors[0].dtype)
    pieces = joined.split(numels)
    size = _nbytes(state)

    def ours() -> None:
        _core.sync.flatten(layout, tensors, flat)
        _core.sync.unflatten(layout, flat, outs)

    def theirs() -> None:
        torch.cat([t.reshape(-1) for t in tensors], out=joined)
        for t, piece in zip(outs, pieces):
            t.copy_(piece.view_as(t))

    def check(side: str) -> None:
        if not state_matches(targets):
            raise RuntimeError(f"bench sync: flatten_1g: {side} delivered wrong values")
        _zero(targets)

    with torch_threads(threads):
        ours_s, theirs_s, spread = interleaved_medians(ours, theirs, repeats, between=check)
        copy_rw = memcpy_gbps()
    del flat, joined, pieces, state, targets, tensors, outs
    return make_case("flatten_1g", "GB/s", size / ours_s / 1e9,
                     f"torch.cat(out=preallocated) + copy_ per tensor, {threads} torch threads",
                     size / theirs_s / 1e9, ceiling="two memory copies at memcpy bandwidth",
                     ceiling_value=copy_rw / 4, bytes=size, tensors=len(names), threads=threads,
                     memcpy_gbps_read_write=copy_rw, repeats=repeats, child_process=False, ratio_range=spread,
                     notes="GB/s = state-dict bytes / s of flatten + unflatten into a second state dict; "
                           "both sides' outputs checked after every call")


# ---- publish_pull_shm_1g ----------------------------------------------------------------------


def _puller(conn: Any, nbytes: int, prefix: str, threads: int, device: str) -> None:
    """The reading process of publish_pull_shm_1g: pulls (ours) or copies out of torch shared
    tensors (baseline) into its own state dict on ``device`` on command, replying with seconds."""
    from pangu_core import set_num_threads
    from pangu_core.sync import Subscriber, SyncConfig

    set_num_threads(threads)
    torch.set_num_threads(threads)
    target = {k: v.to(device) for k, v in make_state(nbytes, fill=False).items()}
    config = SyncConfig(transport="shm", name="bench", prefix=prefix, slots=2, timeout_s=120)
    sub, shared = None, None
    conn.send("ready")
    while True:
        command, arg = conn.recv()
        if command == "stop":
            break
        start = time.perf_counter()
        if command == "open":
            sub, shared = Subscriber(target, config, address=arg[0]), arg[1]
        elif command == "pull":
            sub.pull(min_version=arg)
        elif command == "copy":
            for name, tensor in target.items():
                tensor.copy_(shared[name])
        elif command == "check":
            ok = state_matches(target)
            _zero(target)
            _device_sync(device)
            conn.send(ok)
            continue
        _device_sync(device)
        conn.send(time.perf_counter() - start)
    if sub is not None:
        sub.close()


def bench_publish_pull(nbytes: int, repeats: int = MIN_REPEATS, device: str = "cpu",
                       case: str = "publish_pull_shm_1g") -> dict[str, Any]:
    """The learner (this process) publishes its state dict on ``device`` into shared memory and a
    second process pulls it into its own state dict on ``device``.

    Baseline: the torch shared-memory path, two copies like ours: the learner copy_s its tensors
    into share_memory_() CPU tensors, the reader copy_s them out. Both run in the same two
    processes, interleaved; the reader checks and zeroes its state after every call (untimed)."""
    import torch.multiprocessing as mp

    from pangu_core import get_num_threads
    from pangu_core.sync import Publisher, SyncConfig

    threads = get_num_threads()
    prefix = "pgbench" + uuid.uuid4().hex[:8]
    state = {k: v.to(device) for k, v in make_state(nbytes).items()}
    shared = {k: torch.empty(v.shape, dtype=v.dtype).share_memory_() for k, v in state.items()}
    size = _nbytes(state)
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_puller, args=(there, nbytes, prefix, threads, device), daemon=True)
    proc.start()

    def ask(command: str, arg: Any = None) -> Any:
        here.send((command, arg))
        if not here.poll(300):
            raise RuntimeError(f"bench sync: {case}: the pulling process did not answer {command!r}")
        return here.recv()

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    config = SyncConfig(transport="shm", name="bench", prefix=prefix, slots=2, publish_dtype="bfloat16",
                        timeout_s=120)
    try:
        if not here.poll(300) or here.recv() != "ready":
            raise RuntimeError(f"bench sync: {case}: the pulling process did not start")
        with torch_threads(threads), Publisher(state, config) as publisher:
            ask("open", (publisher.address, shared))
            for i in range(repeats + 1):  # interleaved; the first round is a warm-up
                start = time.perf_counter()
                version = publisher.publish()
                _device_sync(device)
                ours = time.perf_counter() - start + ask("pull", version)
                if not ask("check"):
                    raise RuntimeError(f"bench sync: {case}: the pull delivered wrong values")
                start = time.perf_counter()
                for name, tensor in state.items():
                    shared[name].copy_(tensor)
                _device_sync(device)
                theirs = time.perf_counter() - start + ask("copy")
                if not ask("check"):
                    raise RuntimeError(f"bench sync: {case}: the shared-tensor copy delivered wrong values")
                if i > 0:
                    times["ours"].append(ours)
                    times["theirs"].append(theirs)
            here.send(("stop", None))
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    del state, shared
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    with torch_threads(threads):
        copy_rw = memcpy_gbps()  # bytes read + written per second
    extra: dict[str, Any] = {}
    if device == "cpu":  # host copies bound both sides; a device's link is not measured here
        extra.update(ceiling="two memory copies at memcpy bandwidth", ceiling_value=copy_rw / 4)
    return make_case(case, "GB/s", size / ours_s / 1e9,
                     f"torch share_memory_() tensors: learner copy_ in, reader copy_ out (2 processes, "
                     f"{threads} torch threads each)", size / theirs_s / 1e9, bytes=size, device=device,
                     memcpy_gbps_read_write=copy_rw, publish_plus_pull_seconds=ours_s, threads=threads,
                     repeats=repeats, child_process=True, ratio_range=ratio_range(times["ours"], times["theirs"]),
                     **extra,
                     notes="the reader runs in a spawned child for both sides; GB/s = state-dict bytes / "
                           "(publish or copy-in seconds + pull or copy-out seconds)")


def bench_publish_pull_device(nbytes: int, device: str | None, repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """publish_pull_shm_1g_device: the same round trip with both state dicts on ``device``, or a
    skipped case naming why it cannot run here."""
    from pangu_core.device import probe

    case, baseline = "publish_pull_shm_1g_device", "torch share_memory_() tensors, device -> host -> device"
    if device is None:
        return skipped_case(case, "GB/s", baseline, "no --device given (use --device cuda or --device npu)")
    kind = torch.device(device).type
    if kind == "cpu":
        return skipped_case(case, "GB/s", baseline, "--device cpu: the CPU case is publish_pull_shm_1g", device=device)
    info = probe(kind)
    if not info.available:
        return skipped_case(case, "GB/s", baseline, f"{kind} unavailable: {info.reason}", device=device)
    return bench_publish_pull(nbytes, repeats, device=device, case=case)


# ---- gloo_broadcast_256m_2ranks ---------------------------------------------------------------


def _buckets(tensors: list[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors grouped into buckets of at most ``bucket_bytes`` (a larger tensor alone)."""
    buckets: list[list[torch.Tensor]] = []
    used = bucket_bytes
    for t in tensors:
        n = t.numel() * t.element_size()
        if used + n > bucket_bytes:
            buckets.append([])
            used = 0
        buckets[-1].append(t)
        used += n
    return buckets


def bucketed_broadcast(dist: Any, buckets: list[list[torch.Tensor]], buffers: list[torch.Tensor | None],
                       rank: int) -> None:
    """Broadcasts every tensor from rank 0 in the given buckets, all async_op=True at once: rank 0
    joins each bucket into its buffer (torch.cat(out=)), the others copy out as buckets land.
    A bucket of one tensor is broadcast in place (its buffer is None)."""
    works = []
    for group, buffer in zip(buckets, buffers):
        if buffer is None:
            works.append(dist.broadcast(group[0], src=0, async_op=True))
            continue
        if rank == 0:
            torch.cat([t.reshape(-1) for t in group], out=buffer)
        works.append(dist.broadcast(buffer, src=0, async_op=True))
    for work, group, buffer in zip(works, buckets, buffers):
        work.wait()
        if rank != 0 and buffer is not None:
            for t, piece in zip(group, buffer.split([t.numel() for t in group])):
                t.copy_(piece.view_as(t))


def gloo_rank(rank: int, port: int, nbytes: int, repeats: int, threads: int, bucket_mb: int) -> None:
    """One rank of the gloo case (run in its own process); rank 0 prints the timings as JSON."""
    import torch.distributed as dist

    from pangu_core import set_num_threads
    from pangu_core.sync import Publisher, Subscriber, SyncConfig

    set_num_threads(threads)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    state = make_state(nbytes, fill=rank == 0)
    config = SyncConfig(transport="torch_distributed", bucket_mb=bucket_mb, publish_dtype="bfloat16")
    end = Publisher(state, config) if rank == 0 else Subscriber(state, config)
    buckets = _buckets(list(state.values()), bucket_mb * MB)
    buffers = [None if len(g) == 1 else torch.empty(sum(t.numel() for t in g), dtype=g[0].dtype) for g in buckets]

    def ours() -> None:
        end.publish() if rank == 0 else end.pull()

    def theirs() -> None:
        bucketed_broadcast(dist, buckets, buffers, rank)

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    ok = torch.ones(1, dtype=torch.int64)
    for i in range(repeats + 1):
        for name, fn in (("ours", ours), ("theirs", theirs)):  # interleaved: drift hits both alike
            dist.barrier()
            start = time.perf_counter()
            fn()
            dist.barrier()
            if i > 0:
                times[name].append(time.perf_counter() - start)
            if rank == 1:  # every call must deliver: check, then clear for the next one
                ok.mul_(int(state_matches(state)))
                _zero(state)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(json.dumps({**times, "bytes": _nbytes(state), "ok": bool(ok.item()), "tensors": len(state),
                          "buckets": len(buckets)}), flush=True)
    dist.destroy_process_group()


def bench_gloo(nbytes: int, repeats: int = MIN_REPEATS, bucket_mb: int = 4) -> dict[str, Any]:
    """Rank 0 sends one version of a state dict to rank 1 over gloo (two child processes)."""
    from pangu_core import get_num_threads

    threads = get_num_threads()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from pangu_core.bench.sync import gloo_rank; gloo_rank(*map(int, sys.argv[1:]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(port), str(nbytes), str(repeats),
                               str(threads), str(bucket_mb)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"bench sync: a gloo rank failed: {outputs[0][1][-1500:]} {outputs[1][1][-1500:]}")
    result = json.loads(outputs[0][0].strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError("bench sync: the receiving rank got wrong values")
    ours_s, theirs_s = statistics.median(result["ours"]), statistics.median(result["theirs"])
    size = result["bytes"]
    return make_case("gloo_broadcast_256m_2ranks", "GB/s", size / ours_s / 1e9,
                     f"dist.broadcast(async_op=True) of {bucket_mb} MB torch.cat buckets, all in flight, "
                     f"{threads} torch threads per rank", size / theirs_s / 1e9, bytes=size,
                     tensors=result["tensors"], bucket_mb=bucket_mb, baseline_buckets=result["buckets"],
                     threads=threads, repeats=repeats, child_process=True,
                     ratio_range=ratio_range(result["ours"], result["theirs"]),
                     notes="both ranks run in child processes for both sides; rank 1 checks and zeroes its "
                           "state after every call")


def run(quick: bool = False, device: str | None = None) -> list[dict[str, Any]]:
    """The sync cases (smaller sizes with ``quick``); ``device`` adds device tensors to publish/pull."""
    size = 128 * MB if quick else GB
    cases = []
    for name, fn in (("publish_pull_shm_1g", lambda: bench_publish_pull(size)),
                     ("publish_pull_shm_1g_device", lambda: bench_publish_pull_device(size, device)),
                     ("flatten_1g", lambda: bench_flatten(size)),
                     ("gloo_broadcast_256m_2ranks", lambda: bench_gloo(64 * MB if quick else 256 * MB))):
        _progress(f"{name} ...")
        start = time.perf_counter()
        cases.append(fn())
        _progress(f"{name}: done in {time.perf_counter() - start:.1f} s")
    return cases
