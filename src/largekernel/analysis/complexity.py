"""Parameter and multiply-accumulate counts.

The papers' "FLOPs" are multiply-accumulates (MACs) of convolutions and linear layers; so are ours.
We count them with PyTorch's own ``FlopCounterMode`` (which counts 2 FLOPs per MAC) on a real forward
pass, so grouped, dilated and separable convolutions are counted from the ops actually run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigurationError

__all__ = ["count_macs", "count_parameters"]


def _register_cpu_attention_formula() -> None:
    """PyTorch counts scaled_dot_product_attention on CUDA and meta but has no formula for the CPU kernel."""
    from torch.utils import flop_counter

    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is None or cpu_attention in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(cpu_attention)
    def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_register_cpu_attention_formula()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BatchNorm statistics are not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_macs(
    module: nn.Module,
    input_shape: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
) -> int:
    """Multiply-accumulates of one forward pass (convolutions, linear layers, matmuls).

    Args:
        module: any module; it is run once in eval mode without gradients.
        input_shape: shape of a random input, e.g. ``(1, 3, 224, 224)``; or give ``inputs``.
        inputs: the input tensor to use instead.
    """
    if (input_shape is None) == (inputs is None):
        raise ConfigurationError("count_macs: give exactly one of input_shape or inputs")
    if inputs is None:
        assert input_shape is not None  # checked above: exactly one of the two is given
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        inputs = torch.randn(*input_shape, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2
