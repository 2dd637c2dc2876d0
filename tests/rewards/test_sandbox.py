"""The sandbox survives each listed attack: reward 0 with a reason, nothing left running, caller unharmed."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from pangu_core.rewards.code import CodeVerifier
from pangu_core.rewards.config import CodeConfig, SandboxLimits
from pangu_core.rewards.sandbox import process_limit_mechanism, run_sandboxed
from pangu_core.rewards.types import CodeTest

# Tight limits: the machine is shared, so every attack is bounded well below what would hurt it.
LIMITS = SandboxLimits(test_seconds=1.0, startup_seconds=2.0, cpu_seconds=1, memory_bytes=256 << 20,
                       file_bytes=1 << 20, processes=16, open_files=64, output_bytes=1 << 14)
VERIFIER = CodeVerifier(CodeConfig(workers=1, limits=LIMITS))
EXPECT_OK = [CodeTest(stdin="", expected_stdout="ok")]


# Invariant for every test here: no sandboxed process and no sandbox folder outlives its run
# (checked for this session's own runs only; see conftest.own_sandbox_runs).
pytestmark = pytest.mark.usefixtures("own_sandbox_runs")


def _attack(program: str) -> tuple[float, str]:
    result = VERIFIER.score_program(program, EXPECT_OK)
    return result.score, result.reason


def test_honest_program_passes():
    # A correct program scores 1: the defences do not break ordinary code.
    assert _attack("print('ok')") == (1.0, "")


@pytest.mark.skipif(process_limit_mechanism() is None,
                    reason="no process limit can hold here (root without a writable pids cgroup)")
def test_fork_bomb_is_contained():
    score, reason = _attack("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert score == 0.0 and reason


@pytest.mark.skipif(process_limit_mechanism() is None,
                    reason="no process limit can hold here (root without a writable pids cgroup)")
def test_process_limit_holds():
    # The limit the fork bomb relies on is real: a run cannot hold more than `processes` at once.
    code = ("import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
            "    n += 1\nprint(n)\n")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    assert result.exit_code == 0 and 0 < int(result.stdout) < LIMITS.processes


def test_memory_bomb_fails_cleanly():
    score, reason = _attack("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n")
    # MemoryError at the address-space limit (a wall-clock cut only if the machine is overloaded).
    assert score == 0.0 and ("MemoryError" in reason or reason == "test 0: timeout"), reason


def test_infinite_loop_is_cut():
    score, reason = _attack("while True:\n    pass\n")
    assert score == 0.0 and reason in ("test 0: timeout", "test 0: cpu time limit exceeded")


def test_gigabytes_of_output_are_capped():
    score, reason = _attack("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert score == 0.0 and reason == "test 0: output limit exceeded"


def test_gigabytes_on_a_pipe_are_capped():
    # The exec mode reads the pipe incrementally and stops at the cap.
    code = "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n"
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    assert result.output_truncated and result.reason == "output limit exceeded"
    assert len(result.stdout) <= LIMITS.output_bytes


def test_writing_home_stays_in_the_temporary_folder(tmp_path):
    real_home = os.path.expanduser("~")
    name = f"pangu_probe_{os.getpid()}"
    code = (f"import os\nopen(os.path.expanduser('~/{name}'), 'w').write('x')\n"
            "print(os.environ['HOME'])\n")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    home = result.stdout.strip()
    assert result.exit_code == 0 and home.startswith(os.path.dirname(home)) and "pangu-sbx-" in home
    assert not os.path.exists(os.path.join(real_home, name))
    assert not os.path.exists(home)  # the run's folder (its HOME) is deleted afterwards
    score, reason = _attack(f"import os\nopen(os.path.expanduser('~/{name}'), 'w').write('x')\n")
    assert score == 0.0 and reason == "test 0: wrong answer"
    assert not os.path.exists(os.path.join(real_home, name))


def test_killing_its_parent_harms_nobody():
    score, reason = _attack("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(30)\n")
    assert score == 0.0 and reason
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", "import os; os.kill(os.getppid(), 9); os.killpg(0, 9)"])
    assert result.exit_code != 0 and result.reason
    assert os.getppid() > 1  # the caller and its own parent are alive


def test_double_fork_daemon_does_not_outlive_the_run():
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.close(1); os.close(2)\n        time.sleep(60)\n    os._exit(0)\nprint('daemonised')\n")
    score, reason = _attack(code)
    assert score == 0.0 and reason == "test 0: wrong answer"
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    assert result.stdout.strip() == "daemonised"
    # The own_sandbox_runs fixture asserts that no process of this run is left.


def test_sleeping_past_the_timeout_is_cut():
    score, reason = _attack("import time\ntime.sleep(60)\nprint('ok')\n")
    assert score == 0.0 and reason == "test 0: timeout"
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", "import time; time.sleep(60)"])
    assert result.timed_out and result.reason == "timeout"


def test_reading_stdin_forever_ends():
    score, reason = _attack("import sys\nwhile True:\n    sys.stdin.read()\n")
    assert score == 0.0 and reason in ("test 0: timeout", "test 0: cpu time limit exceeded")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", "import sys\nwhile True: sys.stdin.buffer.read(1)"],
                           stdin="abc")
    assert result.reason in ("timeout", "cpu time limit exceeded")


def test_network_connection_is_refused():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\nprint('ok')\n"
        result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
        if not result.namespaces.get("net"):
            pytest.skip("network namespaces are not permitted here; the sandbox reports net=False")
        assert result.exit_code != 0 and "ok" not in result.stdout
        score, reason = _attack(code)
        assert score == 0.0 and "runtime error" in reason
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection ever reached the caller's listening socket
    finally:
        server.close()


def test_front_door_errors():
    with pytest.raises(TypeError, match="limits"):
        run_sandboxed("fast", argv=["/bin/true"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        run_sandboxed(LIMITS)
    with pytest.raises(ValueError, match="tests"):
        run_sandboxed(LIMITS, program="print(1)", tests=[])
    with pytest.raises(ValueError, match="memory_bytes"):
        SandboxLimits(memory_bytes=1 << 20)


def test_teardown_without_a_cgroup_finds_escaped_daemons(monkeypatch):
    # Where no pids cgroup can be made, the /proc scan for the run's marker must still find a
    # daemon that left the session (and the pid namespace, when there is one, kills it as well).
    from pangu_core.rewards import sandbox

    monkeypatch.setitem(sandbox._CGROUP_STATE, "root", None)
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.close(1); os.close(2)\n        time.sleep(60)\n    os._exit(0)\nprint('daemonised')\n")
    result = run_sandboxed(LIMITS, argv=[sys.executable, "-c", code])
    assert result.stdout.strip() == "daemonised" and result.exit_code == 0
    # The own_sandbox_runs fixture asserts that nothing with this session's run markers is left.
