"""Backbones (VAN, VAN-LSKA, SMT), the model registry and checkpoint loading."""

from ._common import from_released_layout, to_released_layout
from .checkpoint import WeightsUnavailableError, load_checkpoint, save_checkpoint
from .registry import create_model, is_model, list_models, register_model
from .smt import SMT
from .van import VAN

__all__ = [
    "SMT",
    "VAN",
    "WeightsUnavailableError",
    "create_model",
    "from_released_layout",
    "is_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
    "to_released_layout",
]
