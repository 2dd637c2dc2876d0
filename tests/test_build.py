"""The package builds, reports how, and exposes its version from one place."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pangu_core
from pangu_core import _core

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_defined_once_and_matches_the_core():
    # The version string lives only in _version.py; the C++ core gets it from the build.
    text = (ROOT / "python" / "pangu_core" / "_version.py").read_text()
    assert re.search(r'__version__ = "([^"]+)"', text).group(1) == pangu_core.__version__
    assert pangu_core.build_info()["version"] == pangu_core.__version__
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]


def test_build_info_reports_compiler_threads_and_isa_paths():
    info = pangu_core.build_info()
    assert info["compiler"]
    assert info["threads_backend"] in ("openmp", "pool")  # the one executor of every parallel loop
    assert isinstance(info["openmp"], bool)
    assert info["isa_compiled"][0] == "scalar"
    assert info["isa_detected"] in info["isa_compiled"]
    assert info["isa_selected"] in pangu_core.available_isas()
    assert pangu_core.available_isas()[-1] == info["isa_detected"]


def test_set_isa_caps_dispatch_and_reset_restores_it():
    best = pangu_core.available_isas()[-1]
    try:
        pangu_core.set_isa("scalar")
        assert pangu_core.build_info()["isa_selected"] == "scalar"
    finally:
        pangu_core.reset_isa()
    assert pangu_core.build_info()["isa_selected"] == best


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="isa: expected one of"):
        pangu_core.set_isa("sse9")


def test_pangu_isa_environment_variable_caps_dispatch():
    code = "import pangu_core; print(pangu_core.build_info()['isa_selected'])"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PANGU_ISA": "scalar"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


def _import_with_isa(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import pangu_core"], env={**os.environ, "PANGU_ISA": name},
                          capture_output=True, text=True)


# An unknown PANGU_ISA fails the import, naming the variable and the known names, instead of being
# ignored (a typo would otherwise silently run another path than the one asked for).
def test_pangu_isa_unknown_name_fails_the_import():
    out = _import_with_isa("bogus")
    assert out.returncode != 0
    assert ("ImportError: PANGU_ISA: expected one of 'scalar', 'avx2', 'avx512', 'avx512_bf16', got 'bogus'"
            in out.stderr)


# A level the CPU cannot run is refused with the levels it can; the resolver takes the CPU's best
# level as an argument, so this runs on any machine.
def test_isa_beyond_the_cpu_is_refused():
    assert _core.testing.resolve_isa("avx2", "avx512") == "avx2"
    with pytest.raises(ValueError, match="^PANGU_ISA: this CPU runs scalar, avx2; it cannot run 'avx512'$"):
        _core.testing.resolve_isa("avx512", "avx2")
    with pytest.raises(ValueError, match="^PANGU_ISA: this CPU runs scalar; it cannot run 'avx512_bf16'$"):
        _core.testing.resolve_isa("avx512_bf16", "scalar")


# ... and the import itself refuses such a PANGU_ISA where this CPU lacks a level.
def test_pangu_isa_beyond_this_cpu_fails_the_import():
    beyond = [name for name in ("avx2", "avx512", "avx512_bf16") if name not in pangu_core.available_isas()]
    if not beyond:
        pytest.skip("this CPU runs every ISA path")
    out = _import_with_isa(beyond[-1])
    assert out.returncode != 0
    runs = ", ".join(pangu_core.available_isas())
    assert f"PANGU_ISA: this CPU runs {runs}; it cannot run '{beyond[-1]}'" in out.stderr


def test_set_num_threads_round_trips_and_validates():
    before = pangu_core.get_num_threads()
    try:
        pangu_core.set_num_threads(1)
        assert pangu_core.get_num_threads() == 1
        assert pangu_core.build_info()["threads"] == 1
    finally:
        pangu_core.set_num_threads(before)
    with pytest.raises(ValueError, match="n: expected a thread count >= 1"):
        pangu_core.set_num_threads(0)
    with pytest.raises(TypeError, match="n: expected an int"):
        pangu_core.set_num_threads(2.0)


def test_unknown_attribute_names_itself():
    with pytest.raises(AttributeError, match="no_such_thing"):
        pangu_core.no_such_thing  # noqa: B018


def test_import_does_not_load_torch():
    # Importing the package must stay cheap: torch and transformers load only when a part needs them.
    code = "import sys, pangu_core; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
