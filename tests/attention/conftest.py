"""The attention tests' float64 reference (reference.py beside this file), importable by every test here.

Tests import it as ``from attention_reference import reference``. It is loaded by path because the
tests are not a package (pytest runs with --import-mode=importlib); it imports nothing from
pangu_core, so a wrong mask in the code under test cannot leak into the expected values.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

_NAME = "attention_reference"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, pathlib.Path(__file__).with_name("reference.py"))
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    sys.modules[_NAME] = _module
