"""SMT: Scale-Aware Modulation Meet Transformer (Lin et al., ICCV 2023, arXiv 2307.08579).

A four-stage pyramid working on tokens ``(B, H*W, C)``. Stages 1-2 use Scale-Aware Modulation
(:class:`~largekernel.layers.SAM`, the convolutional "CA" blocks); stage 3 is the "mix" stage that
alternates SAM and multi-head self-attention (block ``j`` uses MSA when ``j`` is odd); stage 4 is
all MSA. Parameter names equal the released checkpoints' (``patch_embed1.conv.0``,
``block1.0.attn.local_conv_1``, ``block3.1.attn.kv``, ``norm4``, ``head``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import SAM, DropPath
from ._common import (
    PyramidBackbone,
    check_out_indices,
    check_stage_lists,
    checkpoint_block,
    create_from_config,
    feature_info,
    init_weights,
)
from .registry import register_model

__all__ = ["MSA", "SMT", "SMT_CONFIGS"]


class DWConv(nn.Module):
    """Depthwise 3x3 on tokens (key ``mlp.dwconv.dwconv``): ``(B, N, C) -> (B, N, C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, channels = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(batch, channels, height, width))
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """``fc1 -> GELU(x + dwconv(x)) -> dropout -> fc2 -> dropout`` on tokens."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.fc1(x)
        x = self.drop(self.act(x + self.dwconv(x, height, width)))
        return self.drop(self.fc2(x))


class MSA(nn.Module):
    """SMT's global self-attention with a depthwise 3x3 "local" term on the values.

    ``out = proj(softmax(q k^T * scale) v + local_conv(v))`` over all ``N = H*W`` tokens,
    ``scale = qk_scale or head_dim ** -0.5``. Keys: ``q``, ``kv``, ``local_conv``, ``proj``.

    Shapes: ``forward_tokens``: ``(B, N, dim) -> (B, N, dim)``.
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
            raise ValueError(f"MSA: num_heads must be a positive divisor of dim {dim}, got {num_heads!r}")
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
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        q = self.q(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(batch, tokens, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        attended = attended.transpose(1, 2).reshape(batch, tokens, channels)
        # v back to (B, C, H, W): channel order head-major, as the heads were split
        v_map = v.transpose(1, 2).reshape(batch, tokens, channels).transpose(1, 2).reshape(batch, channels, height, width)
        x = attended + self.local_conv(v_map).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.forward_tokens(x, height, width)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class Block(nn.Module):
    """SMT block: pre-norm SAM or MSA, then pre-norm MLP, each optionally layer-scaled.

    Shapes: ``(B, N, dim) -> (B, N, dim)`` with ``N = H*W`` given by ``(height, width)``.
    """

    def __init__(
        self,
        dim: int,
        ca_num_heads: int,
        sa_num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        ca_attention: bool = True,
        expand_ratio: int = 2,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn: SAM | MSA
        if ca_attention:
            self.attn = SAM(dim, num_heads=ca_num_heads, expand_ratio=expand_ratio, qkv_bias=qkv_bias, proj_drop=drop)
        else:
            self.attn = MSA(dim, sa_num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), layerscale_value))
            self.gamma_2 = nn.Parameter(torch.full((dim,), layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        attended = self.attn.forward_tokens(self.norm1(x), height, width)
        x = x + self.drop_path(attended if self.gamma_1 is None else self.gamma_1 * attended)
        mixed = self.mlp(self.norm2(x), height, width)
        return x + self.drop_path(mixed if self.gamma_2 is None else self.gamma_2 * mixed)


class Stem(nn.Module):
    """SMT's first patch embedding (the reference's ``Head``): conv/2 -> BN -> ReLU -> conv 2x2/2 -> LayerNorm.

    ``head_conv`` is the first kernel (3 for SMT-T/S, 7 for SMT-B/L), padded to keep the stride exact.
    Returns tokens ``(B, H/4 * W/4, dim)`` and the map size.
    """

    def __init__(self, head_conv: int, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, dim, head_conv, stride=2, padding=head_conv // 2, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 2, stride=2),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.conv(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class OverlapPatchEmbed(nn.Module):
    """Conv 3x3 stride 2 pad 1, then LayerNorm on the tokens."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


def _uses_sam(stage: int, block: int, ca_attentions: Sequence[int]) -> bool:
    # the reference's "mix" stage: stage 3 (index 2) alternates SAM (even j) and MSA (odd j)
    return False if stage == 2 and block % 2 == 1 else bool(ca_attentions[stage])


class SMT(PyramidBackbone):
    """Scale-Aware Modulation Transformer.

    Args:
        embed_dims, depths, mlp_ratios: per-stage channels, blocks and MLP expansion.
        ca_num_heads: SAM heads per stage (head ``i`` has kernel ``3 + 2i``); -1 where unused.
        sa_num_heads: self-attention heads per stage; -1 where unused.
        ca_attentions: 1 where a stage uses SAM (stage 3 still alternates with MSA), 0 for MSA.
        head_conv: first stem kernel (3 or 7).
        expand_ratio: SAM's aggregation width.
        qkv_bias, qk_scale: projections' bias and the attention scale (default ``head_dim**-0.5``).
        use_layerscale, layerscale_value: optional per-channel residual scales (``gamma_1/2``).
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans, drop_rate, attn_drop_rate, drop_path_rate: as usual.
        features_only, out_indices: return the NCHW stage maps (after each stage's norm) instead.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``; stage ``i`` has stride ``4 * 2**i``.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        ca_num_heads: Sequence[int] = (4, 4, 4, -1),
        sa_num_heads: Sequence[int] = (-1, -1, 8, 16),
        mlp_ratios: Sequence[float] = (8, 6, 4, 2),
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        depths: Sequence[int] = (2, 2, 8, 1),
        ca_attentions: Sequence[int] = (1, 1, 1, 0),
        head_conv: int = 3,
        expand_ratio: int = 2,
        num_classes: int = 1000,
        in_chans: int = 3,
        norm_eps: float = 1e-6,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        num_stages: int | None = None,
    ) -> None:
        super().__init__()
        found = check_stage_lists(
            "SMT",
            embed_dims=embed_dims,
            depths=depths,
            mlp_ratios=mlp_ratios,
            ca_num_heads=ca_num_heads,
            sa_num_heads=sa_num_heads,
            ca_attentions=ca_attentions,
        )
        if num_stages is not None and num_stages != found:
            raise ValueError(f"SMT: num_stages={num_stages} but the per-stage lists have {found} entries")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"SMT: num_classes must be an int >= 0, got {num_classes!r}")
        if isinstance(head_conv, bool) or not isinstance(head_conv, int) or head_conv < 1 or head_conv % 2 == 0:
            raise ValueError(f"SMT: head_conv must be an odd kernel size (3 or 7 in the papers), got {head_conv!r}")
        self._check_heads(embed_dims, depths, ca_num_heads, sa_num_heads, ca_attentions)
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.num_stages = found
        self.num_classes = num_classes
        self.num_features = self.embed_dims[-1]
        self.features_only = features_only
        self.grad_checkpointing = False
        reductions = [4 * 2**i for i in range(self.num_stages)]
        if features_only:
            self.out_indices = check_out_indices("SMT", out_indices, self.num_stages)
            self.built_stages = self.out_indices[-1] + 1
            self.feature_info = feature_info(self.embed_dims, reductions, self.out_indices)
            pruned = [f"{kind}{i + 1}." for i in range(self.built_stages, self.num_stages) for kind in ("patch_embed", "block", "norm")]
            self.pruned_checkpoint_prefixes: tuple[str, ...] = (*pruned, "head.")
        else:
            self.out_indices = ()
            self.built_stages = self.num_stages
            self.feature_info = feature_info(self.embed_dims, reductions, range(self.num_stages))
            self.pruned_checkpoint_prefixes = ()

        drop_path_rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        first_block = 0
        for i in range(self.built_stages):
            embed: nn.Module = (
                Stem(head_conv, self.embed_dims[0], in_chans) if i == 0 else OverlapPatchEmbed(self.embed_dims[i - 1], self.embed_dims[i])
            )
            blocks = nn.ModuleList(
                Block(
                    self.embed_dims[i],
                    ca_num_heads[i],
                    sa_num_heads[i],
                    mlp_ratios[i],
                    qkv_bias,
                    qk_scale,
                    use_layerscale,
                    layerscale_value,
                    drop_rate,
                    attn_drop_rate,
                    drop_path_rates[first_block + j],
                    _uses_sam(i, j, ca_attentions),
                    expand_ratio,
                    norm_eps,
                )
                for j in range(self.depths[i])
            )
            first_block += self.depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(self.embed_dims[i], eps=norm_eps))
        if not features_only:
            self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    @staticmethod
    def _check_heads(embed_dims, depths, ca_num_heads, sa_num_heads, ca_attentions) -> None:
        for stage, (dim, depth) in enumerate(zip(embed_dims, depths)):
            kinds = {_uses_sam(stage, j, ca_attentions) for j in range(depth)}
            for uses_sam in kinds:
                name, heads = ("ca_num_heads", ca_num_heads[stage]) if uses_sam else ("sa_num_heads", sa_num_heads[stage])
                kind = "scale-aware modulation (SAM)" if uses_sam else "self-attention (MSA)"
                if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
                    divisors = [h for h in range(1, min(dim, 32) + 1) if dim % h == 0]
                    raise ValueError(
                        f"SMT: stage {stage + 1} uses {kind} but {name}[{stage}] = {heads!r}; it must be a "
                        f"positive divisor of embed_dims[{stage}] = {dim} (e.g. one of {divisors})"
                    )

    def _run_stage(self, x: torch.Tensor, i: int) -> torch.Tensor:
        x, height, width = getattr(self, f"patch_embed{i + 1}")(x)
        for block in getattr(self, f"block{i + 1}"):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint_block(block, x, height, width)
            else:
                x = block(x, height, width)
        x = getattr(self, f"norm{i + 1}")(x)
        return x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def checkpoint_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detection/segmentation checkpoints: keep the ``backbone.`` part; the rest is our layout already."""
        if any(k.startswith("backbone.") for k in state_dict):
            return {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        return dict(state_dict)


# -- default configurations ----------------------------------------------------------------------
_COMMON = {"ca_num_heads": (4, 4, 4, -1), "sa_num_heads": (-1, -1, 8, 16), "qkv_bias": True, "ca_attentions": (1, 1, 1, 0), "expand_ratio": 2}
_RELEASES = "https://github.com/AFeng-x/SMT/releases/download/v1.0.0/"

SMT_CONFIGS: dict[str, dict[str, Any]] = {
    "smt_t": {
        "arch": {**_COMMON, "embed_dims": (64, 128, 256, 512), "mlp_ratios": (4, 4, 4, 2), "depths": (2, 2, 8, 1), "head_conv": 3},
        "url": _RELEASES + "smt_tiny.pth",
    },
    "smt_s": {
        "arch": {**_COMMON, "embed_dims": (64, 128, 256, 512), "mlp_ratios": (4, 4, 4, 2), "depths": (3, 4, 18, 2), "head_conv": 3},
        "url": _RELEASES + "smt_small.pth",
    },
    "smt_b": {
        "arch": {**_COMMON, "embed_dims": (64, 128, 256, 512), "mlp_ratios": (8, 6, 4, 2), "depths": (4, 6, 28, 2), "head_conv": 7},
        "url": _RELEASES + "smt_base.pth",
    },
    "smt_l": {
        "arch": {**_COMMON, "embed_dims": (96, 192, 384, 768), "mlp_ratios": (8, 6, 4, 2), "depths": (4, 6, 28, 4), "head_conv": 7},
        "url": _RELEASES + "smt_large_22k_224_ft.pth",  # ImageNet-22K pretrained, fine-tuned on 1K at 224
    },
}


def _create_smt(variant: str, **overrides: Any) -> SMT:
    return create_from_config(SMT, SMT_CONFIGS, variant, overrides)  # type: ignore[return-value]


@register_model
def smt_t(**overrides: Any) -> SMT:
    """SMT-T: 11.5M params, 2.4 GMACs."""
    return _create_smt("smt_t", **overrides)


@register_model
def smt_s(**overrides: Any) -> SMT:
    """SMT-S: 22.6M params, 4.7 GMACs."""
    return _create_smt("smt_s", **overrides)


@register_model
def smt_b(**overrides: Any) -> SMT:
    """SMT-B: 32.0M params, 7.7 GMACs."""
    return _create_smt("smt_b", **overrides)


@register_model
def smt_l(**overrides: Any) -> SMT:
    """SMT-L: 80.6M params, 17.7 GMACs."""
    return _create_smt("smt_l", **overrides)
