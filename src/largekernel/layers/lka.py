"""LKA (VAN) and its trivial counterpart: large depthwise kernels as attention maps.

``out = x * conv1(dilated_dw(dense_dw(x)))``: no sigmoid, no softmax (VAN, Guo et al. 2022).
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import cpu as cpu_kernels
from ..kernels import fused_cascade
from ._checks import check_dim, check_nchw
from .decomposition import check_kernel_size, lka_decomposition

__all__ = ["LKA", "LKATrivial"]


class LKA(nn.Module):
    """Large Kernel Attention: dense ``(2d-1)^2`` depthwise, ``m x m`` dilated depthwise, 1x1, times input.

    The defaults give VAN's module exactly: 5x5 (pad 2) + 7x7 dilation 3 (pad 9) + 1x1, receptive
    field 23. Parameter names match the reference (``conv0``, ``conv_spatial``, ``conv1``).

    Args:
        dim: channels in and out.
        kernel_size: odd nominal kernel size ``K`` >= 3 (VAN's 21 by default).
        dilation: ``d``; ``None`` follows :func:`~largekernel.layers.decomposition.lka_decomposition`
            (3 for K=21, the same ``d`` as LSKA where LSKA's rule gives one above 1).

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int | None = None) -> None:
        super().__init__()
        check_dim(dim, "LKA")
        self.dim = dim
        self.decomposition = lka_decomposition(kernel_size, dilation)
        a, m, d = self.decomposition.dense_size, self.decomposition.dilated_size, self.decomposition.dilation
        self.conv0 = nn.Conv2d(dim, dim, a, padding=self.decomposition.dense_padding, groups=dim)
        self.conv_spatial = nn.Conv2d(
            dim, dim, m, padding=self.decomposition.dilated_padding, dilation=d, groups=dim
        )
        self.conv1 = nn.Conv2d(dim, dim, 1)

    @property
    def receptive_field(self) -> int:
        """Side of the square window each output pixel depends on."""
        return self.decomposition.receptive_field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "LKA")
        attn = fused_cascade(self, x)  # fused Triton kernels on CUDA, else None
        if attn is None and cpu_kernels.use_fast_cpu_path(x):
            return cpu_kernels.lka_forward(self, x)  # NHWC CPU path (kernels/cpu.py)
        if attn is None:
            attn = self.conv_spatial(self.conv0(x))
        return x * self.conv1(attn)

    def extra_repr(self) -> str:
        dec = self.decomposition
        return f"dim={self.dim}, kernel_size={dec.kernel_size}, dilation={dec.dilation}, receptive_field={self.receptive_field}"


class LKATrivial(nn.Module):
    """The undecomposed baseline of the LSKA paper: one ``k x k`` depthwise conv + 1x1, times input.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 23) -> None:
        super().__init__()
        check_dim(dim, "LKATrivial")
        check_kernel_size(kernel_size, "LKATrivial")
        self.dim = dim
        self.kernel_size = kernel_size
        self.conv0 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    @property
    def receptive_field(self) -> int:
        return self.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "LKATrivial")
        if cpu_kernels.use_fast_cpu_path(x):
            return cpu_kernels.lka_trivial_forward(self, x)
        return x * self.conv1(self.conv0(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"
