"""Register the largekernel models in timm's registry, so ``timm.create_model('van_b0')`` works.

timm is optional and never imported by ``import largekernel``. Registration happens

* on demand: ``largekernel.integrations.timm.register_timm_models()``, or
* automatically at the next ``largekernel.create_model`` call once the user has imported timm
  (a check of ``sys.modules``, free when timm is absent).

Where timm cannot be imported (not installed, or its own imports fail), nothing is registered.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from . import _timm_entrypoints

__all__ = ["register_if_timm_imported", "register_timm_models"]

_REGISTERED: list[str] = []


def _timm_factory(name: str) -> Callable[..., nn.Module]:
    def factory(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from ..models.registry import create_model

        for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(timm_only, None)  # timm's own bookkeeping; our weights' location lives on the model
        return create_model(name, pretrained=pretrained, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = _timm_entrypoints.__name__
    setattr(_timm_entrypoints, name, factory)  # timm lists it in that module's __all__: keep the two in step
    factory.__doc__ = f"largekernel's {name} (see largekernel.create_model)."
    return factory


def register_timm_models() -> list[str]:
    """Register every largekernel model in timm's registry; return the names registered.

    Returns an empty list where timm cannot be imported. Names timm already has (from another
    source) are left alone, with a warning.
    """
    if _REGISTERED:
        return list(_REGISTERED)
    try:
        from timm.models import is_model as timm_is_model
        from timm.models import register_model as timm_register_model
    except Exception:  # noqa: BLE001 - timm missing, or timm's own imports (torchvision) failing
        return []
    from ..models.registry import list_models

    skipped = []
    for name in list_models():
        if timm_is_model(name):
            skipped.append(name)
            continue
        timm_register_model(_timm_factory(name))
        _REGISTERED.append(name)
    if skipped:
        warnings.warn(f"timm already has models named {skipped}; left timm's own", UserWarning, stacklevel=2)
    return list(_REGISTERED)


def register_if_timm_imported() -> None:
    """Register once the user has imported timm themselves; never imports it."""
    if not _REGISTERED and sys.modules.get("timm") is not None:
        register_timm_models()
