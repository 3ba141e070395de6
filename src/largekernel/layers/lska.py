"""LSKA: LKA with every 2D depthwise kernel split into ``1 x n`` then ``n x 1`` (Lau et al. 2024).

Cost per channel grows linearly with the kernel size (``2a + 2m`` weights) instead of
quadratically, so kernels of 35, 53 or 101 stay cheap.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import kernels
from ._checks import check_dim, check_nchw, fast_path_allowed
from .decomposition import check_kernel_size, lska_decomposition

__all__ = ["LSKA", "LSKATrivial"]


class LSKA(nn.Module):
    """Large Separable Kernel Attention with receptive field exactly ``kernel_size x kernel_size``.

    Cascade (names as in the reference code): ``conv0h`` (1 x a) -> ``conv0v`` (a x 1) ->
    ``conv_spatial_h`` (1 x m, dilation d) -> ``conv_spatial_v`` (m x 1, dilation d) -> ``conv1``
    (1x1); ``out = x * attn``. Any odd ``kernel_size >= 3`` works; the sizes follow
    :func:`~largekernel.layers.decomposition.lska_decomposition` and reproduce the published
    table for 7, 11, 23, 35, 41 and 53.

    Args:
        dim: channels in and out.
        kernel_size: odd receptive field ``k >= 3`` (23 = VAN's LKA separated).
        dilation: ``None`` picks the cheapest exact ``d``; a given ``d`` must satisfy
            ``2d | (k + 1)`` or ``ValueError`` names the valid ones.

    The forward runs through :func:`largekernel.kernels.large_kernel_attention` (the backend switch
    and ``auto``) unless scripted or a sub-module has hooks; then it runs the ``nn.Conv2d`` layers.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    __jit_unused_properties__ = ("receptive_field",)

    def __init__(self, dim: int, kernel_size: int = 23, dilation: int | None = None) -> None:
        super().__init__()
        check_dim(dim, "LSKA")
        self.dim = dim
        self.decomposition = dec = lska_decomposition(kernel_size, dilation)
        a, m, d = dec.dense_size, dec.dilated_size, dec.dilation
        pa, pm = dec.dense_padding, dec.dilated_padding
        self.conv0h = nn.Conv2d(dim, dim, (1, a), padding=(0, pa), groups=dim)
        self.conv0v = nn.Conv2d(dim, dim, (a, 1), padding=(pa, 0), groups=dim)
        self.conv_spatial_h = nn.Conv2d(dim, dim, (1, m), padding=(0, pm), dilation=d, groups=dim)
        self.conv_spatial_v = nn.Conv2d(dim, dim, (m, 1), padding=(pm, 0), dilation=d, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    @property
    def receptive_field(self) -> int:
        return self.decomposition.receptive_field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "LSKA")
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain line below
            if fast_path_allowed(
                self, [self.conv0h, self.conv0v, self.conv_spatial_h, self.conv_spatial_v, self.conv1]
            ):
                return self._forward_kernels(x)
        return x * self.conv1(self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x)))))

    @torch.jit.unused
    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.conv0h, self.conv0v, self.conv_spatial_h, self.conv_spatial_v)
        d = self.decomposition.dilation
        return kernels.large_kernel_attention(
            x, [c.weight for c in convs], [c.bias for c in convs], [1, 1, d, d], self.conv1.weight, self.conv1.bias
        )

    def extra_repr(self) -> str:
        dec = self.decomposition
        return (
            f"dim={self.dim}, kernel_size={dec.kernel_size}, dilation={dec.dilation}, "
            f"dense={dec.dense_size}, dilated={dec.dilated_size}"
        )


class LSKATrivial(nn.Module):
    """The LSKA paper's separable baseline without dilation: ``1 x k`` then ``k x 1`` depthwise + 1x1, times input.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    __jit_unused_properties__ = ("receptive_field",)

    def __init__(self, dim: int, kernel_size: int = 23) -> None:
        super().__init__()
        check_dim(dim, "LSKATrivial")
        check_kernel_size(kernel_size, "LSKATrivial")
        self.dim = dim
        self.kernel_size = kernel_size
        pad = kernel_size // 2
        self.conv0h = nn.Conv2d(dim, dim, (1, kernel_size), padding=(0, pad), groups=dim)
        self.conv0v = nn.Conv2d(dim, dim, (kernel_size, 1), padding=(pad, 0), groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    @property
    def receptive_field(self) -> int:
        return self.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "LSKATrivial")
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain line below
            if fast_path_allowed(self, [self.conv0h, self.conv0v, self.conv1]):
                return self._forward_kernels(x)
        return x * self.conv1(self.conv0v(self.conv0h(x)))

    @torch.jit.unused
    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.conv0h, self.conv0v)
        return kernels.large_kernel_attention(
            x, [c.weight for c in convs], [c.bias for c in convs], [1, 1], self.conv1.weight, self.conv1.bias
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"
