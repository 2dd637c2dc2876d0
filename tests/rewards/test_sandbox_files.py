"""A sandboxed program, even a hostile one running as root, writes nothing outside its own folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig, SandboxLimits
from pangu_core.rewards.sandbox import _CHILD, run_sandboxed
from pangu_core.rewards.types import CodeTest

LIMITS = SandboxLimits(test_seconds=2.0, startup_seconds=3.0, cpu_seconds=2, memory_bytes=512 << 20,
                       file_bytes=1 << 20, processes=16, open_files=64, output_bytes=1 << 15)
_SYSTEM_TMP = tempfile.gettempdir()  # before own_sandbox_runs points tempfile at a test's own folder
# No process or folder of this session's sandbox runs may outlive them (see conftest.own_sandbox_runs).
pytestmark = pytest.mark.usefixtures("own_sandbox_runs")

# Tries each path and reports, per path, "written" or the error's errno name.
_PROBE = """
import errno, json, sys
out = {}
for path in json.loads(sys.argv[1]):
    try:
        with open(path, "w") as f:
            f.write("escaped")
        out[path] = "written"
    except OSError as error:
        out[path] = errno.errorcode.get(error.errno, str(error.errno))
print(json.dumps(out))
"""


def _outside_paths(tmp_path) -> list[str]:
    unique = f"pangu_escape_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    return [
        str(tmp_path.parent / unique),                                  # beside the test's own folder
        os.path.join("/tmp", unique),
        os.path.join(os.path.expanduser("~"), unique),                 # the caller's real HOME
        os.path.join(os.path.dirname(os.path.abspath(__file__)), unique),  # the source tree
        os.path.join("/dev/shm", unique),
    ]


def _skip_without_mnt(result) -> None:
    if not result.namespaces.get("mnt"):
        pytest.skip("mount namespaces are not permitted here; the sandbox reports mnt=False")


def test_absolute_writes_outside_the_folder_fail(tmp_path):
    paths = _outside_paths(tmp_path)
    try:
        result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", _PROBE, json.dumps(paths)])
        _skip_without_mnt(result)
        assert result.exit_code == 0, result.stderr
        outcome = json.loads(result.stdout)
        for path in paths:
            assert not os.path.exists(path), f"{path} was written outside the sandbox"
            if not path.startswith("/dev/shm/"):
                assert outcome[path] == "EROFS", (path, outcome[path])
        # /dev/shm is a private size-capped tmpfs: a write may succeed there but never reaches the host.
        assert outcome[paths[-1]] in ("written", "EROFS", "ENOSPC")
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


def test_hostile_program_scores_zero_and_leaves_nothing(tmp_path):
    paths = _outside_paths(tmp_path)[:4]
    program = "".join(f"open({p!r}, 'w').write('escaped')\n" for p in paths) + "print('ok')\n"
    verifier = CodeVerifier(CodeConfig(workers=1, limits=LIMITS))
    try:
        probe = run_sandboxed(LIMITS, argv=[sys.executable, "-c", "pass"])
        _skip_without_mnt(probe)
        result = verifier.score_program(program, [CodeTest(stdin="", expected_stdout="ok")])
        assert result.score == 0.0 and "runtime error" in result.reason and "Read-only" in result.reason
        assert not any(os.path.exists(p) for p in paths)
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


def test_ordinary_program_reads_the_stdlib_and_writes_its_folder():
    code = ("import decimal, email.parser, fractions, json, os, tempfile\n"
            "open('out.txt', 'w').write('here')\n"
            "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write('x')\n"
            "open('/dev/null', 'w').write('discarded')\n"
            "print(json.dumps({'mine': open('out.txt').read(), 'tmp': os.path.exists(f.name),\n"
            "                  'random': len(open('/dev/urandom', 'rb').read(8)),\n"
            "                  'fds': len(os.listdir('/proc/self/fd')) > 0}))\n")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"mine": "here", "tmp": True, "random": 8, "fds": True}
    verifier = CodeVerifier(CodeConfig(workers=1, limits=LIMITS))
    program = "import statistics\nopen('f.txt', 'w').write(input())\nprint(open('f.txt').read() * 2)\n"
    scored = verifier.score_program(program, [CodeTest(stdin="ab\n", expected_stdout="abab")])
    assert (scored.score, scored.reason) == (1.0, "")


def test_root_cannot_undo_the_confinement():
    # Every capability is dropped, so remounting read-write, unmounting, or making a device node
    # (to reach a disk) fails even for root; only harmless devices are in /dev.
    code = ("import ctypes, errno, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            "out['remount'] = libc.mount(None, b'/', None, 32 | 4096, None) == 0\n"
            "out['umount_proc'] = libc.umount2(b'/proc', 2) == 0\n"
            "try:\n    os.mknod('disk', 0o600 | 0o60000, os.makedev(254, 0))\n    out['mknod'] = True\n"
            "except OSError:\n    out['mknod'] = False\n"
            "out['dev'] = sorted(os.listdir('/dev'))\n"
            "out['caps'] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
            "print(json.dumps(out))\n")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    _skip_without_mnt(result)
    assert result.namespaces.get("caps_dropped") is True
    out = json.loads(result.stdout)
    assert out["remount"] is False and out["umount_proc"] is False and out["mknod"] is False
    assert set(out["dev"]) <= {"null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm"}
    assert int(out["caps"][0], 16) == 0


def test_proc_shows_only_the_run():
    code = "import json, os; print(json.dumps(sorted(os.listdir('/proc'))))"
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    _skip_without_mnt(result)
    if not result.namespaces.get("pid"):
        pytest.skip("pid namespaces are not permitted here; /proc is the caller's, read-only")
    # The payload (the namespace's init) and the program it started; nothing of the caller's.
    assert [n for n in json.loads(result.stdout) if n.isdigit()] == ["1", "2"]


def test_confinement_failure_falls_back_cleanly():
    # A step that the kernel refuses (here: binding a folder that does not exist) reports False
    # instead of raising, so the run goes on and the result says mnt=False.
    code = ("import importlib.util, sys\nspec = importlib.util.spec_from_file_location('child', sys.argv[1])\n"
            "child = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(child)\n"
            "print(child._confine_files('/nonexistent/pangu-sbx', 4096, False))\n")
    done = subprocess.run([sys.executable, "-I", "-c", code, _CHILD], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


_UNPRIVILEGED = """
import ctypes, importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("child", sys.argv[1])
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
home, target = sys.argv[2], sys.argv[3]
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
# Changing uid made this process non-dumpable (its /proc files root's); a fresh exec would not be.
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
os.chdir(home)
namespaces = child._enter_namespaces(True)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    namespaces["mnt"] = child._confine_files(home, 65536, namespaces["pid"])
    namespaces["caps_dropped"] = child._drop_capabilities()
    out = {"namespaces": namespaces}
    for path in (target, "mine.txt"):
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "written"
        except OSError as error:
            out[path] = error.errno
    os.write(write, json.dumps(out).encode())
    os._exit(0)
os.close(write)
os.waitpid(pid, 0)
print(os.read(read, 1 << 16).decode())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user; unprivileged callers "
                    "exercise this path in every other test")
def test_unprivileged_caller_gets_the_same_confinement(tmp_path):
    # An unprivileged caller goes through a user namespace (mapped to itself); /tmp is writable for
    # every user, so only the confinement keeps the write out.
    home = tempfile.mkdtemp(prefix="pangu-unpriv-", dir=_SYSTEM_TMP)  # a folder user 65534 can reach
    target = os.path.join("/tmp", f"pangu_escape_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    try:
        os.chown(home, 65534, 65534)
        done = subprocess.run([sys.executable, "-I", "-c", _UNPRIVILEGED, _CHILD, home, target],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        if not out["namespaces"].get("mnt"):
            pytest.skip("user and mount namespaces are not permitted for unprivileged users here (mnt=False)")
        assert out["namespaces"]["caps_dropped"] is True
        assert out[target] == errno.EROFS and out["mine.txt"] == "written"
        assert not os.path.exists(target)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if os.path.exists(target):
            os.unlink(target)
