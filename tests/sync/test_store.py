"""Flat layouts, the versioned weight store and the in-process transport: exact copies and casts,
in-place pulls, the ring of versions, torn reads under concurrent publication, front-door errors."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import pangu_core
from pangu_core import _core
from pangu_core.sync import Publisher, SSPClock, Subscriber, SyncConfig, required_version

_sync = _core.sync
SHAPES = [(3, 5), (7,), (1,), (33, 17), (0,), (2, 3, 9), (1025,)]


def _state(dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.w": torch.randn(s, generator=g).to(dtype) for i, s in enumerate(SHAPES)}


def _zeros_like(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(v.shape, dtype=dtype) for k, v in state.items()}


@pytest.mark.parametrize("isa", pangu_core.available_isas())
@pytest.mark.parametrize("src,dst", [(torch.float32, torch.bfloat16), (torch.float32, torch.float16),
                                     (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)])
def test_flatten_unflatten_roundtrip_matches_torch_casts(isa: str, src: torch.dtype, dst: torch.dtype) -> None:
    # Flatten casts exactly like Tensor.to (round to nearest even) on every ISA path; unflatten
    # restores every tensor bit-for-bit, whatever the shapes (empty, odd sizes) and buckets.
    state = _state(src)
    names = list(state)
    layout = _sync.FlatLayout(names, [str(dst).removeprefix("torch.")] * len(names),
                              [t.numel() for t in state.values()], 200)
    flat = torch.full((layout.total_bytes,), 0xAB, dtype=torch.uint8)
    pangu_core.set_isa(isa)
    try:
        _sync.flatten(layout, list(state.values()), flat)
        out = _zeros_like(state, dst)
        _sync.unflatten(layout, flat, list(out.values()))
    finally:
        pangu_core.reset_isa()
    for name in names:
        assert torch.equal(out[name], state[name].to(dst)), name


def test_layout_aligns_tensors_and_respects_the_bucket_limit() -> None:
    numels = [10, 100, 5000, 3, 3, 3]
    layout = _sync.FlatLayout([f"t{i}" for i in range(6)], ["float32"] * 6, numels, 1024)
    entries = layout.entries()
    assert all(e[3] % 64 == 0 for e in entries)
    for b in range(layout.num_buckets):
        members = [e for e in entries if e[5] == b]
        assert layout.bucket_offset(b) == members[0][3]
        # A bucket exceeds the limit only when it holds a single oversized tensor.
        assert layout.bucket_bytes(b) <= 1024 or len(members) == 1
    assert entries[2][5] != entries[1][5]  # the 20 kB tensor gets its own bucket
    assert layout.total_bytes % 64 == 0 and layout.total_bytes >= entries[-1][3] + entries[-1][4]


def test_changed_buckets_and_partial_unflatten() -> None:
    state = _state()
    names = list(state)
    layout = _sync.FlatLayout(names, ["float32"] * len(names), [t.numel() for t in state.values()], 256)
    a = torch.zeros(layout.total_bytes, dtype=torch.uint8)
    b = torch.zeros_like(a)
    _sync.flatten(layout, list(state.values()), a)
    state["layer3.w"].add_(1.0)
    _sync.flatten(layout, list(state.values()), b)
    changed = _sync.changed_buckets(layout, a, b)
    bucket = dict((e[0], e[5]) for e in layout.entries())["layer3.w"]
    assert [i for i, c in enumerate(changed) if c] == [bucket]
    out = _zeros_like(state, torch.float32)
    _sync.unflatten(layout, b, list(out.values()), [bucket])
    for name in names:
        expected = state[name] if dict((e[0], e[5]) for e in layout.entries())[name] == bucket else torch.zeros_like(state[name])
        assert torch.equal(out[name], expected), name


def test_pull_writes_in_place_and_the_ring_keeps_k_versions() -> None:
    # Pulls write into the target's existing storage (no new tensors); the ring holds the last K.
    model = _state()
    target = _zeros_like(model, torch.bfloat16)
    pointers = {k: v.data_ptr() for k, v in target.items()}
    config = SyncConfig(transport="inprocess", name="ring", slots=3)
    with Publisher(model, config) as pub:
        sub = Subscriber(target, config)
        for v in range(5):
            for t in model.values():
                t.fill_(float(v))
            assert pub.publish() == v
        assert sub.versions() == [2, 3, 4]
        assert sub.pull() == 4
        assert all(torch.all(t == 4) for t in target.values())
        assert sub.pull(version=2) == 2
        assert all(torch.all(t == 2) for t in target.values())
        assert {k: v.data_ptr() for k, v in target.items()} == pointers
        with pytest.raises(KeyError, match=r"version: 1 is not in the ring \(it holds 2, 3, 4"):
            sub.pull(version=1)
        with pytest.raises(KeyError, match="version: -3 does not exist"):
            sub.pull(version=-3)
        with pytest.raises(TimeoutError, match="no version >= 9"):
            sub.pull(min_version=9, timeout_s=0.1)
        with pytest.raises(ValueError, match="version: expected > 4"):
            pub.publish(version=4)
        assert pub.publish(version=10) == 10
    with pytest.raises(pangu_core.PeerLost, match="closed"):
        sub.pull()


@pytest.mark.sanitize
@pytest.mark.parametrize("slots", [2, 3])
def test_no_torn_reads_under_concurrent_publication(slots: int) -> None:
    # Every pulled version is internally consistent: each tensor holds the values of one version
    # (checksums), even with K=2 and readers hammering the ring while the learner publishes.
    names = [f"p{i}" for i in range(6)]
    sizes = [4096, 1, 777, 65536, 3, 20000]
    source = {n: torch.full((s,), float(i)) for i, (n, s) in enumerate(zip(names, sizes))}  # version 0
    config = SyncConfig(transport="inprocess", name=f"torn{slots}", slots=slots, publish_dtype="float32", timeout_s=20)
    pub = Publisher(source, config)
    pub.publish()
    errors: list[str] = []
    done = threading.Event()
    counts = [0, 0, 0]

    def reader(r: int) -> None:
        target = {n: torch.empty(s) for n, s in zip(names, sizes)}
        sub = Subscriber(target, config)
        try:
            while not done.is_set():
                v = sub.pull(timeout_s=10)
                for i, n in enumerate(names):
                    expected = float(v * 10 + i)
                    if not torch.all(target[n] == expected):
                        errors.append(f"reader {r} version {v} tensor {n} torn")
                        return
                counts[r] += 1
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    v = 0
    deadline = time.monotonic() + 20
    while (v < 150 or min(counts) < 20) and time.monotonic() < deadline and not errors:
        v += 1
        for i, n in enumerate(names):
            source[n].fill_(float(v * 10 + i))
        pub.publish()
    done.set()
    for t in threads:
        t.join(30)
    pub.close()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert all(c > 0 for c in counts)


@pytest.mark.sanitize
def test_clock_gated_pulls_respect_the_staleness_bound() -> None:
    # Readers attached to the clock always get a version >= c - s - 1 whose data is that version.
    s = 1
    clock = SSPClock(s, heartbeat_timeout_s=10)
    source = {"w": torch.zeros(1000), "b": torch.zeros(10)}
    config = SyncConfig(transport="inprocess", name="gated", staleness=s, publish_dtype="float32", timeout_s=10)
    pub = Publisher(source, config, clock=clock)
    pub.publish()
    errors: list[str] = []
    workers = 3
    for w in range(workers):
        clock.join(w)

    def worker(w: int) -> None:
        target = {"w": torch.empty(1000), "b": torch.empty(10)}
        sub = Subscriber(target, config, clock=clock, worker_id=w)
        try:
            for _ in range(20):
                c = clock.clock(w)
                v = sub.pull()
                if v < required_version(c, s) or not torch.all(target["w"] == v) or not torch.all(target["b"] == -v):
                    errors.append(f"worker {w} clock {c} got version {v}")
                clock.tick(w, timeout_s=10)
            clock.leave(w)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    version = 0
    while any(t.is_alive() for t in threads):
        live = clock.live_workers()
        target_version = min((clock.clock(w) for w in live if w in clock.live_workers()), default=version)
        if target_version > version:
            version = target_version
            source["w"].fill_(float(version))
            source["b"].fill_(float(-version))
            pub.publish(version=version)
        threading.Event().wait(0.001)
    pub.close()
    assert errors == []


def test_mismatched_models_name_the_tensor() -> None:
    model = _state()
    config = SyncConfig(transport="inprocess", name="mismatch")
    with Publisher(model, config):
        wrong_name = _zeros_like(model, torch.bfloat16)
        wrong_name["extra"] = wrong_name.pop("layer1.w")
        with pytest.raises(KeyError, match=r"missing \['layer1.w'\], unexpected \['extra'\]"):
            Subscriber(wrong_name, config)
        wrong_shape = _zeros_like(model, torch.bfloat16)
        wrong_shape["layer3.w"] = torch.zeros(17, 33, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match=r"target\['layer3.w'\]: expected shape \(33, 17\)"):
            Subscriber(wrong_shape, config)
        wrong_dtype = _zeros_like(model, torch.bfloat16)
        wrong_dtype["layer0.w"] = torch.zeros(3, 5)
        with pytest.raises(TypeError, match=r"target\['layer0.w'\]: expected bfloat16 like the publisher, got float32"):
            Subscriber(wrong_dtype, config)
        with pytest.raises(TypeError, match="target: expected a torch.nn.Module"):
            Subscriber([1, 2], config)


def test_publisher_rejects_a_source_with_another_layout() -> None:
    model = _state()
    with Publisher(model, SyncConfig(transport="inprocess", name="relayout")) as pub:
        other = dict(model)
        other["layer0.w"] = torch.zeros(5, 3)
        with pytest.raises(ValueError, match=r"source\['layer0.w'\]: expected shape \(3, 5\)"):
            pub.publish(other)
        with pytest.raises(KeyError, match="missing"):
            pub.publish({"x": torch.zeros(1)})
        with pytest.raises(ValueError, match="an in-process channel 'relayout' already has a live publisher"):
            Publisher(model, SyncConfig(transport="inprocess", name="relayout"))


def test_publish_dtype_none_keeps_dtypes_and_non_float_tensors_are_never_cast() -> None:
    model = {"w": torch.randn(4, 4), "step": torch.tensor([7], dtype=torch.int64)}
    config = SyncConfig(transport="inprocess", name="keep", publish_dtype="bfloat16")
    with Publisher(model, config) as pub:
        assert [s["dtype"] for s in pub.specs] == ["bfloat16", "int64"]
        pub.publish()
        target = {"w": torch.zeros(4, 4, dtype=torch.bfloat16), "step": torch.zeros(1, dtype=torch.int64)}
        Subscriber(target, config).pull()
        assert torch.equal(target["w"], model["w"].bfloat16()) and int(target["step"]) == 7
