"""Stochastic depth: drop a residual branch for whole samples during training."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigurationError

__all__ = ["DropPath", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero the branch for a random ``drop_prob`` fraction of samples, rescaling the kept ones.

    The kept samples are divided by ``1 - drop_prob`` so the expectation is unchanged.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # one draw per sample, broadcast over the rest
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (stochastic depth, Huang et al. 2016)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ConfigurationError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
