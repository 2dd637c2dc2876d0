"""Each test's processes end with that test: a daemon started by test 0 is gone before test 1 runs."""

from __future__ import annotations

import os
import uuid

import pytest

from pangu_core.rewards import sandbox
from pangu_core.rewards.config import SandboxLimits
from pangu_core.rewards.sandbox import run_sandboxed

LIMITS = SandboxLimits(test_seconds=5.0, startup_seconds=5.0, cpu_seconds=2, memory_bytes=256 << 20, processes=16)

# Test 0 ("start") double-forks a daemon that leaves the session (setsid), drops the environment
# (so no marker of the run is left on it) and appends to beat.txt every 10 ms for 20 s. Test 1
# ("check") says whether that daemon is still alive and whether the file still grows.
PROGRAM = """
import os, sys, time
DAEMON = ("import time\\nend = time.monotonic() + 20\\nwhile time.monotonic() < end:\\n"
          "    with open('beat.txt', 'a') as f:\\n        f.write('x')\\n    time.sleep(0.01)\\n")
if sys.stdin.read().strip() == "start":
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        with open("daemon.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("daemon.tmp", "daemon.pid")
        os.execve(sys.executable, [sys.executable, "-c", DAEMON, "TOKEN"], {})
    os.waitpid(first, 0)
    deadline = time.monotonic() + 4
    while not os.path.exists("beat.txt") and time.monotonic() < deadline:
        time.sleep(0.01)
    print("started" if os.path.exists("beat.txt") else "no daemon")
else:
    pid = int(open("daemon.pid").read())
    try:
        os.kill(pid, 0)
        alive = "alive"
    except ProcessLookupError:
        alive = "dead"
    size = os.path.getsize("beat.txt")
    time.sleep(0.3)
    print(alive, "growing" if os.path.getsize("beat.txt") > size else "still")
"""


def _processes_with(token: str) -> list[int]:
    """Pids on this machine whose command line carries ``token`` (unique to one test run)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                continue
    return found


@pytest.mark.usefixtures("own_sandbox_runs")
@pytest.mark.parametrize("pid_namespace", [True, False], ids=["pid-namespace", "subreaper"])
def test_a_daemon_of_one_test_is_dead_before_the_next(pid_namespace, monkeypatch):
    # With a pid namespace the payload is its init; without one (forced here) it is a child
    # subreaper. Either way the double-forked, setsid, marker-less daemon ends with test 0, and
    # nothing of it is left once the run returns.
    monkeypatch.setattr(sandbox, "_NEW_PID_NAMESPACE", pid_namespace)
    token = f"pangu-daemon-{uuid.uuid4().hex}"
    result = run_sandboxed(LIMITS, program=PROGRAM.replace("TOKEN", token),
                           tests=[{"stdin": "start"}, {"stdin": "check"}])
    assert result.reason == "", result
    if not pid_namespace:
        assert result.namespaces["pid"] is False
    started, checked = result.tests
    assert started["stdout"].strip() == "started", started
    assert checked["stdout"].strip() == "dead still", checked
    assert _processes_with(token) == []
