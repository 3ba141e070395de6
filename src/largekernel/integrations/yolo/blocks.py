"""YOLO blocks with large-kernel attention, built on Ultralytics' own SPPF / C2f / C3 / C3k2.

Each block subclasses the Ultralytics block it replaces and keeps its convolutions, channel split and
``forward``; only the part the community changes is swapped:

- ``SPPF_LSKA``: LSKA on the ``4 * c_`` concatenation inside SPPF, before its last 1x1 conv.
- ``C2f_LSKA`` / ``C3_LSKA`` / ``C3k2_LSKA``: every bottleneck becomes an :class:`AttentionBottleneck`
  (BatchNorm, then VAN's spatial-gating attention with its inner shortcut).

The plain layers ``LSKA`` / ``LKA`` / ``SAM`` of a YAML row are the :mod:`largekernel.layers`
modules, subclassed here without change. Every class a YOLO model holds thus lives in this
package: unpickling a checkpoint in a fresh process imports it, and so registers our blocks with
Ultralytics' parser, which resuming and fine-tuning need to rebuild the model from the stored YAML.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.block import C3, SPPF, C2f, C3k2

from ... import layers
from ...layers.attention import AttentionName, SpatialGatingAttention

__all__ = ["C3_LSKA", "LKA", "LSKA", "SAM", "SPPF_LSKA", "AttentionBottleneck", "C2f_LSKA", "C3k2_LSKA"]


class LSKA(layers.LSKA):
    """:class:`largekernel.layers.LSKA` as a YAML layer, ``[-1, 1, LSKA, [kernel_size, dilation]]``."""


class LKA(layers.LKA):
    """:class:`largekernel.layers.LKA` as a YAML layer, ``[-1, 1, LKA, [kernel_size, dilation]]``."""


class SAM(layers.SAM):
    """:class:`largekernel.layers.SAM` as a YAML layer, ``[-1, 1, SAM, [num_heads, expand_ratio]]``."""


class AttentionBottleneck(nn.Module):
    """``attn(norm(x))``: BatchNorm, then ``proj_2(LSKA(GELU(proj_1(.)))) + .`` (VAN's attention sub-layer).

    The BatchNorm is VAN's pre-norm; without it the multiplicative gating of an unnormalised input
    (the previous bottleneck's raw sum) is what made gradients explode in community YOLO ports.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 11, attention: AttentionName = "lska") -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.attn = SpatialGatingAttention(dim, attention=attention, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x))


class SPPF_LSKA(SPPF):
    """SPPF with LSKA (``kernel_size``, 11 in the community form) on the pooled concatenation.

    Args:
        c1, c2: input and output channels (filled in by Ultralytics' parser).
        k: max-pool size of SPPF.
        kernel_size: LSKA receptive field.
    """

    def __init__(self, c1: int, c2: int, k: int = 5, kernel_size: int = 11) -> None:
        super().__init__(c1, c2, k)
        self.lska = layers.LSKA(self.cv1.conv.out_channels * (self.n + 1), kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(self.n))
        return self.cv2(self.lska(torch.cat(y, 1)))


class C2f_LSKA(C2f):
    """C2f whose ``n`` bottlenecks are :class:`AttentionBottleneck` s (LSKA of ``kernel_size``)."""

    def __init__(self, c1: int, c2: int, n: int = 1, kernel_size: int = 11, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, False, 1, e)
        self.m = nn.ModuleList(AttentionBottleneck(self.c, kernel_size) for _ in range(n))


class C3_LSKA(C3):
    """C3 (YOLOv5's block) whose ``n`` bottlenecks are :class:`AttentionBottleneck` s."""

    def __init__(self, c1: int, c2: int, n: int = 1, kernel_size: int = 11, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, True, 1, e)
        hidden = self.cv1.conv.out_channels
        self.m = nn.Sequential(*(AttentionBottleneck(hidden, kernel_size) for _ in range(n)))


class C3k2_LSKA(C3k2):
    """C3k2 (YOLO11's block) with attention bottlenecks.

    As in C3k2, ``c3k=True`` (Ultralytics sets it for the m/l/x scales) makes each of the ``n`` inner
    blocks a C3 with two bottlenecks (here ``C3_LSKA(c, c, 2)``); otherwise each is one bottleneck.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, kernel_size: int = 11) -> None:
        super().__init__(c1, c2, n, c3k, e)
        self.m = nn.ModuleList(
            C3_LSKA(self.c, self.c, 2, kernel_size) if c3k else AttentionBottleneck(self.c, kernel_size)
            for _ in range(n)
        )
