"""Argument and input checks shared by the attention layers (the public boundary), and the fast-path guard."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["check_dim", "check_nchw", "fast_path_allowed"]


def check_dim(dim: int, module: str) -> None:
    """Raise unless ``dim`` (the channel count) is a positive int."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{module}: dim (channel count) must be an int, got {type(dim).__name__} {dim!r}")
    if dim <= 0:
        raise ValueError(f"{module}: dim (channel count) must be positive, got {dim}")


def _shape(x: torch.Tensor) -> str:
    # written out (not tuple(x.shape)) so TorchScript can compile it
    sizes = [str(s) for s in x.shape]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"


def check_nchw(x: torch.Tensor, dim: int, module: str) -> None:
    """Raise unless ``x`` is a 4-D (batch, channels, height, width) tensor with ``dim`` channels."""
    if not isinstance(x, torch.Tensor):
        if isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace: shapes are unknown, check when run
            return
        raise TypeError(f"{module}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{module}: expected a 4-D NCHW tensor (batch, {dim}, height, width), "
            f"got a {x.dim()}-D tensor of shape {_shape(x)}"
        )
    if x.shape[1] != dim:
        raise ValueError(
            f"{module}: expected {dim} input channels (NCHW dim 1), got {x.shape[1]} (input shape {_shape(x)})"
        )


_PLAIN_CONVS: tuple[type, ...] = ()


def _plain_conv_types() -> tuple[type, ...]:
    # nn.Conv2d, or a subclass whose forward computes the same (the NHWC drop-ins); imported on first use
    global _PLAIN_CONVS
    if not _PLAIN_CONVS:
        from ..kernels.cpu_modules import DepthwiseConv2d, PointwiseConv2d

        _PLAIN_CONVS = (nn.Conv2d, DepthwiseConv2d, PointwiseConv2d)
    return _PLAIN_CONVS


def fast_path_allowed(module: nn.Module, convs: list[nn.Module]) -> bool:
    """Whether ``module`` may compute ``convs`` (all its sub-modules) as functions of their weights.

    Not when a conv carries hooks (FLOP counters such as thop, feature extractors: they must see
    every conv run), global module hooks are set, a conv was replaced by a different module
    (quantised, LoRA...), or under ``torch.fx.symbolic_trace`` (the graph then holds the plain
    conv modules, as timm's FX feature extraction expects). Called on every forward: kept to
    attribute reads.
    """
    if is_fx_symbolic_tracing():
        return False
    hooks = nn.modules.module
    if (
        hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    ):
        return False
    plain = _PLAIN_CONVS or _plain_conv_types()
    for conv in convs:
        if (
            type(conv) not in plain
            or conv._forward_hooks
            or conv._forward_pre_hooks
            or conv._backward_hooks
            or conv._backward_pre_hooks
            or conv.padding_mode != "zeros"
        ):
            return False
    return True
