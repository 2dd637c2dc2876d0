"""The registry of merge methods: what each method's kernel does and which inputs it needs.

A method is a :class:`MergeMethod` entry keyed by name. The six built-in methods are registered when
this module is imported; :func:`register_method` adds more, :func:`get_method` looks one up (an unknown
name lists the known ones). This module imports nothing else of :mod:`pangu_core.merge`, so every other
part of the package can import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: which kernel options it uses and which inputs it needs."""

    # the name configs use (``merge_method: ties``)
    name: str
    # whether the method reads a base model (task vectors are theta_i - base)
    needs_base: bool
    # how task vectors are thinned: "none", "magnitude" (TIES top-k trim) or "random" (DARE drops)
    sparsify: str = "none"
    # whether a sign is elected per element and only agreeing entries are averaged (TIES)
    sign_consensus: bool = False
    # whether the weighted sum is divided by the sum of the weights unless a config says otherwise
    default_normalize: bool = False
    # whether the method is spherical interpolation of the base and one model
    is_slerp: bool = False
    # one line for listings
    description: str = ""

    @property
    def elementwise(self) -> bool:
        """Whether each output element depends only on the inputs at its own position, so a tensor
        may be merged slice by slice (not slerp's global angle, not a top-k magnitude trim)."""
        return not self.is_slerp and self.sparsify != "magnitude"


_METHODS: dict[str, MergeMethod] = {}


def register_method(method: MergeMethod) -> MergeMethod:
    """Adds ``method`` to the registry and returns it; a second method of the same name is an error."""
    if not isinstance(method, MergeMethod):
        raise TypeError(f"method: expected a MergeMethod, got {type(method).__name__}")
    if method.name in _METHODS:
        raise ValueError(f"merge method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``; an unknown name raises ValueError listing the known ones."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method: unknown merge method {name!r}; known: {', '.join(methods())}") from None


def methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_METHODS)


register_method(MergeMethod("linear", False, default_normalize=True, description="weighted average"))
register_method(MergeMethod("task_arithmetic", True, description="base + lambda * sum w_i (theta_i - base)"))
register_method(MergeMethod("ties", True, "magnitude", True, True, description="trim, elect sign, disjoint mean"))
register_method(MergeMethod("dare_linear", True, "random", description="random drop and rescale, then sum"))
register_method(MergeMethod("dare_ties", True, "random", True, description="random drop and rescale, sign election"))
register_method(MergeMethod("slerp", True, is_slerp=True, description="spherical interpolation of two models"))
