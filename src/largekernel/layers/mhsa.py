"""SMT's multi-head self-attention with a depthwise "local" term on the values (Lin et al., 2023).

``out = proj(softmax(q k^T * scale) v + local_conv(v))`` over all ``N = H*W`` positions,
``scale = qk_scale or head_dim ** -0.5``. Parameter names equal the released SMT block's ``attn``
(``q``, ``kv``, ``local_conv``, ``proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from ._checks import check_nchw

__all__ = ["MSA"]


class MSA(nn.Module):
    """Global multi-head self-attention on NCHW maps (or tokens with :meth:`forward_tokens`).

    Args:
        dim: channels in and out; divisible by ``num_heads``.
        num_heads: attention heads.
        qkv_bias: bias on the ``q`` and ``kv`` projections (True in every published SMT).
        qk_scale: attention scale; ``None`` gives ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``; ``forward_tokens``: ``(B, H*W, dim) -> (B, H*W, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ConfigurationError(f"MSA: num_heads must be a positive divisor of dim {dim}, got {num_heads!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.local_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward_tokens(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """SMT's token form: ``(B, H*W, C) -> (B, H*W, C)``."""
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        q = self.q(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(batch, tokens, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # indexed, not unpacked: TorchScript cannot unpack a tensor
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        attended = attended.transpose(1, 2).reshape(batch, tokens, channels)
        # v back to (B, C, H, W): channel order head-major, as the heads were split
        v_map = (
            v.transpose(1, 2).reshape(batch, tokens, channels).transpose(1, 2).reshape(batch, channels, height, width)
        )
        x = attended + self.local_conv(v_map).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "MSA")
        batch, channels, height, width = x.shape
        out = self.forward_tokens(x.flatten(2).transpose(1, 2), height, width)
        return out.transpose(1, 2).reshape(batch, channels, height, width)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
