"""Lazy re-exports for package ``__init__`` modules: a name is imported from its submodule on first use.

``__getattr__, __dir__, __all__ = lazy_exports(__name__, {"Name": "submodule", ...})`` keeps
``import pangu_core.<package>`` light (no torch or transformers until a name that needs them is read)
while ``from pangu_core.<package> import Name`` works as usual.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package`` re-exporting ``exports`` (name -> submodule)."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, names
