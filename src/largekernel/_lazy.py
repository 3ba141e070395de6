"""PEP 562 lazy exports, shared by the packages whose names should not import torch until used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    namespace: dict[str, Any], exports: Mapping[str, str], subpackages: Iterable[str] = ()
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module, absolute or relative to the
    package) or the subpackage ``name`` on first access, and caches it in ``namespace``."""
    package = namespace["__name__"]
    subpackages = frozenset(subpackages)

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif name in subpackages:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later look-ups skip __getattr__
        return value

    return __getattr__
