"""Register our models in timm's registry as soon as timm is imported, without importing it.

Imported by ``largekernel/__init__.py``; imports neither torch nor timm. If timm is already
imported, registration happens at once; otherwise a ``sys.meta_path`` finder waits for the
import of ``timm``, lets it finish, registers, and removes itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["install"]


def _register() -> None:
    try:
        from .timm import register_timm_models

        register_timm_models()
    except Exception as error:  # noqa: BLE001 - a failed registration must never break `import timm`
        warnings.warn(f"largekernel: could not register its models in timm ({error})", RuntimeWarning, stacklevel=2)


class _LoaderWrapper(importlib.abc.Loader):
    """Runs timm's own loader, then registers."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: timm's loader answers
        return getattr(self._loader, name)


class _TimmImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        _remove()  # once: the real finders answer from here on
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if find is not None and (spec := find(fullname, path, target)) is not None:
                    break
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderWrapper(spec.loader)
        return spec


_HOOK = _TimmImportHook()


def _remove() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def install() -> None:
    """Register now if timm is imported, else when it is (idempotent)."""
    if sys.modules.get("timm") is not None:
        _register()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
