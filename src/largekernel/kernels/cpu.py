"""Fast CPU forward and backward for the large-kernel attention layers (LKA, LSKA and the trivial designs).

PyTorch's CPU depthwise convolution is fast only in a narrow case: channels_last (NHWC) memory,
a ``(K, 1)`` kernel (along H), and, for the backward pass, no dilation. In NCHW, with a ``(1, K)``
kernel, with a 2-D kernel or with dilation it falls back to paths that are 10x to 100x slower
(the weight gradient of a 23x23 depthwise kernel takes seconds). Everything here turns our
cascades into that fast case, with views where possible and one copy where not:

* ``(1, K)`` along W: an NHWC tensor ``(N, C, H, W)`` *is* the NHWC tensor ``(N*H, C, W, 1)``
  (same memory), on which the kernel runs along H. Zero copies.
* dilated ``(K, 1)``: the forward and the input gradient are fast natively; the weight gradient
  is computed after moving each residue ``h mod d`` next to the width, ``(N, C, H/d, d*W)``,
  where the kernel is undilated (a view when ``d`` divides H, else one zero-padding copy).
* 2-D ``K x K`` (LKA, LKA-trivial): dilation is removed by space-to-depth (the ``d*d`` residue
  grids become batch entries); the weight gradient is ``K`` one-dimensional weight gradients
  between row-shifted views of one padded copy of the input and of the output gradient.
* NCHW in, NCHW out: one layout copy at the entry; the final 1x1 conv writes NCHW directly.

The plain PyTorch forward of each layer stays as it is; the layers call :func:`use_fast_cpu_path`
and, when it says yes, the matching ``*_forward`` here. ``set_fast_cpu_path(False)`` (or
``LARGEKERNEL_FAST_CPU=0``) switches the whole thing off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _python_dispatch

__all__ = [
    "depthwise_conv_2d",
    "depthwise_conv_h",
    "depthwise_conv_w",
    "fast_cpu_path",
    "fast_cpu_path_enabled",
    "lka_forward",
    "lka_trivial_forward",
    "lska_forward",
    "lska_trivial_forward",
    "set_fast_cpu_path",
    "use_fast_cpu_path",
]

_CL = torch.channels_last
_FAST_DTYPES = (torch.float32, torch.bfloat16)
_enabled = os.environ.get("LARGEKERNEL_FAST_CPU", "1") not in ("0", "false", "False", "no")
_conv_backward = torch.ops.aten.convolution_backward
# below this many pixels per map the 2-D weight gradient uses PyTorch's own kernel (measured crossover ~20x20-28x28)
_ROW_TRICK_MIN_PIXELS = 24 * 24


def set_fast_cpu_path(enabled: bool) -> None:
    """Turn the fast CPU path of LKA/LSKA (and their trivial variants) on or off for the process."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_fast_cpu_path: enabled must be a bool, got {type(enabled).__name__}")
    _enabled = enabled


def fast_cpu_path_enabled() -> bool:
    """Whether the fast CPU path is switched on (it still applies only where :func:`use_fast_cpu_path` says so)."""
    return _enabled


@contextlib.contextmanager
def fast_cpu_path(enabled: bool) -> Iterator[None]:
    """Context manager: ``with fast_cpu_path(False): ...`` runs the plain PyTorch path."""
    previous = _enabled
    set_fast_cpu_path(enabled)
    try:
        yield
    finally:
        set_fast_cpu_path(previous)


def _exporting_or_compiling() -> bool:
    # tracers, compilers and dispatch modes (FlopCounterMode in count_macs, FakeTensorMode) should
    # see the plain graph: ONNX wants standard convs, and MAC counts must not see our padded views
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return True
    if _python_dispatch._get_current_dispatch_mode() is not None:
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def use_fast_cpu_path(x: torch.Tensor) -> bool:
    """True when ``x`` should take the fast CPU path: switch on, CPU float32/bfloat16 4-D tensor, not exporting."""
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype in _FAST_DTYPES
        and x.dim() == 4
        and x.numel() > 0
        and not _exporting_or_compiling()
    )


# ----------------------------------------------------------------------------------------------
# layout helpers (all inputs channels_last-contiguous; "view" means no copy)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=_CL)


def _rows_view(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` NHWC -> ``(N*H, C, W, 1)`` NHWC, the same memory: W becomes the conv axis."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h, w, 1, c).permute(0, 3, 1, 2)


def _from_rows_view(y: torch.Tensor, n: int, h: int) -> torch.Tensor:
    _rows, c, w, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(n, h, w, c).permute(0, 3, 1, 2)


def _pad_bottom_right(x: torch.Tensor, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Zero-pad H and W up to multiples (NHWC out)."""
    n, c, h, w = x.shape
    extra_h, extra_w = -h % multiple_h, -w % multiple_w
    if not (extra_h or extra_w):
        return _nhwc(x)
    if torch.is_grad_enabled():
        return _nhwc(F.pad(x, (0, extra_w, 0, extra_h)))
    # without autograd (the backward passes): zero only the border, then one copy
    out = x.new_empty(n, h + extra_h, w + extra_w, c).permute(0, 3, 1, 2)
    out[:, :, h:].zero_()
    out[:, :, :h, w:].zero_()
    out[:, :, :h, :w] = x
    return out


def _residues_beside_width(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, ceil(H/d), d*W)``: rows ``h = q*d + r`` go to row ``q``, width block ``r``."""
    x = _pad_bottom_right(x, dilation, 1)
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h // dilation, dilation * w, c).permute(0, 3, 1, 2)


def _space_to_batch(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*d*d, C, ceil(H/d), ceil(W/d))``: each residue grid becomes a batch entry."""
    x = _pad_bottom_right(x, dilation, dilation)
    n, c, h, w = x.shape
    d = dilation
    grids = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(0, 2, 4, 1, 3, 5)
    return grids.reshape(n * d * d, h // d, w // d, c).permute(0, 3, 1, 2)


def _batch_to_space(y: torch.Tensor, dilation: int, height: int, width: int) -> torch.Tensor:
    d = dilation
    batch, c, hq, wq = y.shape
    n = batch // (d * d)
    out = y.permute(0, 2, 3, 1).reshape(n, d, d, hq, wq, c).permute(0, 3, 1, 4, 2, 5)
    out = out.reshape(n, hq * d, wq * d, c)[:, :height, :width].permute(0, 3, 1, 2)
    return _nhwc(out)


# ----------------------------------------------------------------------------------------------
# depthwise convolutions ('same' padding, stride 1), NHWC in and out


def _column_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """Weight gradient of a depthwise ``(K, 1)`` conv with dilation ``d`` along H, via the undilated fast case."""
    kernel = weight.shape[2]
    if dilation > 1:
        x, grad = _residues_beside_width(x, dilation), _residues_beside_width(grad, dilation)
    return _conv_backward(
        grad, x, weight, None, [1, 1], [(kernel - 1) // 2, 0], [1, 1], False, [0, 0], x.shape[1], [False, True, False]
    )[1]


class _DilatedColumnConv(torch.autograd.Function):
    """Depthwise ``(K, 1)`` conv with dilation along H; native forward, backward through the fast undilated case."""

    @staticmethod
    def forward(ctx, x, weight, bias, dilation):  # type: ignore[override]
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        padding = dilation * (weight.shape[2] - 1) // 2
        return F.conv2d(x, weight, bias, padding=(padding, 0), dilation=(dilation, 1), groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        grad = _nhwc(grad)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # correlation with the flipped kernel: a forward conv, fast natively
            padding = d * (weight.shape[2] - 1) // 2
            grad_x = F.conv2d(grad, weight.flip(2), None, padding=(padding, 0), dilation=(d, 1), groups=x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = _column_weight_grad(x, grad, weight, d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def depthwise_conv_h(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1) -> torch.Tensor:
    """Depthwise ``(K, 1)`` conv along H, 'same' padding; ``x`` NHWC ``(N, C, H, W)``, ``weight`` ``(C, 1, K, 1)``."""
    x = _nhwc(x)
    if dilation == 1:
        return F.conv2d(x, weight, bias, padding=((weight.shape[2] - 1) // 2, 0), groups=x.shape[1])
    return _DilatedColumnConv.apply(x, weight, bias, dilation)


def depthwise_conv_w(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1) -> torch.Tensor:
    """Depthwise ``(1, K)`` conv along W, 'same' padding; ``weight`` ``(C, 1, 1, K)``; runs as ``(K, 1)`` on rows."""
    x = _nhwc(x)
    rows = depthwise_conv_h(_rows_view(x), weight.transpose(2, 3), bias, dilation)
    return _from_rows_view(rows, x.shape[0], x.shape[2])


def _square_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    padding = (weight.shape[2] - 1) // 2
    if dilation == 1:
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
    height, width = x.shape[-2:]
    y = F.conv2d(_space_to_batch(x, dilation), weight, bias, padding=padding, groups=x.shape[1])
    return _batch_to_space(y, dilation, height, width)


def _square_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weight gradient of an undilated depthwise ``K x K`` 'same' conv as ``K`` fast 1-D ones.

    ``dW[c, i, :]`` is the W-direction weight gradient between ``grad`` and ``x`` shifted by
    ``i - p`` rows. Both are copied once into a row stack with ``2p`` zero rows per image
    (``x`` shifted down by ``p``); then each shift ``i`` is a zero-copy slice of the stack.
    """
    batch, channels, height, width = x.shape
    kernel = weight.shape[2]
    pad = (kernel - 1) // 2
    stacked_height = height + 2 * pad
    x_rows = x.new_zeros(batch, stacked_height, width, channels)
    x_rows[:, pad : pad + height] = x.permute(0, 2, 3, 1)
    grad_rows = grad.new_zeros(batch, stacked_height, width, channels)
    grad_rows[:, :height] = grad.permute(0, 2, 3, 1)
    x_rows, grad_rows = x_rows.view(-1, width, channels), grad_rows.view(-1, width, channels)
    length = x_rows.shape[0] - (kernel - 1)
    # (L, W, C) rows -> (L, C, W, 1) NHWC; a view (unsqueeze would give a stride oneDNN does not take as NHWC)
    grad_view = grad_rows[:length].view(length, width, 1, channels).permute(0, 3, 1, 2)
    row_weight = weight[:, :, :1, :].transpose(2, 3)  # only its shape matters
    rows = []
    for i in range(kernel):
        x_view = x_rows[i : i + length].view(length, width, 1, channels).permute(0, 3, 1, 2)
        rows.append(
            _conv_backward(
                grad_view, x_view, row_weight, None, [1, 1], [pad, 0], [1, 1], False, [0, 0], channels,
                [False, True, False],
            )[1].reshape(channels, kernel)
        )
    return torch.stack(rows, dim=1).unsqueeze(1)


class _SquareDepthwiseConv(torch.autograd.Function):
    """Depthwise ``K x K`` conv (optionally dilated), forward and both gradients through fast cases."""

    @staticmethod
    def forward(ctx, x, weight, bias, dilation):  # type: ignore[override]
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return _square_forward(x, weight, bias, dilation)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        grad = _nhwc(grad)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _square_forward(grad, weight.flip(2, 3), None, d)
        if ctx.needs_input_grad[1]:
            if x.shape[2] * x.shape[3] < _ROW_TRICK_MIN_PIXELS:
                # small maps: K calls on a few short rows cost more than PyTorch's one slow call
                padding = d * (weight.shape[2] - 1) // 2
                grad_w = _conv_backward(
                    grad, x, weight, None, [1, 1], [padding, padding], [d, d], False, [0, 0], x.shape[1],
                    [False, True, False],
                )[1]
            elif d == 1:
                grad_w = _square_weight_grad(x, grad, weight)
            else:
                grad_w = _square_weight_grad(_space_to_batch(x, d), _space_to_batch(grad, d), weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def depthwise_conv_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1) -> torch.Tensor:
    """Depthwise ``K x K`` conv (odd K), 'same' padding, dilation ``d``; NHWC in and out."""
    return _SquareDepthwiseConv.apply(_nhwc(x), weight, bias, dilation)


# ----------------------------------------------------------------------------------------------
# the layers' fast forwards: same parameters, same result as their plain forward


def _gate(x: torch.Tensor, x_nhwc: torch.Tensor, attn: torch.Tensor, conv1: nn.Conv2d) -> torch.Tensor:
    """``x * conv1(attn)`` with ``attn`` NHWC; the result has ``x``'s layout."""
    out_channels, in_channels = conv1.weight.shape[:2]
    weight = conv1.weight.view(out_channels, in_channels)
    batch, _, height, width = attn.shape
    # without autograd the product may overwrite the projection (one allocation less)
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or attn.requires_grad or weight.requires_grad))
    if x.is_contiguous(memory_format=_CL) or not x.is_contiguous():
        projected = F.linear(attn.permute(0, 2, 3, 1), weight, conv1.bias).permute(0, 3, 1, 2)
        return projected.mul_(x_nhwc) if inplace else x_nhwc * projected
    # NCHW wanted: out[n] = W @ attn[n]^T + b, which BLAS reads transposed in place and writes NCHW
    # (bmm, not matmul: matmul would return a transposed view)
    attn_t = attn.permute(0, 2, 3, 1).reshape(batch, height * width, in_channels).transpose(1, 2)
    weight = weight.expand(batch, -1, -1)
    if conv1.bias is None:
        projected = torch.bmm(weight, attn_t)
    else:
        projected = torch.baddbmm(conv1.bias.view(1, -1, 1), weight, attn_t)
    projected = projected.view(batch, out_channels, height, width)
    return projected.mul_(x) if inplace else x * projected


def lska_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fast forward of :class:`~largekernel.layers.lska.LSKA` (same parameters, same result)."""
    d = module.decomposition.dilation
    x_nhwc = _nhwc(x)
    attn = depthwise_conv_w(x_nhwc, module.conv0h.weight, module.conv0h.bias)
    attn = depthwise_conv_h(attn, module.conv0v.weight, module.conv0v.bias)
    attn = depthwise_conv_w(attn, module.conv_spatial_h.weight, module.conv_spatial_h.bias, d)
    attn = depthwise_conv_h(attn, module.conv_spatial_v.weight, module.conv_spatial_v.bias, d)
    return _gate(x, x_nhwc, attn, module.conv1)


def lska_trivial_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fast forward of :class:`~largekernel.layers.lska.LSKATrivial`."""
    x_nhwc = _nhwc(x)
    attn = depthwise_conv_w(x_nhwc, module.conv0h.weight, module.conv0h.bias)
    attn = depthwise_conv_h(attn, module.conv0v.weight, module.conv0v.bias)
    return _gate(x, x_nhwc, attn, module.conv1)


def lka_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fast forward of :class:`~largekernel.layers.lka.LKA`."""
    x_nhwc = _nhwc(x)
    attn = depthwise_conv_2d(x_nhwc, module.conv0.weight, module.conv0.bias)
    attn = depthwise_conv_2d(attn, module.conv_spatial.weight, module.conv_spatial.bias, module.decomposition.dilation)
    return _gate(x, x_nhwc, attn, module.conv1)


def lka_trivial_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fast forward of :class:`~largekernel.layers.lka.LKATrivial`."""
    x_nhwc = _nhwc(x)
    attn = depthwise_conv_2d(x_nhwc, module.conv0.weight, module.conv0.bias)
    return _gate(x, x_nhwc, attn, module.conv1)
