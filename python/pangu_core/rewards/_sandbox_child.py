"""The sandbox's in-child half: confine this process, then run a program or a Python test harness.

Run by path with ``python -I`` (standard library only, nothing from pangu_core is imported) as
``_sandbox_child.py SPEC_JSON``. The parent (``sandbox.py``) has already put it in a new session,
a fresh temporary folder, a scrubbed environment, and passes a status pipe as ``spec["status_fd"]``.
Here, in order: join the per-run pids cgroup, enter new network and pid namespaces when the kernel
permits, set rlimits, then fork the payload. In a new pid namespace the payload is its init (pid 1):
when it exits the kernel kills every process left in the namespace, daemons included, and nothing
in it can signal a process outside.

Status lines (JSON, one per line) on the status pipe: {"namespaces": {...}}, {"payload": pid},
one {"test": ...} per harness test, and finally {"exit": code} or {"signal": n}.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def _emit(fd, record):
    os.write(fd, (json.dumps(record) + "\n").encode())


def _unshare(flags):
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(flags) == 0


def _enter_namespaces(want_net):
    """Best effort: a new pid namespace always, a new network namespace if ``want_net``."""
    flags = CLONE_NEWPID | (CLONE_NEWNET if want_net else 0)
    if _unshare(flags):
        return {"pid": True, "net": want_net, "user": False}
    # Unprivileged callers may still create namespaces inside a new user namespace.
    if _unshare(flags | CLONE_NEWUSER):
        return {"pid": True, "net": want_net, "user": True}
    got_net = want_net and _unshare(CLONE_NEWNET)
    return {"pid": False, "net": got_net, "user": False}


def _user_process_count():
    """Processes of this real user now (RLIMIT_NPROC counts them all, not just this run's)."""
    uid = str(os.getuid())
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            count += line.split()[1] == uid
                            break
            except OSError:
                continue
    return count


def _set_limits(limits, in_cgroup):
    processes = limits["processes"]
    if not in_cgroup and os.getuid() != 0:
        # Without a pids cgroup the per-user limit must leave room for the user's other processes.
        processes += _user_process_count()
    pairs = [
        (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in pairs:
        # Hard limit too, so the payload cannot raise its soft limit back; the CPU hard limit is one
        # second later so the soft one first says why (SIGXCPU) before the kernel's SIGKILL.
        hard = value + 1 if which == resource.RLIMIT_CPU else value
        resource.setrlimit(which, (value, hard))


def _wait_with_timeout(pid, seconds):
    """waitpid(pid) with a deadline; returns the wait status, or None on timeout."""
    deadline = time.monotonic() + seconds
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.002))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_one_test(code, test, index, limits, status_fd):
    in_path, out_path, err_path = f"in_{index}.txt", f"out_{index}.txt", f"err_{index}.txt"
    with open(in_path, "w", encoding="utf-8") as f:
        f.write(test.get("stdin", ""))
    assert_code = compile(test["assert"], f"test_{index}.py", "exec") if test.get("assert") else None
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        os.setpgid(0, 0)
        for fd, path, mode in ((0, in_path, os.O_RDONLY), (1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, mode, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        code_out = 0
        try:
            namespace = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(code, namespace)
            if assert_code is not None:
                exec(assert_code, namespace)
        except SystemExit as stop:
            code_out = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException as error:  # the program's own failure, reported through its exit code
            try:
                sys.stderr.write(f"{type(error).__name__}: {error}\n")
            except BaseException:
                pass
            code_out = 3 if isinstance(error, AssertionError) else 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            code_out = code_out or 1
        os._exit(code_out)
    status = _wait_with_timeout(pid, limits["test_seconds"])
    timed_out = status is None
    if timed_out:
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass
        _, status = os.waitpid(pid, 0)
    record = {"test": index, "timeout": timed_out}
    if os.WIFSIGNALED(status):
        record["signal"] = os.WTERMSIG(status)
    else:
        record["exit"] = os.WEXITSTATUS(status)
    cap = limits["output_bytes"]
    for key, path in (("stdout", out_path), ("stderr", err_path)):
        try:
            with open(path, "rb") as f:
                data = f.read(cap + 1)
        except OSError:
            data = b""
        record[key] = data[:cap].decode("utf-8", "replace")
        record[key + "_truncated"] = len(data) > cap
    _emit(status_fd, record)


def _run_tests(spec, status_fd):
    with open(spec["program"], encoding="utf-8") as f:
        code = compile(f.read(), "solution.py", "exec")
    with open(spec["tests"], encoding="utf-8") as f:
        tests = json.load(f)
    for index, test in enumerate(tests):
        _run_one_test(code, test, index, spec["limits"], status_fd)
        _reap_orphans()
    return 0


def _run_program(spec, status_fd):
    """Runs argv as a child, so the program is never the namespace's init (which ignores signals
    such as SIGXCPU that have no handler), and reports how it ended."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_fd)
            os.execve(spec["argv"][0], spec["argv"], dict(os.environ))
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        _emit(status_fd, {"signal": os.WTERMSIG(status)})
    else:
        _emit(status_fd, {"exit": os.WEXITSTATUS(status)})
    return 0


def main():
    spec = json.loads(sys.argv[1])
    status_fd = spec["status_fd"]
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    _emit(status_fd, {"namespaces": _enter_namespaces(spec["isolate_network"])})
    _set_limits(spec["limits"], bool(spec.get("cgroup")))
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if spec["mode"] == "exec":
            os._exit(_run_program(spec, status_fd))
        os._exit(_run_tests(spec, status_fd))
    _emit(status_fd, {"payload": pid})
    _, status = os.waitpid(pid, 0)
    if spec["mode"] == "exec" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return 0  # the payload already reported the program's own ending
    if os.WIFSIGNALED(status):
        _emit(status_fd, {"signal": os.WTERMSIG(status)})
        return 128 + os.WTERMSIG(status)
    _emit(status_fd, {"exit": os.WEXITSTATUS(status)})
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
