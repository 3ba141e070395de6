"""The NHWC CPU backend (``"cpu_nhwc"``): the depthwise cascades as PyTorch's fast CPU case.

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
* NCHW in, NCHW out: one layout copy at the entry; the final 1x1 conv writes NCHW directly
  (:func:`gate`).

These are plain functions of tensors without autograd: :mod:`largekernel.kernels.ops` wraps
:func:`cascade_forward` / :func:`cascade_backward` in the ``largekernel::depthwise_cascade`` op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["cascade_backward", "cascade_forward", "gate", "stage_supported"]

_CL = torch.channels_last
DTYPES = (torch.float32, torch.bfloat16)
_conv_backward = torch.ops.aten.convolution_backward
# below this many pixels per map the 2-D weight gradient uses PyTorch's own kernel (measured crossover ~20x20-28x28)
_ROW_TRICK_MIN_PIXELS = 24 * 24


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
# weight gradients through the fast cases


def _column_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """Weight gradient of a depthwise ``(K, 1)`` conv with dilation ``d`` along H, via the undilated fast case."""
    kernel = weight.shape[2]
    if dilation > 1:
        x, grad = _residues_beside_width(x, dilation), _residues_beside_width(grad, dilation)
    return _conv_backward(
        grad, x, weight, None, [1, 1], [(kernel - 1) // 2, 0], [1, 1], False, [0, 0], x.shape[1], [False, True, False]
    )[1]


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
                grad_view,
                x_view,
                row_weight,
                None,
                [1, 1],
                [pad, 0],
                [1, 1],
                False,
                [0, 0],
                channels,
                [False, True, False],
            )[1].reshape(channels, kernel)
        )
    return torch.stack(rows, dim=1).unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# one depthwise conv ('same' padding, stride 1, odd kernel), NHWC in and out: forward and backward


def stage_supported(kernel_h: int, kernel_w: int) -> bool:
    """Kernels this backend takes: odd ``(K, 1)``, ``(1, K)`` or ``(K, K)``."""
    return kernel_h % 2 == 1 and kernel_w % 2 == 1 and (kernel_h == 1 or kernel_w == 1 or kernel_h == kernel_w)


def _column_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    padding = dilation * (weight.shape[2] - 1) // 2
    return F.conv2d(x, weight, bias, padding=(padding, 0), dilation=(dilation, 1), groups=x.shape[1])


def _column_backward(grad, x, weight, dilation, need_input, need_weight):
    # input gradient: correlation with the flipped kernel, a forward conv (fast natively)
    grad_x = _column_forward(grad, weight.flip(2), None, dilation) if need_input else None
    grad_w = _column_weight_grad(x, grad, weight, dilation) if need_weight else None
    return grad_x, grad_w


def _is_row(weight: torch.Tensor) -> bool:
    return weight.shape[2] == 1 and weight.shape[3] > 1


def _is_column(weight: torch.Tensor) -> bool:
    return weight.shape[3] == 1


def stage_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """One 'same' depthwise conv of ``x`` (NHWC), ``weight`` ``(C, 1, KH, KW)``; NHWC out."""
    if _is_column(weight):
        return _column_forward(x, weight, bias, dilation)
    if _is_row(weight):  # (1, K) along W runs as (K, 1) on the rows view: zero copies
        rows = _column_forward(_rows_view(x), weight.transpose(2, 3), bias, dilation)
        return _from_rows_view(rows, x.shape[0], x.shape[2])
    return _square_forward(x, weight, bias, dilation)


def stage_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, dilation: int, need_input: bool, need_params: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (input, weight, bias) of :func:`stage_forward`; ``grad`` and ``x`` NHWC."""
    grad_b = grad.sum((0, 2, 3)) if need_params else None
    if _is_column(weight):
        grad_x, grad_w = _column_backward(grad, x, weight, dilation, need_input, need_params)
    elif _is_row(weight):
        n, h = x.shape[0], x.shape[2]
        grad_x, grad_w = _column_backward(
            _rows_view(grad), _rows_view(x), weight.transpose(2, 3), dilation, need_input, need_params
        )
        grad_x = _from_rows_view(grad_x, n, h) if grad_x is not None else None
        grad_w = grad_w.transpose(2, 3).contiguous() if grad_w is not None else None
    else:
        grad_x = _square_forward(grad, weight.flip(2, 3), None, dilation) if need_input else None
        grad_w = _square_weight_grad_any(x, grad, weight, dilation) if need_params else None
    return grad_x, grad_w, grad_b


def _square_weight_grad_any(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    if x.shape[2] * x.shape[3] < _ROW_TRICK_MIN_PIXELS:
        # small maps: K calls on a few short rows cost more than PyTorch's one slow call
        padding = dilation * (weight.shape[2] - 1) // 2
        return _conv_backward(
            grad,
            x,
            weight,
            None,
            [1, 1],
            [padding, padding],
            [dilation, dilation],
            False,
            [0, 0],
            x.shape[1],
            [False, True, False],
        )[1]
    if dilation == 1:
        return _square_weight_grad(x, grad, weight)
    return _square_weight_grad(_space_to_batch(x, dilation), _space_to_batch(grad, dilation), weight)


# ----------------------------------------------------------------------------------------------
# the cascade


def cascade_forward(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], dilations: Sequence[int]
) -> list[torch.Tensor]:
    """``[output, input of stage 1, ..., input of stage n-1]``, all NHWC (the backward needs the inputs)."""
    h = _nhwc(x)
    saved = []
    for s, (weight, bias, dilation) in enumerate(zip(weights, biases, dilations)):
        if s:
            saved.append(h)
        h = stage_forward(h, weight, bias, dilation)
    return [h, *saved]


def cascade_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    saved: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    dilations: Sequence[int],
    need_params: bool,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(grad_x NHWC, weight grads, bias grads) of :func:`cascade_forward` (empty lists without ``need_params``)."""
    inputs = [_nhwc(x), *saved]
    g = _nhwc(grad)
    grad_ws: list[torch.Tensor] = []
    grad_bs: list[torch.Tensor] = []
    for s in reversed(range(len(weights))):
        grad_in, grad_w, grad_b = stage_backward(g, inputs[s], weights[s], dilations[s], True, need_params)
        assert grad_in is not None  # need_input=True
        g = grad_in
        if need_params:
            assert grad_w is not None and grad_b is not None
            grad_ws.insert(0, grad_w)
            grad_bs.insert(0, grad_b)
    return g, grad_ws, grad_bs


# ----------------------------------------------------------------------------------------------
# the 1x1 projection and the product


def gate(x: torch.Tensor, attn: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x * conv1x1(attn)`` with ``attn`` NHWC, as plain differentiable ops; the result has ``x``'s layout.

    Same dtype as ``x * F.conv2d(attn, weight, bias)`` in every autocast and grad mode.
    """
    out_channels, in_channels = weight.shape[:2]
    weight = weight.view(out_channels, in_channels)
    batch, _, height, width = attn.shape
    # without autograd the product may overwrite the projection (one allocation less), unless
    # that would change the result's dtype (autocast: bf16 projection, fp32 x)
    grad = torch.is_grad_enabled() and (
        x.requires_grad or attn.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if x.is_contiguous(memory_format=_CL) or not x.is_contiguous():
        projected = F.linear(attn.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        x_nhwc = _nhwc(x)
    else:
        # NCHW wanted: out[n] = W @ attn[n]^T + b, which BLAS reads transposed in place and writes NCHW
        # (bmm, not matmul: matmul would return a transposed view)
        attn_t = attn.permute(0, 2, 3, 1).reshape(batch, height * width, in_channels).transpose(1, 2)
        expanded = weight.expand(batch, -1, -1)
        if bias is None:
            projected = torch.bmm(expanded, attn_t)
        else:
            projected = torch.baddbmm(bias.view(1, -1, 1), expanded, attn_t)
        projected = projected.view(batch, out_channels, height, width)
        x_nhwc = x
    if not grad and projected.dtype == torch.result_type(projected, x):
        return projected.mul_(x_nhwc)
    return x_nhwc * projected
