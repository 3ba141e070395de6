"""The attention designs by name, and VAN's spatial-gating wrapper around them."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import ConfigurationError
from ._checks import check_dim, check_nchw
from .lka import LKA, LKATrivial
from .lska import LSKA, LSKATrivial

__all__ = ["ATTENTIONS", "AttentionName", "SpatialGatingAttention", "create_attention"]

AttentionName = Literal["lka", "lska", "lka_trivial", "lska_trivial"]
ATTENTIONS: dict[str, type[nn.Module]] = {
    "lka": LKA,
    "lska": LSKA,
    "lka_trivial": LKATrivial,
    "lska_trivial": LSKATrivial,
}


def create_attention(name: str, dim: int, kernel_size: int, dilation: int | None = None) -> nn.Module:
    """Build one of the large-kernel attention designs by name.

    Args:
        name: ``'lka' | 'lska' | 'lka_trivial' | 'lska_trivial'``.
        dim: channels.
        kernel_size: odd kernel size >= 3.
        dilation: only for ``lka``/``lska``; ``None`` uses the module's rule.
    """
    if name not in ATTENTIONS:
        raise ConfigurationError(f"unknown attention {name!r}; choose one of {sorted(ATTENTIONS)}")
    cls = ATTENTIONS[name]
    if cls in (LKA, LSKA):
        return cls(dim, kernel_size=kernel_size, dilation=dilation)
    if dilation is not None:
        raise ConfigurationError(
            f"attention {name!r} has no dilation (it is one undilated kernel); got dilation={dilation}"
        )
    return cls(dim, kernel_size=kernel_size)


class SpatialGatingAttention(nn.Module):
    """VAN's attention sub-layer: ``proj_2(spatial_gating_unit(GELU(proj_1(x)))) + x``.

    The inner shortcut is part of the layer, as in VAN. Parameter names match the reference
    (``proj_1``, ``spatial_gating_unit``, ``proj_2``), so VAN and VAN-LSKA checkpoints load into it.

    Args:
        dim: channels in and out.
        attention: which large-kernel design fills the gating unit.
        kernel_size: odd kernel size for it.
        dilation: passed to LKA/LSKA; ``None`` uses their rule.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(
        self, dim: int, attention: AttentionName = "lska", kernel_size: int = 23, dilation: int | None = None
    ) -> None:
        super().__init__()
        check_dim(dim, "SpatialGatingAttention")
        self.dim = dim
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = create_attention(attention, dim, kernel_size, dilation)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "SpatialGatingAttention")
        shortcut = x
        x = self.spatial_gating_unit(self.activation(self.proj_1(x)))
        return self.proj_2(x) + shortcut
