"""SSP clock: the spread and freshness invariants under randomised threads, timeouts, membership."""

from __future__ import annotations

import random
import threading
import time

import pytest

import pangu_core
from pangu_core.sync import SSPClock, required_version


def test_required_version_is_clock_minus_s_minus_one() -> None:
    # The freshness invariant's arithmetic: a reader at clock c needs every update through c - s - 1.
    assert required_version(10, 2) == 7
    assert required_version(0, 0) == -1
    with pytest.raises(ValueError, match="staleness"):
        required_version(3, -1)
    with pytest.raises(TypeError, match="clock"):
        required_version(1.5, 1)  # type: ignore[arg-type]


@pytest.mark.sanitize
@pytest.mark.parametrize("seed,staleness", [(0, 0), (1, 1), (2, 3)])
def test_randomised_workers_never_break_the_bound(seed: int, staleness: int) -> None:
    # Every tick leaves the worker at most s ahead of the slowest live worker, and every read gets a
    # version >= c - s - 1; nothing deadlocks (every wait has a timeout, failures surface).
    rng = random.Random(seed)
    clock = SSPClock(staleness, heartbeat_timeout_s=10.0)
    workers, iterations = 4, 25
    for w in range(workers):
        clock.join(w)
    errors: list[str] = []
    delays = [[rng.random() * 0.002 * (w + 1) for _ in range(iterations)] for w in range(workers)]

    def worker(w: int) -> None:
        try:
            for i in range(iterations):
                version = clock.wait_version(w, timeout_s=10)
                c = clock.clock(w)
                if version < c - staleness - 1:
                    errors.append(f"worker {w} read version {version} at clock {c}")
                time.sleep(delays[w][i])
                c = clock.tick(w, timeout_s=10)
                if c > clock.min_clock() + staleness:
                    errors.append(f"worker {w} at clock {c} is more than {staleness} ahead")
            clock.leave(w)
        except Exception as e:  # surfaced below
            errors.append(f"worker {w}: {e!r}")

    def learner() -> None:
        version = 0
        while any(t.is_alive() for t in threads):
            time.sleep(rng.random() * 0.002)
            live = clock.live_workers()
            if not live:
                break
            # The learner produces the update a reader may need next: it trails the slowest worker.
            target = max(version, min((clock.clock(w) for w in live if w in clock.live_workers()), default=version))
            if target > version:
                version = target
                clock.publish(version)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    lt = threading.Thread(target=learner)
    lt.start()
    for t in threads:
        t.join(30)
    lt.join(30)
    assert not any(t.is_alive() for t in threads), "a worker deadlocked"
    assert errors == []


def test_tick_waits_for_the_slowest_and_times_out() -> None:
    # The fast worker may run s ahead and then blocks until the slow one moves (or the timeout).
    clock = SSPClock(1, heartbeat_timeout_s=None)
    clock.join(0)
    clock.join(1)
    assert clock.tick(0, timeout_s=1) == 1
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="worker 0 at clock 2"):
        clock.tick(0, timeout_s=0.2)
    assert time.monotonic() - start >= 0.15
    assert clock.clock(0) == 2  # the finished iteration counts; wait_turn waits again
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(clock.wait_turn(0, timeout_s=5)))
    t.start()
    time.sleep(0.05)
    assert clock.tick(1, timeout_s=1) == 1
    t.join(5)
    assert result == [2]


def test_reader_waits_for_a_fresh_enough_version() -> None:
    clock = SSPClock(0, heartbeat_timeout_s=None)
    clock.join(0)
    clock.tick(0, timeout_s=1)
    clock.tick(0, timeout_s=1)  # clock 2 needs version >= 1
    with pytest.raises(TimeoutError, match="learner version 0"):
        clock.wait_version(0, timeout_s=0.1)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(clock.wait_version(0, timeout_s=5)))
    t.start()
    time.sleep(0.05)
    clock.publish(1)
    t.join(5)
    assert got == [1]
    with pytest.raises(ValueError, match="never go back"):
        clock.publish(0)


def test_declaring_the_slowest_dead_releases_the_fast() -> None:
    # A dead worker stops holding others back; its later calls raise PeerLost.
    clock = SSPClock(0, heartbeat_timeout_s=None)
    clock.join(0)
    clock.join(1)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(clock.tick(0, timeout_s=5)))
    t.start()
    time.sleep(0.05)
    assert done == []
    assert clock.declare_dead(1)
    t.join(5)
    assert done == [1]
    assert clock.dead_workers() == [1]
    with pytest.raises(pangu_core.PeerLost, match="worker 1"):
        clock.tick(1, timeout_s=1)
    assert not clock.declare_dead(1)


def test_missed_heartbeats_expire_a_worker_during_a_wait() -> None:
    clock = SSPClock(0, heartbeat_timeout_s=0.2)
    clock.join(0)
    clock.join(1)  # never heard from again
    start = time.monotonic()
    assert clock.tick(0, timeout_s=5) == 1  # released once worker 1's heartbeat expires
    assert time.monotonic() - start >= 0.15
    assert 1 in clock.dead_workers()
    assert clock.live_workers() == [0]


def test_heartbeats_keep_a_worker_alive() -> None:
    clock = SSPClock(0, heartbeat_timeout_s=0.3)
    clock.join(0)
    for _ in range(5):
        time.sleep(0.1)
        clock.heartbeat(0)
    assert clock.reap() == []
    time.sleep(0.4)
    assert clock.reap() == [0]


def test_join_at_run_time_starts_at_the_slowest_clock() -> None:
    clock = SSPClock(2, heartbeat_timeout_s=None)
    clock.join(0)
    clock.join(1)
    clock.tick(1, timeout_s=1)
    for _ in range(3):
        clock.tick(0, timeout_s=1)
    assert clock.join(7) == 1
    clock.leave(1)
    clock.leave(7)
    assert clock.min_clock() == 3
    with pytest.raises(KeyError, match="worker 7 has not joined"):
        clock.leave(7)
    with pytest.raises(ValueError, match="already joined"):
        clock.join(0)
    clock.leave(0)
    clock.publish(5)
    assert clock.join(3) == 5  # nobody live: start at the learner's version
    assert clock.min_clock() == 5


def test_close_wakes_waiters() -> None:
    clock = SSPClock(0, heartbeat_timeout_s=None)
    clock.join(0)
    clock.join(1)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            clock.tick(0, timeout_s=5)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    clock.close()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], pangu_core.QueueClosed)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"staleness": -1}, "staleness"), ({"staleness": 1, "heartbeat_timeout_s": 0}, "heartbeat_timeout_s")],
)
def test_clock_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SSPClock(**kwargs)


def test_clock_calls_reject_bad_ids_and_timeouts() -> None:
    clock = SSPClock(1)
    with pytest.raises(ValueError, match="worker_id"):
        clock.join(-1)
    clock.join(0)
    with pytest.raises(ValueError, match="timeout_s"):
        clock.tick(0, timeout_s=-1)
    with pytest.raises(KeyError, match="has not joined"):
        clock.heartbeat(5)
