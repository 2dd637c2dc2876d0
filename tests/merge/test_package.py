"""The merge package: each module imports alone, without cycles, and the public names are re-exported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pangu_core.merge as merge

MODULES = ["registry", "mergekit_yaml", "config", "in_memory", "checkpoint", "files", "cli"]
PACKAGE = Path(merge.__file__).parent


# Every module is a file of the package; none imports the package's __init__ (`from pangu_core.merge
# import X` or `import pangu_core.merge`), so the package's modules form no import cycle.
def test_modules_do_not_import_the_package_init():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(MODULES)
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "pangu_core.merge":
                pytest.fail(f"{module}.py imports from pangu_core.merge's __init__: {ast.unparse(node)}")
            if isinstance(node, ast.Import) and any(a.name == "pangu_core.merge" for a in node.names):
                pytest.fail(f"{module}.py imports pangu_core.merge: {ast.unparse(node)}")


# Each module imports on its own in a fresh interpreter (an import cycle would fail one of them).
@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import pangu_core.merge.{module}"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# The public names of the old flat modules (merge.py's __all__, merge_files' functions) stay importable.
def test_public_names():
    for name in ["MergeMethod", "ModelSpec", "Override", "CopyRule", "MergeConfig", "register_method", "get_method",
                 "methods", "merge_tensor", "merge_one", "merge_state_dicts", "merge_checkpoints",
                 "check_same_tensors", "tensor_id_of", "DTYPES", "Checkpoint", "load_checkpoint", "save_checkpoint",
                 "plan_shards", "file_sha256", "file_xxh64", "INDEX_NAME", "RECORD_NAME", "INPUT_HASHES"]:
        assert name in merge.__all__ and hasattr(merge, name), name
    from pangu_core.tensors import DTYPES

    assert merge.DTYPES is DTYPES
