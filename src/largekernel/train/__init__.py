"""Training and evaluation on Lightning: ``largekernel train`` / ``largekernel eval``.

Names are imported on first use: ``largekernel.train.config`` (what the CLI's help reads) needs no
torch, and Lightning is imported only when training starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {name: "data" for name in ("EMBEDDED_DATASETS", "AugmentConfig", "DataSplit", "augment_batch", "load_data")}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .data import EMBEDDED_DATASETS, AugmentConfig, DataSplit, augment_batch, load_data


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
