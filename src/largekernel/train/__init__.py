"""Training and evaluation on Lightning: ``largekernel train`` / ``largekernel eval``.

Names are imported on first use: ``largekernel.train.config`` (what the CLI's help reads) needs no
torch, and Lightning is imported only when training starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    **{name: ".data" for name in ("EMBEDDED_DATASETS", "DataSplit", "load_data", "read_image")},
    **{name: ".config" for name in ("TrainConfig", "RECIPES", "resolve_config")},
    **{name: ".trainer" for name in ("train", "load_trained")},
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


__getattr__ = lazy_getattr(globals(), _EXPORTS)
