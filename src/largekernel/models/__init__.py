"""Backbones (VAN, VAN-LSKA, SMT), the model registry and checkpoint loading."""

from .checkpoint import load_checkpoint, save_checkpoint
from .registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "load_checkpoint", "register_model", "save_checkpoint"]
