"""LKA (VAN) and its trivial counterpart: large depthwise kernels as attention maps.

``out = x * conv1(dilated_dw(dense_dw(x)))``: no sigmoid, no softmax (VAN, Guo et al. 2022).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import kernels
from ._checks import check_dim, check_nchw, fast_path_allowed
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

    The forward runs through :func:`largekernel.kernels.large_kernel_attention` (the backend switch
    and ``auto``) unless scripted or a sub-module has hooks; then it runs the ``nn.Conv2d`` layers.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    __jit_unused_properties__ = ("receptive_field",)

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int | None = None) -> None:
        super().__init__()
        check_dim(dim, "LKA")
        self.dim = dim
        self.decomposition = lka_decomposition(kernel_size, dilation)
        a, m, d = self.decomposition.dense_size, self.decomposition.dilated_size, self.decomposition.dilation
        self.conv0 = nn.Conv2d(dim, dim, a, padding=self.decomposition.dense_padding, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, m, padding=self.decomposition.dilated_padding, dilation=d, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    @property
    def receptive_field(self) -> int:
        """Side of the square window each output pixel depends on."""
        return self.decomposition.receptive_field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "LKA")
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain line below
            if fast_path_allowed(self, [self.conv0, self.conv_spatial, self.conv1]):
                return self._forward_kernels(x)
        return x * self.conv1(self.conv_spatial(self.conv0(x)))

    @torch.jit.unused
    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.conv0, self.conv_spatial)
        return kernels.large_kernel_attention(
            x,
            [c.weight for c in convs],
            [c.bias for c in convs],
            [1, self.decomposition.dilation],
            self.conv1.weight,
            self.conv1.bias,
        )

    def extra_repr(self) -> str:
        dec = self.decomposition
        return f"dim={self.dim}, kernel_size={dec.kernel_size}, dilation={dec.dilation}, receptive_field={self.receptive_field}"


class LKATrivial(nn.Module):
    """The undecomposed baseline of the LSKA paper: one ``k x k`` depthwise conv + 1x1, times input.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    __jit_unused_properties__ = ("receptive_field",)

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
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain line below
            if fast_path_allowed(self, [self.conv0, self.conv1]):
                return self._forward_kernels(x)
        return x * self.conv1(self.conv0(x))

    @torch.jit.unused
    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.large_kernel_attention(
            x, [self.conv0.weight], [self.conv0.bias], [1], self.conv1.weight, self.conv1.bias
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"
