"""Training and evaluation on Lightning: ``largekernel train`` / ``largekernel eval``.

Names are imported on first use: ``largekernel.train.config`` (what the CLI's help reads) needs no
torch, and Lightning is imported only when training starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    **{name: "data" for name in ("EMBEDDED_DATASETS", "DataSplit", "load_data", "read_image")},
    **{name: "config" for name in ("TrainConfig", "RECIPES", "resolve_config")},
    **{name: "trainer" for name in ("train", "load_trained")},
}

__all__ = [
    "EMBEDDED_DATASETS",
    "RECIPES",
    "DataSplit",
    "TrainConfig",
    "load_data",
    "load_trained",
    "read_image",
    "resolve_config",
    "train",
]

if TYPE_CHECKING:
    from .config import RECIPES, TrainConfig, resolve_config
    from .data import EMBEDDED_DATASETS, DataSplit, load_data, read_image
    from .trainer import load_trained, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
