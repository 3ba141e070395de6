"""``optimize_for_inference``: fold what evaluation mode makes constant, and pick the fast layout.

A generic walker (timm's ``reparameterize_model`` pattern): every module that has a ``fuse()``
method is replaced by what it returns, children first. The maths lives beside the blocks:

* VAN block (:meth:`largekernel.models.van.Block.fuse`): BatchNorms and layer scales into the
  1x1 convs; VAN patch embeddings and SAM fold their BatchNorm into the conv before it;
* SMT block (:meth:`largekernel.models.smt.Block.fuse`): layer scales into ``attn.proj``/``mlp.fc2``;
* here, for any model: ``Conv2d -> BatchNorm2d`` pairs inside an ``nn.Sequential`` (SMT's stem)
  are folded, and stochastic depth and dropout (identities in evaluation) removed.

The result is an eval-mode deep copy in channels_last memory (where PyTorch's CPU convolutions
and our fast LKA/LSKA path are fastest), with 1x1 convs, GELUs and depthwise convs swapped for
their NHWC-friendly forms (:mod:`largekernel.kernels.cpu_modules`); the input model is left
untouched, whatever its mode.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import ConfigurationError
from .kernels.cpu_modules import swap_in_nhwc_modules
from .layers import LKA, LSKA, SAM, LKATrivial, LSKATrivial, SpatialGatingAttention
from .layers.drop import DropPath
from .layers.fuse import fold_batchnorm_into_conv, fold_sequential
from .models.van import FusedBlock as FoldedVANBlock  # the fold lives beside the VAN block

__all__ = ["FoldedVANBlock", "fold_batchnorm_into_conv", "fuse_modules", "optimize_for_inference"]

_OUR_LAYERS = (LKA, LSKA, LKATrivial, LSKATrivial, SAM, SpatialGatingAttention)


def fuse_modules(module: nn.Module) -> int:
    """Replace, in place and children first, every submodule having ``fuse()`` by its result.

    Also folds ``Conv2d -> BatchNorm2d`` pairs in ``nn.Sequential`` containers and removes
    dropout and drop-path. Returns the number of folds made (drop removals not counted).
    """
    folds = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (DropPath, nn.Dropout)):
            setattr(module, name, nn.Identity())  # identities in eval mode
            continue
        folds += fuse_modules(child)
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            setattr(module, name, fuse())
            folds += 1
    if isinstance(module, nn.Sequential):
        folds += fold_sequential(module)
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
    folds = fuse_modules(optimized)
    has_our_layers = any(isinstance(m, _OUR_LAYERS) for m in optimized.modules())
    if folds == 0 and not has_our_layers:
        raise ConfigurationError(
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
