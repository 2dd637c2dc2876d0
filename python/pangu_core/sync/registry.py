"""The weight-sync transport registry: transports by name, built-in ones imported on first use.

A transport is a class with two classmethods, ``open_publisher(config, layout, layout_text)`` and
``open_subscriber(config, address)``, that return endpoints (see :mod:`pangu_core.sync.store` for
the endpoint methods). :func:`register_transport` adds one under a name; ``SyncConfig(transport=
name)`` then selects it. The built-in transports are known by name before their modules are
imported, so listing or validating names never imports torch.distributed code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# Built-in transport name -> the module that registers it (imported when the transport is asked for).
_BUILTIN: dict[str, str] = {
    "inprocess": "pangu_core.sync.store",
    "shm": "pangu_core.sync.store",
    "torch_distributed": "pangu_core.sync.distributed",
}
_TRANSPORTS: dict[str, Any] = {}


def register_transport(name: str) -> Callable[[Any], Any]:
    """Class decorator: makes a transport available as ``SyncConfig(transport=name)``.

    ``name`` is a non-empty string; registering a name again replaces the earlier class.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty transport name, got {name!r}")

    def wrap(cls: Any) -> Any:
        for method in ("open_publisher", "open_subscriber"):
            if not callable(getattr(cls, method, None)):
                raise TypeError(f"transport {name!r}: {getattr(cls, '__name__', cls)!r} has no {method}() classmethod")
        _TRANSPORTS[name] = cls
        return cls

    return wrap


def transports() -> list[str]:
    """Names of the known transports (registered and built-in), sorted; imports nothing."""
    return sorted(set(_TRANSPORTS) | set(_BUILTIN))


def get_transport(name: str) -> Any:
    """The transport class registered as ``name``; ValueError listing the known ones otherwise.

    A built-in transport's module is imported here, on its first use.
    """
    if name not in _TRANSPORTS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _TRANSPORTS:
        raise ValueError(f"transport: unknown transport {name!r}; known: {', '.join(transports())}")
    return _TRANSPORTS[name]


__all__ = ["register_transport", "transports", "get_transport"]
