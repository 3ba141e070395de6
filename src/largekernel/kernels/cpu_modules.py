"""Drop-in modules that keep channels_last (NHWC) maps on PyTorch's fast CPU paths, and the swap.

On CPU, three common layers lose much of channels_last's gain in stock PyTorch:

* a 1x1 ``nn.Conv2d`` copies an NHWC input to NCHW (``slow_conv2d``); as a GEMM on the NHWC
  view it reads the memory as it is (:class:`PointwiseConv2d`);
* ``nn.GELU`` is ~2x slower on a 4-D NHWC tensor than on the same memory seen as ``(N, H, W, C)``
  (:class:`NHWCGELU`);
* a depthwise ``K x K`` conv has a slow weight gradient (:class:`DepthwiseConv2d` goes through
  :func:`largekernel.kernels.depthwise_cascade`, so the backend switch and ``auto`` decide).

Each subclass keeps its parent's parameters and state_dict keys, so checkpoints load unchanged,
and falls back to the parent's forward off the fast case (NCHW input, CUDA, tracing/export, or
the ``"torch"`` backend).
"""

from __future__ import annotations

from typing import TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from . import dispatch

__all__ = ["NHWCGELU", "DepthwiseConv2d", "PointwiseConv2d", "optimize_for_cpu_training", "swap_in_nhwc_modules"]


def _nhwc_fast_case(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
        and dispatch.get_backend() != "torch"
        and not torch.compiler.is_compiling()
        and not dispatch._tracing()
    )


def _copy_conv(cls, conv: nn.Conv2d):
    new = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    new.load_state_dict(conv.state_dict())
    new.train(conv.training)
    return new


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 conv that runs as one GEMM on channels_last inputs (same parameters as ``nn.Conv2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _nhwc_fast_case(x):
            weight = self.weight.view(self.out_channels, self.in_channels)
            return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


class NHWCGELU(nn.GELU):
    """GELU computed on the ``(N, H, W, C)`` view of a channels_last map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _nhwc_fast_case(x):
            return F.gelu(x.permute(0, 2, 3, 1), approximate=self.approximate).permute(0, 3, 1, 2)
        return super().forward(x)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise, stride-1, 'same'-padded odd ``K x K`` conv with the fast CPU forward and backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _nhwc_fast_case(x):
            return dispatch.depthwise_cascade(x, [self.weight], [self.bias], [self.dilation[0]])
        return super().forward(x)


def _is_pointwise(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
    )


def _is_same_depthwise(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    kernel, dilation = conv.kernel_size[0], conv.dilation[0]
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.kernel_size == (kernel, kernel)
        and kernel % 2 == 1
        and kernel > 1
        and conv.stride == (1, 1)
        and conv.dilation == (dilation, dilation)
        and conv.padding == (dilation * (kernel - 1) // 2,) * 2
    )


def swap_in_nhwc_modules(module: nn.Module) -> int:
    """Replace, in place, 1x1 convs, GELUs and 'same' depthwise convs by the classes above; returns the count."""
    swaps = 0
    for name, child in list(module.named_children()):
        if _is_pointwise(child):
            setattr(module, name, _copy_conv(PointwiseConv2d, child))
        elif _is_same_depthwise(child):
            setattr(module, name, _copy_conv(DepthwiseConv2d, child))
        elif type(child) is nn.GELU:
            setattr(module, name, NHWCGELU(approximate=child.approximate))
        else:
            swaps += swap_in_nhwc_modules(child)
            continue
        swaps += 1
    return swaps


def optimize_for_cpu_training(model: nn.Module) -> nn.Module:
    """Make ``model`` train faster on CPU, in place: channels_last memory plus the NHWC-friendly modules.

    Parameter names and values are unchanged (checkpoints load and save as before); feed inputs
    in channels_last (``x.contiguous(memory_format=torch.channels_last)``) for the full gain.
    Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize_for_cpu_training expects an nn.Module, got {type(model).__name__}")
    swap_in_nhwc_modules(model)
    return model.to(memory_format=torch.channels_last)
