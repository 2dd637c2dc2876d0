"""The core's one executor (common/work_pool.h: the OpenMP team, or the core's own pool) and parallel_for on it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import pangu_core
from pangu_core import _core


BACKENDS = ["openmp", "pool"] if pangu_core.build_info()["openmp"] else ["pool"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every test that takes it runs once per executor this build has, then restores the default."""
    before = pangu_core.build_info()["threads_backend"]
    _core.testing.set_threads_backend(request.param)
    yield request.param
    _core.testing.set_threads_backend(before)


@pytest.fixture
def restore_threads():
    before = pangu_core.get_num_threads()
    yield
    pangu_core.set_num_threads(before)


def _check_cover(ranges: list[tuple[int, int]], n: int) -> None:
    """The ranges are disjoint, non-empty and cover [0, n) exactly."""
    position = 0
    for begin, end in sorted(ranges):
        assert begin == position and end > begin, ranges
        position = end
    assert position == n


# The work pool runs every group exactly once whatever the thread count, under repetition
# (helpers join late or not at all), and hands a body's exception to the caller.
@pytest.mark.sanitize
def test_work_pool_runs_each_group_once(backend):
    for _ in range(50):
        for threads in (1, 2, 3, 8):
            for groups in (0, 1, 2, 17, 300):
                assert _core.testing.work_pool_counts(groups, threads, -1) == [1] * groups
    for threads in (1, 2, 8):
        with pytest.raises(ValueError, match="group 5 failed"):
            _core.testing.work_pool_counts(100, threads, 5)
        assert _core.testing.work_pool_counts(100, threads, -1) == [1] * 100  # usable after a failure


# parallel_for covers [0, n) once with disjoint ranges, each at least `grain` long unless n is
# shorter, at most four per thread, and runs inline (one range) with one thread.
@pytest.mark.sanitize
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_parallel_for_covers_each_index_once(threads, backend, restore_threads):
    pangu_core.set_num_threads(threads)
    for n in (0, 1, 2, 7, 64, 1000, 100_003):
        for grain in (1, 3, 64, 5000):
            ranges = _core.testing.parallel_for_ranges(n, grain, -1)
            _check_cover(ranges, n)
            if n == 0:
                continue
            assert all(end - begin >= min(grain, n) for begin, end in ranges)
            assert len(ranges) <= threads * 4
            if threads == 1 or n < 2 * grain:
                assert ranges == [(0, n)]


# An exception in one range reaches the caller (the first one, if several throw), ranges not yet
# started are skipped, and the pool works normally afterwards.
@pytest.mark.sanitize
def test_parallel_for_hands_back_the_exception(backend, restore_threads):
    for threads in (1, 2, 8):
        pangu_core.set_num_threads(threads)
        for fail in (0, 500, 999):
            with pytest.raises(ValueError, match=f"index {fail} failed"):
                _core.testing.parallel_for_ranges(1000, 1, fail)
        _check_cover(_core.testing.parallel_for_ranges(1000, 1, -1), 1000)


# Callers on several Python threads at once (the GIL is released) share the pool: each call still
# runs every group and covers every index exactly once.
@pytest.mark.sanitize
def test_concurrent_callers_share_the_pool(backend, restore_threads):
    pangu_core.set_num_threads(3)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(60):
                groups = (seed * 7 + i) % 40
                assert _core.testing.work_pool_counts(groups, 3, -1) == [1] * groups
                _check_cover(_core.testing.parallel_for_ranges(100 + i, 1, -1), 100 + i)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[0]


# The pool (PANGU_THREADS=pool) does not spin: between calls its helpers sleep, so a process that
# makes short parallel calls now and then uses CPU only for the calls. A fresh interpreter without
# torch, so no other library's threads are counted.
def test_pool_helpers_sleep_between_calls():
    code = (
        "import time, pangu_core\n"
        "from pangu_core import _core\n"
        "pangu_core.set_num_threads(4)\n"
        "_core.testing.parallel_for_ranges(1000, 1, -1)\n"
        "cpu, wall = time.process_time(), time.perf_counter()\n"
        "for _ in range(50):\n"
        "    _core.testing.parallel_for_ranges(1000, 1, -1)\n"
        "    time.sleep(0.005)\n"
        "time.sleep(0.2)\n"
        "print(time.process_time() - cpu, time.perf_counter() - wall)\n"
    )
    env = {**os.environ, "PANGU_THREADS": "pool"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=120)
    cpu, wall = (float(x) for x in out.stdout.split())
    assert cpu < 0.2 * wall, (cpu, wall)


# OMP_NUM_THREADS stays the default thread count (users set it for every compute library).
def test_omp_num_threads_sets_the_default():
    code = "import pangu_core; print(pangu_core.get_num_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


# The default executor is the OpenMP team where the build has OpenMP; PANGU_THREADS picks one at
# import, and a bad value (or openmp without OpenMP) fails the import naming the variable.
def test_threads_backend_default_and_environment():
    info = pangu_core.build_info()
    assert info["threads_backend"] == ("openmp" if info["openmp"] else "pool")
    code = "import pangu_core; print(pangu_core.build_info()['threads_backend'])"
    for value, expected in (("pool", "pool"), ("", info["threads_backend"])):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PANGU_THREADS": value},
                             capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.strip() == expected
    bad = ["bogus"] + ([] if info["openmp"] else ["openmp"])
    for value in bad:
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PANGU_THREADS": value},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "PANGU_THREADS" in out.stderr, out.stderr
    with pytest.raises(ValueError, match="name: expected 'openmp' or 'pool'"):
        _core.testing.set_threads_backend("threads")


# A child forked after its parent ran parallel calls (and so started an OpenMP team, whose threads
# the child does not have) still runs them: it switches to the pool instead of waiting forever.
def test_forked_child_runs_parallel_calls():
    code = (
        "import os, pangu_core\n"
        "from pangu_core import _core\n"
        "pangu_core.set_num_threads(2)\n"
        "before = _core.testing.parallel_for_ranges(1000, 1, -1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = sorted(_core.testing.parallel_for_ranges(1000, 1, -1)) == sorted(before)\n"
        "    ok = ok and _core.testing.work_pool_counts(50, 2, -1) == [1] * 50\n"
        "    ok = ok and pangu_core.build_info()['threads_backend'] == 'pool'\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "0"
