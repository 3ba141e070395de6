"""Argument and input checks shared by the attention layers (the public boundary)."""

from __future__ import annotations

import torch

__all__ = ["check_dim", "check_nchw"]


def check_dim(dim: int, module: str) -> None:
    """Raise unless ``dim`` (the channel count) is a positive int."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{module}: dim (channel count) must be an int, got {type(dim).__name__} {dim!r}")
    if dim <= 0:
        raise ValueError(f"{module}: dim (channel count) must be positive, got {dim}")


def check_nchw(x: torch.Tensor, dim: int, module: str) -> None:
    """Raise unless ``x`` is a 4-D (batch, channels, height, width) tensor with ``dim`` channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{module}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{module}: expected a 4-D NCHW tensor (batch, {dim}, height, width), "
            f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
        )
    if x.shape[1] != dim:
        raise ValueError(
            f"{module}: expected {dim} input channels (NCHW dim 1), got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )
