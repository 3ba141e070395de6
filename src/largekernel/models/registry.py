"""Model registry: ``create_model(name, ...)`` and ``list_models(pattern)``, in the style of timm.

Each family module (``van.py``, ``smt.py``) decorates one tiny factory per variant with
:func:`register_model`; the factory's name is the model name.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigurationError

__all__ = ["create_model", "is_model", "list_models", "register_model"]

_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``factory(pretrained=False, **kwargs)`` under its function name (``van_b0``...). Returns it unchanged."""
    name = factory.__name__
    if name in _MODEL_FACTORIES and _MODEL_FACTORIES[name] is not factory:
        raise ConfigurationError(f"a model named {name!r} is already registered")
    _MODEL_FACTORIES[name] = factory
    return factory


def _ensure_families_imported() -> None:
    # importing a family module runs its @register_model decorators
    from . import smt, van  # noqa: F401 - imported for their @register_model side effect


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell pattern (``'van_*'``)."""
    _ensure_families_imported()
    names = sorted(_MODEL_FACTORIES)
    if pattern is not None:
        names = [name for name in names if fnmatch.fnmatch(name, pattern)]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    _ensure_families_imported()
    return name in _MODEL_FACTORIES


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (through timm's builder where timm imports).

    Args:
        name: model name, e.g. ``'van_b0'``, ``'van_lska_tiny'``, ``'smt_t'`` (see :func:`list_models`).
        pretrained: load the released weights: ``pretrained_cfg['file']`` if set (e.g.
            ``pretrained_cfg_overlay=dict(file=LOCAL)``), else the public URL (downloaded once into
            the torch hub cache; a clear error says which file is needed when offline).
        checkpoint_path: load weights from this local file or folder instead (``.safetensors``,
            ``.pth``/``.pth.tar``/``.bin``, a sharded ``*.index.json``, a ``save_pretrained``
            folder; reference, HuggingFace and mmpretrain layouts are converted).
        **kwargs: the published constructor arguments (``embed_dims``, ``depths``, ``num_classes``,
            ``kernel_size``, ``attention``, ``global_pool``...) and timm's (``features_only``,
            ``out_indices``, ``feature_cls``, ``pretrained_cfg``, ``pretrained_cfg_overlay``).

    Loading always goes through :func:`largekernel.load_checkpoint` (weights only, never code);
    with ``features_only`` the weights go into the (pruned) backbone inside the wrapper.

    Raises:
        ConfigurationError: unknown name (the message lists close matches) or invalid arguments.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a str, got {type(name).__name__}")
    _ensure_families_imported()
    if name not in _MODEL_FACTORIES and name.endswith(("_fpn", "_upernet")):  # segmenters: largekernel.segmentation
        from ..segmentation import create_segmenter_from_name

        return create_segmenter_from_name(name, pretrained=pretrained, checkpoint_path=checkpoint_path, **kwargs)
    if name not in _MODEL_FACTORIES:
        close = difflib.get_close_matches(name, list(_MODEL_FACTORIES), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigurationError(
            f"unknown model {name!r}{hint} (list_models() gives all {len(_MODEL_FACTORIES)} names)"
        )
    if pretrained and checkpoint_path is not None:
        raise ConfigurationError("create_model: give either pretrained=True or checkpoint_path, not both")
    model = _MODEL_FACTORIES[name](pretrained=False, **kwargs)

    from ._builder import unwrap_features
    from .checkpoint import load_checkpoint, load_pretrained

    backbone = unwrap_features(model)
    if pretrained:
        load_pretrained(backbone, getattr(backbone, "pretrained_cfg", None))
    elif checkpoint_path is not None:
        load_checkpoint(backbone, checkpoint_path)
    return model
