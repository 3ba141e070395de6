"""``--device`` / ``--dtype`` values resolved for the analysis tools."""

from __future__ import annotations

import torch

from ..errors import ConfigurationError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(name: str) -> torch.device:
    """A ``torch.device`` for ``name``; ``ValueError`` when it does not exist on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigurationError(f"unknown device {name!r}; expected 'cpu', 'cuda' or 'cuda:N'") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigurationError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise ConfigurationError(f"unsupported device {name!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return device


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch.dtype`` for ``'float32' | 'bfloat16' | 'float16'`` (or a dtype, passed through)."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ConfigurationError(f"unsupported dtype {name}; expected one of {sorted(DTYPES)}")
        return name
    if name not in DTYPES:
        raise ConfigurationError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]
