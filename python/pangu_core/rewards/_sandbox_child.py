"""The sandbox's in-child half: confine this process, then run a program or a Python test harness.

Run by path with ``python -I`` (standard library only, nothing from pangu_core is imported) as
``_sandbox_child.py SPEC_JSON``. The parent (``sandbox.py``) has already put it in a new session,
a fresh temporary folder, a scrubbed environment, and passes a status pipe as ``spec["status_fd"]``.
Here, in order: join the per-run pids cgroup, enter new network and pid namespaces when the kernel
permits, set rlimits, then fork the payload. In a new pid namespace the payload is its init (pid 1):
when it exits the kernel kills every process left in the namespace, daemons included, and nothing
in it can signal a process outside. Without a pid namespace the payload makes itself a child
subreaper, so orphans of the program are re-parented to it either way. The payload then confines
the file system (a new mount namespace in which everything but the run's folder is read-only, see
``_confine_files``) and drops every capability before any untrusted code runs. After each test
(and after an argv program) it kills and reaps every descendant (``_end_descendants``), so no
process of one test runs on into the next.

Status lines (JSON, one per line) on the status pipe: {"payload": pid}, {"namespaces": {...}},
one {"test": ...} per harness test, and finally {"exit": code} or {"signal": n}.
"""

import ctypes
import errno
import json
import os
import re
import resource
import select
import signal
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE = 32, 1024, 2048, 4096, 8192
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
# Per-mount flags a bind remount must restate (inside a user namespace they are locked).
_KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
# Device nodes a program may need; everything else in the host's /dev (disks above all) stays out.
_DEVICES = ("null", "zero", "full", "random", "urandom")
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_CHILD_SUBREAPER = 36
# Bounded effort to end a test's processes (a fork bomb racing the kills is cut by its limits).
_END_SECONDS = 5.0
_CAP_VERSION_3 = 0x20080522

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _emit(fd, record):
    os.write(fd, (json.dumps(record) + "\n").encode())


def _unshare(flags):
    return _LIBC.unshare(flags) == 0


def _c_path(value):
    return None if value is None else os.fsencode(value)


def _mount(source, target, fstype, flags, data=None):
    """mount(2); raises OSError (with the errno and target) when it fails."""
    if _LIBC.mount(_c_path(source), _c_path(target), _c_path(fstype), flags, _c_path(data)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {target}: {os.strerror(code)}")


def _mount_points():
    """(mount point, per-mount options) of this mount namespace, in mount order."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            # Spaces and other odd characters appear as octal escapes (a space is \040).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            points.append((point, fields[5].split(",")))
    return points


def _kept_flags(options, flags):
    for option in options:
        flags |= _KEPT_FLAGS.get(option, 0)
    return flags


def _private_dev(staging, shm_bytes):
    """Builds a minimal /dev at ``staging`` (a few harmless nodes, links, a size-capped /dev/shm)
    and moves it over /dev, so no disk or other device of the host can be opened for writing."""
    os.mkdir(staging, 0o755)
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536")
    for name in _DEVICES:
        host = os.path.join("/dev", name)
        if os.path.exists(host):
            open(os.path.join(staging, name), "w").close()
            _mount(host, os.path.join(staging, name), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(staging, name))
    os.mkdir(os.path.join(staging, "shm"), 0o1777)
    _mount("tmpfs", os.path.join(staging, "shm"), "tmpfs", MS_NOSUID | MS_NODEV,
           f"mode=1777,size={max(shm_bytes, 4096)}")
    _mount(staging, "/dev", None, MS_MOVE)
    os.rmdir(staging)


def _confine_files(home, shm_bytes, new_proc):
    """In a new mount namespace: every mount read-only except the run's folder (bound back
    read-write, nosuid, nodev) and a private size-capped /dev/shm; a minimal /dev; and, when this
    process is init of a new pid namespace, a fresh read-only /proc that shows only the run.
    Returns True when all of it holds; False where the kernel does not permit it (then the run
    goes on with the caller's file system, HOME/TMPDIR/cwd still in its folder)."""
    if not _unshare(CLONE_NEWNS):
        return False
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount(home, home, None, MS_BIND)
        home_options = [options for point, options in _mount_points() if point == os.path.realpath(home)]
        _mount(None, home, None, _kept_flags(home_options[-1], MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV))
        os.chdir(home)  # the old cwd still refers to the mount that becomes read-only
        if os.path.isdir("/dev"):
            _private_dev(os.path.join(home, ".pangu-dev"), shm_bytes)
        if new_proc:
            _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        writable = {os.path.realpath(home), "/dev/shm"}
        for point, options in _mount_points():
            if point in writable or "ro" in options:
                continue
            try:
                _mount(None, point, None, _kept_flags(options, MS_BIND | MS_REMOUNT | MS_RDONLY))
            except OSError as error:
                # A mount point outside this root (or already gone) cannot be reached anyway.
                if error.errno != errno.ENOENT:
                    raise
        return True
    except OSError:
        return False


def _drop_capabilities():
    """Drops every capability (bounding, ambient, effective, permitted, inheritable) and sets
    no_new_privs, so that not even root can undo the mounts, trace or signal by capability, make
    device nodes, or regain privileges through exec. True when the empty set holds."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="utf-8") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL beyond the kernel's last; EPERM unprivileged
    _LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    dropped = _LIBC.capset(header, data) == 0
    _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            held = [line.split()[1] for line in f if line.startswith(("CapEff:", "CapPrm:", "CapBnd:"))]
    except OSError:
        return dropped
    return dropped and all(int(value, 16) == 0 for value in held)


def _map_own_ids(uid, gid):
    """Maps this user (and group) to itself in a new user namespace: without a mapping it could
    create no file (EOVERFLOW) and would count as the overflow user."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _enter_namespaces(want_net, want_pid=True):
    """Best effort: a new pid namespace (unless ``want_pid`` is false, which only tests of the
    fallback ask for), a new network namespace if ``want_net``."""
    flags = (CLONE_NEWPID if want_pid else 0) | (CLONE_NEWNET if want_net else 0)
    if not flags:
        return {"pid": False, "net": False, "user": False}
    if _unshare(flags):
        return {"pid": want_pid, "net": want_net, "user": False}
    # Unprivileged callers may still create namespaces inside a new user namespace.
    uid, gid = os.getuid(), os.getgid()
    if _unshare(flags | CLONE_NEWUSER):
        try:
            _map_own_ids(uid, gid)
        except OSError:
            pass  # unmapped: the run goes on, and the file-system confinement reports mnt=False
        return {"pid": want_pid, "net": want_net, "user": True}
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


def _descendants():
    """Pids of every live process below this one (from the parent links in /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                parent = int(f.read().rsplit(b")", 1)[1].split()[1])  # the name in () may hold spaces
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _end_descendants():
    """Kills every process this one left behind (a test's daemons, double-forked or not) and reaps
    them; returns once it has no child left, or after ``_END_SECONDS``.

    Every orphan below this process is re-parented to it: it is init of the run's pid namespace, or
    else a child subreaper (PR_SET_CHILD_SUBREAPER, set in ``main``). So "no child left" means no
    descendant left. As init, kill(-1) reaches every other process of the namespace at once;
    otherwise the descendants are found through /proc and killed until none is left.
    """
    deadline = time.monotonic() + _END_SECONDS
    while True:
        if os.getpid() == 1:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        else:
            for pid in _descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


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
    # Each test's processes end with it: nothing it started runs on into the next test (or writes
    # into this test's output after it was judged).
    _end_descendants()
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
    _end_descendants()
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
    namespaces = _enter_namespaces(spec["isolate_network"], spec.get("pid_namespace", True))
    _set_limits(spec["limits"], bool(spec.get("cgroup")))
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Orphans of the program come to the payload (when it is not init already), which ends them.
        _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        namespaces["mnt"] = _confine_files(os.getcwd(), spec["limits"]["file_bytes"], namespaces["pid"])
        namespaces["caps_dropped"] = _drop_capabilities()
        _emit(status_fd, {"namespaces": namespaces})
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
