"""Fixtures of the weight-sync tests: running one script as several local ranks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now (chosen by the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_ranks() -> Callable[..., list[str]]:
    """``run_ranks(script, rank_args, timeout)``: starts ``script`` once per argument list, waits for all.

    Returns one message per rank that failed (non-zero exit, or stdout not ending in "OK"); every
    process is killed if the wait fails, so no rank outlives the test.
    """

    def run(script: Path, rank_args: list[list[str]], timeout: float) -> list[str]:
        procs = [subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for args in rank_args]
        outputs = []
        try:
            for p in procs:
                outputs.append(p.communicate(timeout=timeout))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate(timeout=30)
        return [f"rank {r}: {out}\n{err[-2000:]}" for r, (p, (out, err)) in enumerate(zip(procs, outputs))
                if p.returncode != 0 or not out.strip().endswith("OK")]

    return run
