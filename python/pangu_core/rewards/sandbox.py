"""A process sandbox for untrusted programs: limits, namespaces, a wall clock, and a clean teardown.

Each run gets: a new session (its own process group), a fresh temporary folder that is also its
HOME, TMPDIR and working directory and is deleted afterwards, a scrubbed environment, rlimits on CPU
time, address space, file size, open files and processes, capped output read incrementally, a
wall-clock deadline, and, when the kernel permits, new pid, network and mount namespaces with a
read-only view of everything outside its folder.

What holds where (documented, not assumed):

* **Processes.** RLIMIT_NPROC counts all processes of the real user and is ignored for root, so a
  per-run pids cgroup (v1 ``pids`` controller or v2 with ``pids.max``) is used whenever it can be
  created; ``process_limit_mechanism()`` says which mechanism holds. With neither (root without a
  writable cgroup) no process limit holds and the fork-bomb defence is only CPU/memory limits.
* **Descendants.** Each test's processes end with that test: after every test (and after an
  ``argv`` program) the payload kills all its descendants and reaps them before the next test
  starts. The payload is init of the run's pid namespace (kill(-1) there reaches every other
  process of the run) or else a child subreaper (PR_SET_CHILD_SUBREAPER), so a daemon that
  double-forks and calls setsid is still below it. Teardown of the run then kills the session's
  process group, every process of the run's cgroup, the payload by pid, and every process carrying
  the run's marker in its environment (a /proc scan). In a new pid namespace the kernel also kills
  everything left in it once the payload (its init) exits. Only a program that kills the payload
  itself (possible without a pid namespace) can leave orphans that none of the above but the
  cgroup or the marker finds.
* **Network.** A new network namespace has only a downed loopback: no connection can be made.
  Where namespaces are not permitted ``SandboxResult.namespaces["net"]`` is False and the program
  has the caller's network.
* **Files.** In a new mount namespace (made private, so nothing propagates back) every mount is
  remounted read-only except the run's folder (bound back read-write, nosuid, nodev), which is
  also HOME/TMPDIR/cwd. /dev is replaced by a minimal one (null, zero, full, random, urandom, fd
  links and a private /dev/shm tmpfs capped at ``file_bytes``), so no disk node can be opened; in
  a new pid namespace /proc is a fresh read-only mount showing only the run. Then every capability
  is dropped (bounding set included) and no_new_privs is set, so even root cannot remount, unmount,
  make device nodes or regain privileges by exec. RLIMIT_FSIZE caps every file. An unprivileged
  caller gets the same through a user namespace that maps its own uid/gid to themselves. Where mount
  namespaces are not permitted ``namespaces["mnt"]`` is False and the program may write wherever
  its user may (run as an unprivileged user then); ``namespaces["caps_dropped"]`` says whether the
  empty capability set holds.

No signals are used in the caller, so ``run_sandboxed`` works from any thread.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pangu_core.rewards.config import SandboxLimits

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_child.py")
MARKER_VARIABLE = "PANGU_SANDBOX_RUN"
# Runs get a new pid namespace where the kernel permits it; tests turn this off to exercise the
# fallback (the payload as child subreaper) on machines where the namespace would be permitted.
_NEW_PID_NAMESPACE = True


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run produced. ``reason`` is empty when the run ended by itself in time."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    reason: str
    wall_seconds: float
    namespaces: dict[str, bool] = field(default_factory=dict)
    tests: tuple[dict[str, Any], ...] = ()


def _pids_cgroup_root() -> str | None:
    """The folder under which this process may create pids-limited cgroups, or None."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mounts", encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    for _, controllers, path in memberships:
        if "pids" in controllers.split(","):
            for mount in mounts:
                if mount[2] == "cgroup" and "pids" in mount[3].split(","):
                    return os.path.join(mount[1], path.lstrip("/"))
    for hierarchy, controllers, path in memberships:
        if hierarchy == "0" and controllers == "":
            for mount in mounts:
                if mount[2] == "cgroup2":
                    base = os.path.join(mount[1], path.lstrip("/"))
                    try:
                        with open(os.path.join(base, "cgroup.subtree_control"), encoding="utf-8") as f:
                            if "pids" in f.read().split():
                                return base
                    except OSError:
                        pass
    return None


_CGROUP_STATE: dict[str, Any] = {}
_CGROUP_LOCK = threading.Lock()


def _cgroup_root_checked() -> str | None:
    """The pids cgroup root after a one-time probe that a child cgroup can really be made there."""
    with _CGROUP_LOCK:
        if "root" not in _CGROUP_STATE:
            root = _pids_cgroup_root()
            if root is not None:
                probe = os.path.join(root, f"pangu-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                try:
                    os.mkdir(probe)
                    ok = os.path.exists(os.path.join(probe, "pids.max"))
                    os.rmdir(probe)
                    root = root if ok else None
                except OSError:
                    root = None
            _CGROUP_STATE["root"] = root
        return _CGROUP_STATE["root"]


def process_limit_mechanism() -> str | None:
    """"cgroup-pids", "rlimit-nproc" (per user; holds for non-root users) or None (nothing holds)."""
    if _cgroup_root_checked() is not None:
        return "cgroup-pids"
    return "rlimit-nproc" if os.geteuid() != 0 else None


def _make_cgroup(run_id: str, processes: int) -> str | None:
    root = _cgroup_root_checked()
    if root is None:
        return None
    path = os.path.join(root, f"pangu-sandbox-{run_id}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w", encoding="utf-8") as f:
            f.write(str(processes))
    except OSError:
        return None
    return path


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _marked_processes(marker: str, prefix: bool = False) -> list[int]:
    """Pids whose environment carries run marker ``marker`` (or, with ``prefix``, one starting with it)."""
    needle = f"\0{MARKER_VARIABLE}={marker}".encode() + (b"" if prefix else b"\0")
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in b"\0" + f.read() + b"\0":
                    found.append(int(name))
        except OSError:
            continue
    return found


def sandboxed_processes(caller: int | None = None) -> list[int]:
    """Pids of live processes of the sandbox runs started by process ``caller`` (default: this one).

    Every run's marker is ``<caller pid>-<random>``, so this sees only the caller's own runs, never
    those of another process using the sandbox at the same time. Empty once every run has returned.
    """
    caller = os.getpid() if caller is None else caller
    if isinstance(caller, bool) or not isinstance(caller, int) or caller <= 0:
        raise ValueError(f"caller: expected a pid (an int > 0), got {caller!r}")
    return _marked_processes(f"{caller}-", prefix=True)


def _teardown(proc: subprocess.Popen, cgroup: str | None, payload: int | None, marker: str) -> None:
    """Kills every process of the run; returns once none is left (or after a bounded effort)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    if payload is not None:
        _kill_quietly(payload)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            try:
                pipe.close()
            except OSError:
                pass
    for _ in range(200):
        alive = []
        if cgroup is not None:
            try:
                with open(os.path.join(cgroup, "cgroup.procs"), encoding="utf-8") as f:
                    alive += [int(x) for x in f.read().split()]
            except OSError:
                pass
        else:
            alive += _marked_processes(marker)
        if not alive:
            break
        for pid in alive:
            _kill_quietly(pid)
        time.sleep(0.005)
    if cgroup is not None:
        for _ in range(200):
            try:
                os.rmdir(cgroup)
                break
            except OSError:
                time.sleep(0.005)


def _scrubbed_env(home: str, marker: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "TMPDIR": home, "TMP": home, "TEMP": home,
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1",
        MARKER_VARIABLE: marker,
    }


def run_sandboxed(
    limits: SandboxLimits,
    *,
    argv: list[str] | None = None,
    program: str | None = None,
    tests: list[dict[str, str]] | None = None,
    stdin: str = "",
) -> SandboxResult:
    """Runs ``argv`` (with ``stdin``) or a Python ``program`` against ``tests`` in a fresh sandbox.

    ``tests`` entries are {"stdin": ...} and/or {"assert": code run after the program in its
    namespace}; each runs in its own forked process with ``limits.test_seconds``. Thread-safe.
    """
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits: expected SandboxLimits, got {type(limits).__name__}")
    if (argv is None) == (program is None):
        raise ValueError("run_sandboxed: expected exactly one of argv or program")
    if program is not None and (not isinstance(tests, list) or not tests):
        raise ValueError("tests: expected a non-empty list of test dicts with a program")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin: expected str, got {type(stdin).__name__}")
    # The marker starts with our pid, so sandboxed_processes() can tell our runs from other callers'.
    run_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    home = tempfile.mkdtemp(prefix="pangu-sbx-")  # under tempfile.gettempdir() (TMPDIR)
    cgroup = _make_cgroup(run_id, limits.processes)
    status_r, status_w = os.pipe()
    spec: dict[str, Any] = {
        "status_fd": status_w, "cgroup": cgroup, "isolate_network": limits.isolate_network,
        "pid_namespace": _NEW_PID_NAMESPACE,
        "limits": {"cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes,
                   "file_bytes": max(limits.file_bytes, limits.output_bytes + 1),
                   "open_files": limits.open_files, "processes": limits.processes,
                   "output_bytes": limits.output_bytes, "test_seconds": limits.test_seconds},
    }
    if program is not None:
        with open(os.path.join(home, "solution.py"), "w", encoding="utf-8") as f:
            f.write(program)
        with open(os.path.join(home, "tests.json"), "w", encoding="utf-8") as f:
            json.dump(tests, f)
        spec.update(mode="tests", program="solution.py", tests="tests.json")
        budget = limits.startup_seconds + limits.test_seconds * len(tests)
    else:
        spec.update(mode="exec", argv=list(argv))
        budget = limits.startup_seconds + limits.test_seconds
    start = time.monotonic()
    proc = None
    payload = None
    try:
        interpreter = [sys.executable, "-I"] + ([] if limits.python_site else ["-S"])
        proc = subprocess.Popen(
            [*interpreter, _CHILD, json.dumps(spec)], cwd=home, env=_scrubbed_env(home, run_id),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(status_w,), start_new_session=True,
        )
        os.close(status_w)
        status_w = -1
        collected = _collect(proc, stdin.encode(), status_r, limits.output_bytes, start + budget)
        payload = collected["payload"]
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if proc is not None:
            _teardown(proc, cgroup, payload, run_id)
        elif cgroup is not None:
            os.rmdir(cgroup)
        shutil.rmtree(home, ignore_errors=True)
    return _result(collected, time.monotonic() - start)


def _collect(proc: subprocess.Popen, stdin: bytes, status_r: int, cap: int, deadline: float) -> dict[str, Any]:
    """Feeds stdin and reads stdout/stderr/status incrementally until exit, cap or deadline."""
    out = {"stdout": bytearray(), "stderr": bytearray(), "status": bytearray()}
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", status_r: "status"}
    state: dict[str, Any] = {"timed_out": False, "truncated": False, "payload": None}
    selector = selectors.DefaultSelector()
    for fd in names:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    if stdin:
        selector.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    sent = 0
    exited_at = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                state["timed_out"] = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            # A descendant that outlives the run can hold the pipes open: stop shortly after exit.
            if exited_at is not None and now - exited_at > 0.2:
                break
            for key, _ in selector.select(timeout=min(0.05, deadline - now)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        sent += os.write(fd, stdin[sent:sent + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(stdin)
                    if sent >= len(stdin):
                        selector.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                buffer = out[names[fd]]
                limit = cap if names[fd] != "status" else 64 * cap + (1 << 20)
                buffer += chunk[: max(0, limit + 1 - len(buffer))]
                if len(buffer) > limit:
                    state["truncated"] = True
                    del buffer[limit:]
                    raise _Stop
                if names[fd] == "status" and state["payload"] is None:
                    for line in bytes(buffer).splitlines():
                        if line.startswith(b'{"payload"'):
                            state["payload"] = json.loads(line)["payload"]
    except _Stop:
        pass
    finally:
        selector.close()
        if not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
    state.update({k: bytes(v) for k, v in out.items()})
    state["exit_code"] = proc.poll()
    return state


class _Stop(Exception):
    """Output cap reached: stop reading and tear the run down."""


def _result(state: dict[str, Any], wall: float) -> SandboxResult:
    records = []
    for line in state["status"].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    namespaces = next((r["namespaces"] for r in records if "namespaces" in r), {})
    tests = tuple(r for r in records if "test" in r)
    final = next((r for r in records if "exit" in r or "signal" in r), None)
    exit_code = final.get("exit") if final else None
    sig = final.get("signal") if final else None
    reason = ""
    if state["timed_out"]:
        reason = "timeout"
    elif state["truncated"]:
        reason = "output limit exceeded"
    elif final is None:
        reason = "sandbox killed"
    elif sig is not None:
        reason = signal_reason(sig)
    return SandboxResult(
        exit_code=exit_code, signal=sig, stdout=state["stdout"].decode("utf-8", "replace"),
        stderr=state["stderr"].decode("utf-8", "replace"), timed_out=state["timed_out"],
        output_truncated=state["truncated"], reason=reason, wall_seconds=wall,
        namespaces=namespaces, tests=tests,
    )


def signal_reason(sig: int) -> str:
    """Why a run or test that died by ``sig`` ended, in words a reward reason can carry."""
    if sig == signal.SIGXCPU:
        return "cpu time limit exceeded"
    if sig == signal.SIGXFSZ:
        return "output limit exceeded"
    if sig == signal.SIGKILL:
        return "killed"
    try:
        return f"killed by signal {signal.Signals(sig).name}"
    except ValueError:
        return f"killed by signal {sig}"
