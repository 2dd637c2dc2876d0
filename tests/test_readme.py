"""Every Python snippet in README.md runs as written, so the README cannot drift from the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python fenced block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_snippets():
    # Guards the extraction itself: a change of fence style must not silently turn this file into no tests.
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_snippet_runs_as_written(tmp_path, line, code):
    # Each snippet runs alone in a fresh interpreter, in an empty folder, as a reader would paste it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PANGU_TRACEBACK": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"README.md:{line} failed:\n{result.stderr[-3000:]}"
