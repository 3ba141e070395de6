"""Register the largekernel models in timm's registry, so ``timm.create_model('van_b0')`` works.

``import largekernel`` arranges this without importing timm (see ``_timm_hook``): at once if
timm is already imported, else right after ``import timm`` finishes. Each model's pretrained
cfgs go into timm's pretrained-cfg registry (``timm.models.get_pretrained_cfg('van_b0')``), and
the entry points build through timm's ``build_model_with_cfg`` with our
``checkpoint_filter_fn``, so ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)``
and ``checkpoint_path=`` accept the released, HuggingFace and mmpretrain layouts.

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
_PRETRAINED_CFG_FIELDS_OURS = ("architecture", "tag")  # timm's register_model sets these itself


def _timm_factory(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return factory(pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = _timm_entrypoints.__name__
    entrypoint.__doc__ = factory.__doc__
    setattr(_timm_entrypoints, name, entrypoint)  # timm lists it in that module's __all__: keep the two in step
    return entrypoint


def register_timm_models() -> list[str]:
    """Register every largekernel model and its pretrained cfgs in timm; return the names registered.

    Returns an empty list where timm cannot be imported. Names timm already has (from another
    source) are left alone, with a warning.
    """
    if _REGISTERED:
        return list(_REGISTERED)
    try:
        from timm.models import generate_default_cfgs
        from timm.models import is_model as timm_is_model
        from timm.models import register_model as timm_register_model
    except Exception:  # noqa: BLE001 - timm missing, or timm's own imports (torchvision) failing
        return []
    from ..models._builder import all_pretrained_cfgs
    from ..models.registry import _MODEL_FACTORIES, list_models

    cfgs: dict[str, Any] = {
        name_tag: {k: v for k, v in cfg.items() if k not in _PRETRAINED_CFG_FIELDS_OURS}
        for name_tag, cfg in all_pretrained_cfgs().items()
    }
    _timm_entrypoints.default_cfgs = generate_default_cfgs(cfgs)
    skipped = []
    for name in list_models():
        if timm_is_model(name):
            skipped.append(name)
            continue
        timm_register_model(_timm_factory(name, _MODEL_FACTORIES[name]))
        _REGISTERED.append(name)
    if skipped:
        warnings.warn(f"timm already has models named {skipped}; left timm's own", UserWarning, stacklevel=2)
    return list(_REGISTERED)


def register_if_timm_imported() -> None:
    """Register once the user has imported timm themselves; never imports it."""
    if not _REGISTERED and sys.modules.get("timm") is not None:
        register_timm_models()
