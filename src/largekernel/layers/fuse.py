"""Exact folds of evaluation-mode affine maps into neighbouring linear layers (for ``fuse()``).

All are algebra on eval-mode parameters; outputs agree to float rounding. A block's ``fuse()``
composes these; :func:`largekernel.optimize_for_inference` walks a model calling ``fuse()``.
"""

from __future__ import annotations

import copy
import itertools
from typing import TypeVar

import torch
from torch import nn

from ..errors import ConfigurationError

_Layer = TypeVar("_Layer", nn.Conv2d, nn.Linear)

__all__ = [
    "bn_scale_shift",
    "fold_affine_before_pointwise",
    "fold_batchnorm_into_conv",
    "fold_sequential",
    "scale_outputs",
]


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``s * x + t`` per channel (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigurationError(f"cannot fold {bn}: it tracks no running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _new_conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    folded = copy.deepcopy(conv)  # same geometry (kernel, stride, padding, dilation, groups, padding mode)
    folded.weight = nn.Parameter(weight.detach().clone())
    folded.bias = nn.Parameter(bias.detach().clone())
    return folded


def _bias(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    if layer.bias is not None:
        return layer.bias.detach()
    return torch.zeros(layer.weight.shape[0], device=layer.weight.device, dtype=layer.weight.dtype)


def fold_batchnorm_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (any kernel size, groups, stride)."""
    scale, shift = bn_scale_shift(bn)
    weight = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    return _new_conv_like(conv, weight, _bias(conv) * scale + shift)


def fold_affine_before_pointwise(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A 1x1 conv equal to ``conv(scale * x + shift)`` (exact: a 1x1 conv has no padding border)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), "valid"):
        raise ConfigurationError(f"can only fold an affine map into an ungrouped, unpadded 1x1 conv, got {conv}")
    weight = conv.weight.detach()
    matrix = weight.view(weight.shape[0], weight.shape[1])
    return _new_conv_like(conv, weight * scale.view(1, -1, 1, 1), _bias(conv) + matrix @ shift)


def scale_outputs(layer: _Layer, scale: torch.Tensor, extra_bias: torch.Tensor | None = None) -> _Layer:
    """``scale * layer(x) + extra_bias`` as one layer of the same kind."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bias = _bias(layer) * scale
    if extra_bias is not None:
        bias = bias + extra_bias
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(layer.weight.detach() * scale.view(shape))
    folded.bias = nn.Parameter(bias.detach().clone())
    return folded


def fold_sequential(sequence: nn.Sequential) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair of ``sequence`` in place; return how many."""
    folds = 0
    for first, second in itertools.pairwise(list(sequence._modules)):
        conv, bn = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            sequence._modules[first] = fold_batchnorm_into_conv(conv, bn)
            sequence._modules[second] = nn.Identity()
            folds += 1
    return folds
