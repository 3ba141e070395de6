"""Helpers shared by the model tests (a uniquely named module, unlike conftest)."""

from __future__ import annotations

import torch
from torch import nn


def _is_scale(name: str) -> bool:
    # multiplicative parameters (norm weights, layer scales, BN variances) stay positive and near 1
    parts = name.split(".")
    leaf, owner = parts[-1], parts[-2] if len(parts) > 1 else ""
    if leaf in ("running_var", "layer_scale_1", "layer_scale_2", "gamma_1", "gamma_2"):
        return True
    return leaf == "weight" and ("norm" in owner or owner == "bn" or name == "patch_embed1.conv.1.weight")


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic random, well-scaled values (scales near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if _is_scale(name):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                fan_in = max(1, tensor[0].numel()) if tensor.dim() > 1 else 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return model
