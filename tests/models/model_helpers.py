"""Helpers shared by the model tests (a uniquely named module, unlike conftest)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic random, well-scaled values (layer scales near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif "layer_scale" in name or "gamma" in name or name.endswith(("norm.weight", "bn.weight")) or ".norm" in name and name.endswith("weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                fan_in = max(1, tensor[0].numel()) if tensor.dim() > 1 else 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return model
