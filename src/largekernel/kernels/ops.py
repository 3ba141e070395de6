"""The depthwise cascade as one PyTorch operator, ``largekernel::depthwise_cascade``.

``torch.ops.largekernel.depthwise_cascade(x, weights, biases, dilations, backend)`` runs the chain
of 'same'-padded depthwise convolutions through a fast backend (``"cpu_nhwc"`` or ``"triton"``)
and returns ``[output, *saved]`` (``saved``: the stage inputs the backend's backward needs).
It is registered with :func:`torch.library.custom_op`, with a fake (meta) implementation and
autograd (``setup_context`` + backward, itself the op ``largekernel::depthwise_cascade_backward``),
so ``torch.compile`` and ``torch.export`` see one opaque operator. Both ops run with autocast
off: callers cast the inputs to the autocast dtype first (:func:`autocast_inputs`), as autocast
does for ``conv2d``, so outputs and gradients have the dtypes of the plain path.

:func:`plain_cascade` is the same cascade in ``torch.nn.functional.conv2d`` (the ``"torch"``
backend, and the reference in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["autocast_inputs", "depthwise_cascade_op", "plain_cascade"]

OP_BACKENDS = ("cpu_nhwc", "triton")


def plain_cascade(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], dilations: Sequence[int]
) -> Tensor:
    """The cascade with ``torch.nn.functional.conv2d``: what a chain of ``nn.Conv2d`` computes."""
    for w, b, d in zip(weights, biases, dilations):
        pad = (d * (w.shape[2] - 1) // 2, d * (w.shape[3] - 1) // 2)
        x = F.conv2d(x, w, b, padding=pad, dilation=d, groups=x.shape[1])
    return x


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast would run a convolution in on ``device_type``, or None when autocast is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_inputs(x: Tensor, tensors: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """``x`` and ``tensors`` cast to the autocast dtype of ``x``'s device (unchanged when autocast is off)."""
    dtype = autocast_dtype(x.device.type)
    if dtype is None or not x.is_floating_point() or x.dtype == torch.float64:
        return x, list(tensors)
    return x.to(dtype), [t.to(dtype) for t in tensors]


class _NoAutocast:
    """Autocast off for the op bodies (their inputs are already in the dtype autocast would pick)."""

    def __init__(self, device_type: str) -> None:
        self._context = torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else None

    def __enter__(self) -> None:
        if self._context is not None:
            self._context.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def _check_backend(backend: str) -> None:
    if backend not in OP_BACKENDS:
        raise ValueError(f"largekernel::depthwise_cascade: backend must be one of {OP_BACKENDS}, got {backend!r}")


@torch.library.custom_op("largekernel::depthwise_cascade", mutates_args=())
def depthwise_cascade_op(
    x: Tensor, weights: list[Tensor], biases: list[Tensor], dilations: list[int], backend: str
) -> list[Tensor]:
    """``[cascade output, *tensors saved for the backward]`` through ``backend``."""
    _check_backend(backend)
    with torch.no_grad(), _NoAutocast(x.device.type):
        if backend == "cpu_nhwc":
            from . import cpu

            return cpu.cascade_forward(x, weights, biases, dilations)
        from . import triton_cascade

        return [triton_cascade.fused_forward(x, weights, biases, dilations)]


@depthwise_cascade_op.register_fake
def _(x, weights, biases, dilations, backend):
    _check_backend(backend)
    if backend == "cpu_nhwc":  # output and every stage input after the first, channels_last
        return [torch.empty_like(x, memory_format=torch.channels_last) for _ in weights]
    return [torch.empty_like(x)]


@torch.library.custom_op("largekernel::depthwise_cascade_backward", mutates_args=())
def depthwise_cascade_backward_op(
    grad: Tensor,
    x: Tensor,
    saved: list[Tensor],
    weights: list[Tensor],
    biases: list[Tensor],
    dilations: list[int],
    backend: str,
    need_params: bool,
) -> list[Tensor]:
    """``[grad_x, *weight grads, *bias grads]`` (``[grad_x]`` alone without ``need_params``)."""
    _check_backend(backend)
    grad = grad.to(x.dtype)
    with torch.no_grad(), _NoAutocast(x.device.type):
        if backend == "cpu_nhwc":
            from . import cpu

            grad_x, grad_ws, grad_bs = cpu.cascade_backward(grad, x, saved, weights, dilations, need_params)
        else:
            from . import triton_cascade

            grad_x, grad_ws, grad_bs = triton_cascade.fused_backward(grad, x, weights, biases, dilations)
    return [grad_x, *grad_ws, *grad_bs] if need_params else [grad_x]


@depthwise_cascade_backward_op.register_fake
def _(grad, x, saved, weights, biases, dilations, backend, need_params):
    _check_backend(backend)
    fmt = torch.channels_last if backend == "cpu_nhwc" else torch.preserve_format
    grads = [torch.empty_like(x, memory_format=fmt)]
    if need_params:
        grads += [torch.empty_like(w) for w in weights] + [torch.empty_like(b) for b in biases]
    return grads


def _setup_context(ctx, inputs, output) -> None:
    x, weights, biases, dilations, backend = inputs
    ctx.n_stages, ctx.dilations, ctx.backend = len(weights), list(dilations), backend
    ctx.save_for_backward(x, *weights, *biases, *output[1:])


def _flat_needs(needs) -> list[bool]:
    flat: list[bool] = []
    for need in needs:
        flat.extend(_flat_needs(need) if isinstance(need, (list, tuple)) else [bool(need)])
    return flat


def _backward(ctx, grads):
    grad = grads[0]
    n = ctx.n_stages
    x, *rest = ctx.saved_tensors
    weights, biases, saved = rest[:n], rest[n : 2 * n], rest[2 * n :]
    need_params = any(_flat_needs(ctx.needs_input_grad[1:3]))
    nones = [None] * n  # a list input takes a list of gradients (None: no gradient)
    if grad is None:
        return None, nones, nones, None, None
    out = depthwise_cascade_backward_op(
        grad, x, list(saved), list(weights), list(biases), ctx.dilations, ctx.backend, need_params
    )
    grad_x = out[0].to(x.dtype)
    if need_params:
        return grad_x, list(out[1 : 1 + n]), list(out[1 + n :]), None, None
    return grad_x, nones, nones, None, None


depthwise_cascade_op.register_autograd(_backward, setup_context=_setup_context)
