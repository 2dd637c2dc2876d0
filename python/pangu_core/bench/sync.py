"""Benchmark `pangu-core bench sync`: weight publication speed against what torch offers.

Cases (ids fixed; --quick shrinks the sizes, reported in each case's "bytes"):
  publish_pull_shm_1g        publish a bf16 model into shared memory, a second process pulls it
                             into its own model; vs torch.save + torch.load through /dev/shm.
                             Ceiling: two memory copies (into the segment, out into the model)
                             at the memcpy bandwidth measured in the same run.
  flatten_1g                 flatten + unflatten of a state dict vs torch.cat of flattened views
                             and copying the pieces back.
  gloo_broadcast_256m_2ranks one version to one other rank over gloo vs a per-tensor
                             dist.broadcast loop.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import torch

from pangu_core.bench.common import make_case, median_seconds, memcpy_gbps
from pangu_core.tensors import dtype_name, numel
from pangu_core.tensors import element_size as bytes_per_element

NAME = "sync"
DESCRIPTION = "weight sync: shared-memory publish/pull, flatten/unflatten, gloo broadcast"

GB = 1 << 30
MB = 1 << 20


def model_shapes(nbytes: int, element_size: int = 2) -> dict[str, tuple[int, ...]]:
    """Shapes of a Llama-like decoder (GQA, q/k/v/o biases, SwiGLU, RMSNorm) of about ``nbytes``."""
    hidden = 2048 if nbytes >= 512 * MB else 1024
    inter, kv, vocab = hidden * 11 // 4, hidden // 4, 16384
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


# ---- flatten_1g -------------------------------------------------------------------------------


def bench_flatten(nbytes: int) -> dict[str, Any]:
    from pangu_core import _core

    state = make_state(nbytes)
    names, tensors = list(state), list(state.values())
    numels = [t.numel() for t in tensors]
    layout = _core.sync.FlatLayout(names, [dtype_name(t.dtype) for t in tensors], numels, 64 * MB)
    flat = torch.empty(layout.total_bytes, dtype=torch.uint8)
    size = _nbytes(state)

    def ours() -> None:
        _core.sync.flatten(layout, tensors, flat)
        _core.sync.unflatten(layout, flat, tensors)

    def theirs() -> None:
        joined = torch.cat([t.reshape(-1) for t in tensors])
        for t, piece in zip(tensors, joined.split(numels)):
            t.copy_(piece.view_as(t))

    ours_s = median_seconds(ours)
    theirs_s = median_seconds(theirs)
    del flat, state, tensors
    return make_case("flatten_1g", "GB/s", size / ours_s / 1e9, "torch.cat of flattened views + copy back",
                     size / theirs_s / 1e9, bytes=size, tensors=len(names))


# ---- publish_pull_shm_1g ----------------------------------------------------------------------

_PULLER = """
import json, sys, time, torch
from pangu_core.bench.sync import make_state
from pangu_core.sync import Subscriber, SyncConfig
target = make_state(int(sys.argv[1]), fill=False)
config = SyncConfig(transport="shm", name="bench", prefix=sys.argv[2], slots=2, timeout_s=120)
sub = None
print("ready", flush=True)
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    start = time.perf_counter()
    if command == "open":
        sub = Subscriber(target, config, address=arg)
    elif command == "pull":
        sub.pull(min_version=int(arg))
    elif command == "load":
        loaded = torch.load(arg)
        for name, tensor in target.items():
            tensor.copy_(loaded[name])
        del loaded
    elif command == "check":
        ok = all(bool(torch.all(t == (i % 97) * 0.01 * torch.ones(1, dtype=t.dtype))) for i, t in enumerate(target.values()))
        print(json.dumps({"ok": ok}), flush=True)
        for t in target.values():
            t.zero_()
        continue
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


def _ask(proc: subprocess.Popen, line: str) -> dict[str, Any]:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    reply = proc.stdout.readline()
    if not reply:
        raise RuntimeError(f"bench sync: the pulling process died: {proc.stderr.read()[-2000:]}")
    return json.loads(reply)


def bench_publish_pull(nbytes: int, repeats: int = 5) -> dict[str, Any]:
    from pangu_core.sync import Publisher, SyncConfig

    prefix = "pgbench" + uuid.uuid4().hex[:8]
    state = make_state(nbytes)
    size = _nbytes(state)
    path = f"/dev/shm/{prefix}.pt"
    proc = subprocess.Popen([sys.executable, "-c", _PULLER, str(nbytes), prefix], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench sync: the pulling process failed: {proc.stderr.read()[-2000:]}")
        theirs = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            torch.save(state, path)
            saved = time.perf_counter() - start
            theirs.append(saved + _ask(proc, f"load {path}")["seconds"])
        os.remove(path)
        if not _ask(proc, "check")["ok"]:
            raise RuntimeError("bench sync: torch.load delivered wrong values")
        config = SyncConfig(transport="shm", name="bench", prefix=prefix, slots=2, publish_dtype="bfloat16", timeout_s=120)
        ours = []
        with Publisher(state, config) as publisher:
            _ask(proc, f"open {publisher.address}")
            for _ in range(repeats + 1):
                start = time.perf_counter()
                version = publisher.publish()
                published = time.perf_counter() - start
                ours.append(published + _ask(proc, f"pull {version}")["seconds"])
            if not _ask(proc, "check")["ok"]:
                raise RuntimeError("bench sync: the pull delivered wrong values")
    finally:
        if os.path.exists(path):
            os.remove(path)
        proc.kill()
        proc.communicate(timeout=60)
    del state
    ours_s, theirs_s = sorted(ours[1:])[repeats // 2], sorted(theirs[1:])[repeats // 2]
    copy_rw = memcpy_gbps()  # bytes read + written per second
    two_copies = copy_rw / 4  # payload rate of two copies (each reads and writes the payload)
    ours_gbps = size / ours_s / 1e9
    return make_case("publish_pull_shm_1g", "GB/s", ours_gbps, "torch.save + torch.load via /dev/shm",
                     size / theirs_s / 1e9, ceiling="two memory copies at memcpy bandwidth", ceiling_value=two_copies,
                     bytes=size, memcpy_gbps_read_write=copy_rw, publish_plus_pull_seconds=ours_s)


# ---- gloo_broadcast_256m_2ranks ---------------------------------------------------------------


def gloo_rank(rank: int, port: int, nbytes: int, repeats: int) -> None:
    """One rank of the gloo case (run in its own process); rank 0 prints the timings as JSON."""
    import torch.distributed as dist

    from pangu_core.sync import Publisher, Subscriber, SyncConfig

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    state = make_state(nbytes, fill=rank == 0)
    tensors = list(state.values())
    config = SyncConfig(transport="torch_distributed", bucket_mb=4, publish_dtype="bfloat16")
    end = Publisher(state, config) if rank == 0 else Subscriber(state, config)

    def ours() -> None:
        end.publish() if rank == 0 else end.pull()

    def theirs() -> None:
        for t in tensors:
            dist.broadcast(t, src=0)

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for i in range(repeats + 1):
        for name, fn in (("ours", ours), ("theirs", theirs)):  # interleaved: drift hits both alike
            dist.barrier()
            start = time.perf_counter()
            fn()
            dist.barrier()
            if i > 0:
                times[name].append(time.perf_counter() - start)
    ok = torch.tensor([int(all(bool(torch.all(t == (i % 97) * 0.01 * torch.ones(1, dtype=t.dtype)))
                               for i, t in enumerate(tensors)))])
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(json.dumps({**times, "bytes": _nbytes(state), "ok": bool(ok.item()), "tensors": len(tensors)}), flush=True)
    dist.destroy_process_group()


def bench_gloo(nbytes: int, repeats: int = 5) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from pangu_core.bench.sync import gloo_rank; gloo_rank(*map(int, sys.argv[1:]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(port), str(nbytes), str(repeats)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"bench sync: a gloo rank failed: {outputs[0][1][-1500:]} {outputs[1][1][-1500:]}")
    result = json.loads(outputs[0][0].strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError("bench sync: the receiving rank got wrong values")
    ours_s = sorted(result["ours"])[len(result["ours"]) // 2]
    theirs_s = sorted(result["theirs"])[len(result["theirs"]) // 2]
    size = result["bytes"]
    return make_case("gloo_broadcast_256m_2ranks", "GB/s", size / ours_s / 1e9, "per-tensor dist.broadcast loop",
                     size / theirs_s / 1e9, bytes=size, tensors=result["tensors"], bucket_mb=4)


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [
        bench_publish_pull(128 * MB if quick else GB),
        bench_flatten(128 * MB if quick else GB),
        bench_gloo(64 * MB if quick else 256 * MB),
    ]
