"""Shared-memory transport across processes: the staleness bound and consistency on every read,
no leaks after the owner is killed (SIGKILL, SIGTERM, plain exit), PeerLost for readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import torch

import pangu_core
from pangu_core import sync
from pangu_core.sync import Publisher, Subscriber, SyncConfig

PUBLISHER = textwrap.dedent("""
    import sys, time, torch
    from pangu_core.sync import Publisher, SyncConfig
    config = SyncConfig(transport="shm", name="w", prefix=sys.argv[1], publish_dtype="float32")
    model = {"w": torch.full((1000,), 3.0), "b": torch.arange(10.0)}
    pub = Publisher(model, config)
    pub.publish()
    print(pub.address, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)   # no close(): the atexit hook must remove the segment
    time.sleep(120)
""")

READER = textwrap.dedent("""
    import random, sys, threading, torch
    from pangu_core.sync import Subscriber, SyncConfig, required_version
    prefix, staleness, reads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    config = SyncConfig(transport="shm", name="bound", prefix=prefix, publish_dtype="float32", timeout_s=20)
    problems = []

    def read(r):
        rng = random.Random(seed * 10 + r)
        target = {"a": torch.empty(5000), "b": torch.empty(77), "c": torch.empty(40000)}
        sub = Subscriber(target, config)
        clock = 0
        for i in range(reads):
            clock += rng.choice([0, 1, 1, 2])
            need = required_version(clock, staleness)
            got = sub.pull(min_version=need)
            if got < need:
                problems.append(f"BOUND clock={clock} got={got}")
            for j, name in enumerate("abc"):
                if not bool(torch.all(target[name] == float(got * 3 + j))):
                    problems.append(f"TORN version={got} tensor={name}")

    threads = [threading.Thread(target=read, args=(r,)) for r in range(3)]
    for t in threads: t.start()
    for t in threads: t.join()
    print("OK" if not problems else problems[:5], flush=True)
""")


def _prefix() -> str:
    return "pgt" + uuid.uuid4().hex[:10]


def _spawn(tmp_path, script: str, *args: str) -> subprocess.Popen:
    path = tmp_path / f"script_{uuid.uuid4().hex[:6]}.py"
    path.write_text(script)
    return subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reap(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=30)  # also closes the pipes


def _target() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(1000), "b": torch.zeros(10)}


def test_no_segment_leaks_after_sigkill_sigterm_or_plain_exit(tmp_path) -> None:
    # Three publisher processes start together (start-up dominates the cost) and meet three ends.
    # SIGKILL cannot be caught: the segment stays, readers get PeerLost (never stale garbage) and
    # the sweep removes it because its owner is dead. SIGTERM: the signal handler unlinks it.
    # Plain exit without close(): the atexit hook unlinks it. Nothing is left in /dev/shm.
    prefixes = {how: _prefix() for how in ("sigkill", "sigterm", "exit")}
    procs = {how: _spawn(tmp_path, PUBLISHER, prefix, "exit" if how == "exit" else "sleep")
             for how, prefix in prefixes.items()}
    try:
        addresses = {how: proc.stdout.readline().strip() for how, proc in procs.items()}
        for how, address in addresses.items():
            assert address.startswith(f"/{prefixes[how]}."), procs[how].stderr.read()

        config = SyncConfig(transport="shm", name="w", prefix=prefixes["sigkill"], publish_dtype="float32", timeout_s=20)
        target = _target()
        sub = Subscriber(target, config)
        assert sub.pull() == 0 and torch.all(target["w"] == 3.0)
        procs["sigkill"].send_signal(signal.SIGKILL)
        procs["sigterm"].send_signal(signal.SIGTERM)
        assert procs["sigkill"].wait(20) == -signal.SIGKILL
        assert procs["sigterm"].wait(20) == -signal.SIGTERM
        assert procs["exit"].wait(20) == 0

        address = addresses["sigkill"]
        assert sync.list_segments(prefixes["sigkill"]) == [address]
        with pytest.raises(pangu_core.PeerLost, match="died"):
            sub.pull()
        with pytest.raises(pangu_core.PeerLost, match="died"):
            Subscriber(_target(), config)
        assert sync.sweep(prefixes["sigkill"]) == [address]
        with pytest.raises(pangu_core.PeerLost):
            Subscriber(_target(), config, address=address)
        for prefix in prefixes.values():
            assert sync.list_segments(prefix) == []
            assert not any(n.startswith(prefix) for n in os.listdir("/dev/shm"))
    finally:
        for how, proc in procs.items():
            _reap(proc)
            sync.sweep(prefixes[how])


def test_multi_process_readers_respect_the_bound_and_never_see_torn_versions(tmp_path) -> None:
    # A reader process (three threads) advances random clocks and demand version >= c - s - 1 with a checksum on
    # every read while the learner keeps publishing into a K=2 ring.
    prefix = _prefix()
    staleness = 1
    config = SyncConfig(transport="shm", name="bound", prefix=prefix, slots=2, publish_dtype="float32", timeout_s=5)
    source = {"a": torch.zeros(5000), "b": torch.zeros(77), "c": torch.zeros(40000)}

    def fill(v: int) -> None:
        for j, name in enumerate("abc"):
            source[name].fill_(float(v * 3 + j))

    fill(0)
    pub = Publisher(source, config)
    readers = []
    try:
        pub.publish()
        readers = [_spawn(tmp_path, READER, prefix, str(staleness), "80", "7")]
        started = time.monotonic()
        v = 0
        while any(r.poll() is None for r in readers) and time.monotonic() - started < 60:
            v += 1
            fill(v)
            pub.publish()
            time.sleep(0.005)  # leave CPU to the readers (their start-up dominates on busy machines)
        for r in readers:
            out, err = r.communicate(timeout=30)
            assert r.returncode == 0 and out.startswith("OK"), out + err
    finally:
        for r in readers:
            _reap(r)
        pub.close()
    assert sync.list_segments(prefix) == []


PINNER = textwrap.dedent("""
    import sys, time
    from pangu_core import _core
    store = _core.sync.WeightStore.open_shared(sys.argv[1])
    lease, version = store.pin(-1, 10.0)
    print(version, flush=True)
    time.sleep(120)
""")


def test_a_pinned_version_is_never_overwritten_until_its_reader_dies(tmp_path) -> None:
    # A live reader's pin blocks the writer from its slot (publish times out instead of tearing
    # it); once the reader is SIGKILLed the writer reclaims the lease and the ring turns again.
    prefix = _prefix()
    config = SyncConfig(transport="shm", name="pin", prefix=prefix, slots=2, timeout_s=0.3)
    pub = Publisher(_target(), config)
    proc = None
    try:
        pub.publish()
        proc = _spawn(tmp_path, PINNER, pub.address)
        assert proc.stdout.readline().strip() == "0", proc.stderr.read()
        assert pub._endpoint.pin_count(0) == 1
        pub.publish()  # the other slot is free
        with pytest.raises(TimeoutError, match="stayed pinned"):
            pub.publish()  # version 0's slot is pinned and version 1 is the newest
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert pub.publish() == 2
        assert pub._endpoint.pin_count(0) == 0
    finally:
        if proc is not None:
            _reap(proc)
        pub.close()


def test_subscriber_errors_without_a_live_publisher() -> None:
    prefix = _prefix()
    config = SyncConfig(transport="shm", name="nobody", prefix=prefix, timeout_s=0.2)
    with pytest.raises(TimeoutError, match="no live publisher 'nobody'"):
        Subscriber(_target(), config)
    with pytest.raises(pangu_core.PeerLost, match="does not exist"):
        Subscriber(_target(), config, address=f"/{prefix}.1.1.nobody")


def test_two_live_publishers_on_one_channel_are_an_error() -> None:
    prefix = _prefix()
    config = SyncConfig(transport="shm", name="twice", prefix=prefix)
    with Publisher(_target(), config):
        with pytest.raises(ValueError, match="already exists"):
            Publisher(_target(), config)
        pub = Publisher(_target(), SyncConfig(transport="shm", name="twice2", prefix=prefix))
        pub.close()
    assert sync.list_segments(prefix) == []
