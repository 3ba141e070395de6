"""``optimize_for_inference``: fold what evaluation mode makes constant, and pick the fast layout.

Folds (all exact algebra on eval-mode parameters; outputs agree to float rounding):

* BatchNorm after a conv (VAN patch embeddings, SMT stem, SAM's ``proj0 -> bn``, any
  ``nn.Sequential`` conv -> BN pair): ``BN(W x + b) = (s W) x + (s b + t)``.
* VAN block: ``norm1`` (BN) into the attention's ``proj_1`` and ``norm2`` into the MLP's ``fc1``
  (a BN before a 1x1 conv folds into it: ``W (s x + t) + b = (W s) x + (W t + b)``); the layer
  scales into ``proj_2`` and ``fc2``. The attention's inner shortcut carries ``BN(x)``, so the block
  keeps ``x * (1 + layer_scale_1 * s)`` as a per-channel residual scale and moves
  ``layer_scale_1 * t`` into ``proj_2``'s bias.
* SMT block layer scales (``gamma_1``/``gamma_2``) into ``attn.proj`` / ``mlp.fc2``.
* Stochastic depth and dropout (identities in evaluation) are removed.

The result is an eval-mode deep copy in channels_last memory (where PyTorch's CPU convolutions
and our fast LKA/LSKA path are fastest), with 1x1 convs, GELUs and depthwise convs swapped for
their NHWC-friendly forms (:mod:`largekernel.kernels.cpu_modules`); the input model is left
untouched, whatever its mode.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from .kernels.cpu_modules import swap_in_nhwc_modules
from .layers import LKA, LSKA, SAM, LKATrivial, LSKATrivial, SpatialGatingAttention
from .layers.drop import DropPath

__all__ = ["FoldedVANBlock", "fold_batchnorm_into_conv", "optimize_for_inference"]

_OUR_LAYERS = (LKA, LSKA, LKATrivial, LSKATrivial, SAM, SpatialGatingAttention)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``s * x + t`` per channel (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it tracks no running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _new_conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode, device=weight.device, dtype=weight.dtype,
    )
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


def _conv_bias(conv: nn.Conv2d | nn.Linear) -> torch.Tensor:
    if conv.bias is not None:
        return conv.bias.detach()
    return torch.zeros(conv.weight.shape[0], device=conv.weight.device, dtype=conv.weight.dtype)


def fold_batchnorm_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (any kernel size, groups, stride)."""
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    return _new_conv_like(conv, weight, _conv_bias(conv) * scale + shift)


def _fold_affine_before_pointwise(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A 1x1 conv equal to ``conv(scale * x + shift)`` (exact: a 1x1 conv has no padding border)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), "valid"):
        raise ValueError(f"can only fold an affine map into an ungrouped, unpadded 1x1 conv, got {conv}")
    weight = conv.weight.detach()
    matrix = weight.view(weight.shape[0], weight.shape[1])
    return _new_conv_like(conv, weight * scale.view(1, -1, 1, 1), _conv_bias(conv) + matrix @ shift)


def _scale_outputs(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, extra_bias: torch.Tensor | None = None):
    """``scale * layer(x) + extra_bias`` as one layer of the same kind."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    weight = layer.weight.detach() * scale.view(shape)
    bias = _conv_bias(layer) * scale
    if extra_bias is not None:
        bias = bias + extra_bias
    if isinstance(layer, nn.Conv2d):
        return _new_conv_like(layer, weight, bias)
    folded = nn.Linear(layer.in_features, layer.out_features, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


class FoldedVANBlock(nn.Module):
    """A VAN block with its BatchNorms and layer scales folded away (inference only).

    ``y = x * residual_scale + proj_2'(gating(GELU(proj_1'(x))))``, then
    ``y + fc2'(GELU(dwconv(fc1'(y))))``; primes mark the folded convs.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        attn: SpatialGatingAttention = block.attn
        scale_1, shift_1 = _bn_scale_shift(block.norm1)
        scale_2, shift_2 = _bn_scale_shift(block.norm2)
        layer_scale_1 = block.layer_scale_1.detach()
        layer_scale_2 = block.layer_scale_2.detach()
        self.proj_1 = _fold_affine_before_pointwise(attn.proj_1, scale_1, shift_1)
        self.activation = attn.activation
        self.spatial_gating_unit = attn.spatial_gating_unit
        # layer_scale_1 * (proj_2(a) + BN(x)): the BN(x) shortcut splits into a scale and a bias
        self.proj_2 = _scale_outputs(attn.proj_2, layer_scale_1, layer_scale_1 * shift_1)
        self.register_buffer("residual_scale", (1 + layer_scale_1 * scale_1).view(1, -1, 1, 1))
        self.fc1 = _fold_affine_before_pointwise(block.mlp.fc1, scale_2, shift_2)
        self.dwconv = block.mlp.dwconv
        self.act = block.mlp.act
        self.fc2 = _scale_outputs(block.mlp.fc2, layer_scale_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        x = torch.addcmul(attended, x, self.residual_scale)
        return x + self.fc2(self.act(self.dwconv(self.fc1(x))))


def _is_van_block(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, "attn", None), SpatialGatingAttention)
        and isinstance(getattr(module, "norm1", None), nn.BatchNorm2d)
        and isinstance(getattr(module, "norm2", None), nn.BatchNorm2d)
        and isinstance(getattr(module, "layer_scale_1", None), nn.Parameter)
        and all(isinstance(getattr(getattr(module, "mlp", None), name, None), nn.Conv2d) for name in ("fc1", "fc2"))
        and isinstance(getattr(module, "drop_path", None), (nn.Identity, DropPath))
    )


def _fold(module: nn.Module) -> int:
    """Fold in place below ``module``; returns the number of folds made."""
    folds = 0
    for name, child in list(module.named_children()):
        if _is_van_block(child):
            setattr(module, name, FoldedVANBlock(child))
            folds += 1
            child = getattr(module, name)
        elif isinstance(child, (DropPath, nn.Dropout)):
            # identities in eval mode: removed, but not counted (model.eval() alone does as much)
            setattr(module, name, nn.Identity())
            continue
        folds += _fold(child)
    # conv -> BN pairs held as attributes (VAN patch embedding ``proj``/``norm``, SAM ``proj0``/``bn``)
    for conv_name, bn_name in (("proj", "norm"), ("proj0", "bn")):
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            setattr(module, conv_name, fold_batchnorm_into_conv(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folds += 1
    if isinstance(module, nn.Sequential):
        folds += _fold_sequential(module)
    # SMT block layer scales
    gamma_1, gamma_2 = getattr(module, "gamma_1", None), getattr(module, "gamma_2", None)
    if isinstance(gamma_1, nn.Parameter) and isinstance(gamma_2, nn.Parameter):
        proj, fc2 = getattr(getattr(module, "attn", None), "proj", None), getattr(getattr(module, "mlp", None), "fc2", None)
        if isinstance(proj, nn.Linear) and isinstance(fc2, nn.Linear):
            module.attn.proj = _scale_outputs(proj, gamma_1.detach())
            module.mlp.fc2 = _scale_outputs(fc2, gamma_2.detach())
            del module.gamma_1, module.gamma_2
            module.gamma_1 = module.gamma_2 = None
            folds += 1
    return folds


def _fold_sequential(sequence: nn.Sequential) -> int:
    folds = 0
    keys = list(sequence._modules)
    for first, second in itertools.pairwise(keys):
        conv, bn = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            sequence._modules[first] = fold_batchnorm_into_conv(conv, bn)
            sequence._modules[second] = nn.Identity()
            folds += 1
    return folds


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An inference copy of ``model``: BatchNorms and layer scales folded, drop layers removed, NHWC.

    Works on any of our models (VAN, VAN-LSKA, SMT) and on user models holding our layers or the
    patterns above. The copy is in eval mode: BatchNorm uses its running statistics, exactly as
    ``model.eval()`` would, whatever mode ``model`` is in (``model`` itself is not changed).
    Outputs match ``model.eval()(x)`` within float32 rounding (1e-4 relative); the copy is for
    inference only (its folded parameters no longer correspond to the checkpoint's).

    Args:
        model: the module to optimise.
        channels_last: convert parameters to channels_last memory (fastest on CPU; inputs may stay NCHW).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: nothing to fold and none of our layers inside (the call would change nothing).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize_for_inference expects an nn.Module, got {type(model).__name__}")
    optimized = copy.deepcopy(model).eval()
    folds = _fold(optimized)
    has_our_layers = any(isinstance(m, (*_OUR_LAYERS, FoldedVANBlock)) for m in optimized.modules())
    if folds == 0 and not has_our_layers:
        raise ValueError(
            f"optimize_for_inference: nothing to fold in {type(model).__name__}: no conv followed by "
            "BatchNorm, no VAN/SMT block, no dropout or drop-path, and no LKA/LSKA/SAM layer; "
            "use model.eval() instead"
        )
    if channels_last:
        swap_in_nhwc_modules(optimized)
        optimized = optimized.to(memory_format=torch.channels_last)
    optimized.eval()  # the modules made by the folds start in training mode
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    return optimized
