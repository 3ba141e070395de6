"""SAM: Scale-Aware Modulation (SMT, Lin et al., ICCV 2023).

1. ``v = Linear(x)``, ``s = Linear(x)``.
2. Multi-head mixed convolution: ``s``'s channels split into ``num_heads`` heads; head ``i`` gets a
   depthwise conv of kernel ``3 + 2i`` (3, 5, 7, 9 for four heads).
3. Scale-aware aggregation: channel ``c`` of head ``i`` moves to position ``c * num_heads + i`` so each
   group of ``num_heads`` channels holds one channel per scale; grouped 1x1 (``proj0``, groups =
   dim / num_heads) -> BatchNorm -> GELU -> 1x1 (``proj1``): the modulator.
4. ``out = proj(modulator * v)``.

Parameter names and shapes match the published SMT block's ``attn`` exactly, so the SMT model uses
this class through :meth:`SAM.forward_tokens`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigurationError
from ._checks import check_dim, check_nchw

__all__ = ["SAM"]


class SAM(nn.Module):
    """Scale-Aware Modulation on NCHW feature maps (or on tokens with :meth:`forward_tokens`).

    Args:
        dim: channels in and out; must be divisible by ``num_heads``.
        num_heads: number of mixed-conv heads (SMT's ``ca_num_heads``); head ``i`` uses kernel ``3 + 2i``.
        expand_ratio: width of the aggregation (``proj0`` outputs ``dim * expand_ratio``).
        qkv_bias: bias on the ``v`` and ``s`` projections (True in every published SMT).
        proj_drop: dropout after the output projection.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    __jit_unused_properties__ = ("kernel_sizes",)

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        expand_ratio: int = 2,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        check_dim(dim, "SAM")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ConfigurationError(f"SAM: num_heads must be a positive int, got {num_heads!r}")
        if dim % num_heads != 0:
            raise ConfigurationError(
                f"SAM: dim {dim} must be divisible by num_heads {num_heads} "
                f"(each head gets dim / num_heads channels); try num_heads in "
                f"{[h for h in range(1, min(dim, 8) + 1) if dim % h == 0]}"
            )
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int) or expand_ratio < 1:
            raise ConfigurationError(f"SAM: expand_ratio must be a positive int, got {expand_ratio!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.expand_ratio = expand_ratio
        self.head_dim = dim // num_heads

        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.s = nn.Linear(dim, dim, bias=qkv_bias)
        for i in range(num_heads):
            kernel = 3 + 2 * i
            conv = nn.Conv2d(self.head_dim, self.head_dim, kernel, padding=kernel // 2, groups=self.head_dim)
            setattr(self, f"local_conv_{i + 1}", conv)
        self.proj0 = nn.Conv2d(dim, dim * expand_ratio, 1, groups=self.head_dim)
        self.bn: nn.Module = nn.BatchNorm2d(dim * expand_ratio)
        self.act = nn.GELU()
        self.proj1 = nn.Conv2d(dim * expand_ratio, dim, 1)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def kernel_sizes(self) -> list[int]:
        return [3 + 2 * i for i in range(self.num_heads)]

    def modulator(self, s: torch.Tensor) -> torch.Tensor:
        """Mixed convs + scale-aware aggregation of ``s`` (B, H, W, C) -> modulator (B, C, H, W)."""
        batch, height, width, _ = s.shape
        # (heads, B, C/heads, H, W): head i holds channels [i*C/h, (i+1)*C/h)
        heads = s.reshape(batch, height, width, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2)
        if torch.jit.is_scripting():
            mixed = self._mixed_scripted(heads)
        else:
            mixed = [getattr(self, f"local_conv_{i + 1}")(heads[i]) for i in range(self.num_heads)]
        # stack on a new axis after the channel axis: channel c of head i -> c * heads + i
        interleaved = torch.stack(mixed, dim=2).reshape(batch, self.dim, height, width)
        return self.proj1(self.act(self.bn(self.proj0(interleaved))))

    def _mixed_scripted(self, heads: torch.Tensor) -> list[torch.Tensor]:
        # TorchScript cannot getattr a computed name; hasattr on a module is resolved when compiling.
        # The mypy ignores below: the convs are set by setattr, untyped on nn.Module. TorchScript reads
        # those comments too and wants each ignore to end its line, so the reason stands here.
        mixed: list[torch.Tensor] = []
        if hasattr(self, "local_conv_1"):
            mixed.append(self.local_conv_1(heads[0]))  # type: ignore[operator]
        if hasattr(self, "local_conv_2"):
            mixed.append(self.local_conv_2(heads[1]))  # type: ignore[operator]
        if hasattr(self, "local_conv_3"):
            mixed.append(self.local_conv_3(heads[2]))  # type: ignore[operator]
        if hasattr(self, "local_conv_4"):
            mixed.append(self.local_conv_4(heads[3]))  # type: ignore[operator]
        if hasattr(self, "local_conv_5"):
            mixed.append(self.local_conv_5(heads[4]))  # type: ignore[operator]
        if hasattr(self, "local_conv_6"):
            mixed.append(self.local_conv_6(heads[5]))  # type: ignore[operator]
        if hasattr(self, "local_conv_7"):
            mixed.append(self.local_conv_7(heads[6]))  # type: ignore[operator]
        if hasattr(self, "local_conv_8"):
            mixed.append(self.local_conv_8(heads[7]))  # type: ignore[operator]
        if len(mixed) != self.num_heads:
            raise RuntimeError("SAM: TorchScript supports up to 8 heads")
        return mixed

    def forward_tokens(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """SMT's token form: ``(B, H*W, C) -> (B, H*W, C)``."""
        batch, _, channels = x.shape
        v = self.v(x)
        modulator = self.modulator(self.s(x).reshape(batch, height, width, channels))
        x = modulator.flatten(2).transpose(1, 2) * v
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim, "SAM")
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        out = self.forward_tokens(tokens, height, width)
        return out.transpose(1, 2).reshape(batch, channels, height, width)

    def fuse(self) -> SAM:
        """Fold the aggregation's BatchNorm into ``proj0``, in place (inference only)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            from .fuse import fold_batchnorm_into_conv

            self.proj0 = fold_batchnorm_into_conv(self.proj0, self.bn)
            self.bn = nn.Identity()
        return self

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, kernel_sizes={self.kernel_sizes}, expand_ratio={self.expand_ratio}"
