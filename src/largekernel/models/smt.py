"""SMT: Scale-Aware Modulation Meet Transformer (Lin et al., ICCV 2023, arXiv 2307.08579).

A four-stage pyramid working on tokens ``(B, H*W, C)``. Stages 1-2 use Scale-Aware Modulation
(:class:`~largekernel.layers.SAM`, the convolutional "CA" blocks); stage 3 is the "mix" stage that
alternates SAM and multi-head self-attention (block ``j`` uses MSA when ``j`` is odd); stage 4 is
all MSA. Stages live in ``stages`` (``stages.0.downsample.conv.0``,
``stages.0.blocks.0.attn.local_conv_1``, ``stages.2.blocks.1.attn.kv``, ``stages.3.norm``, ``head``);
the released layout (``patch_embed1``, ``block1.0``, ``norm4``) and detector ``backbone.*`` files are
mapped by :func:`checkpoint_filter_fn`, also inside ``model.load_state_dict``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..checkpoint_io import unwrap_state_dict
from ..constants import IMAGENET_MEAN, IMAGENET_STD, SMT_CROP_PCT
from ..errors import ConfigurationError
from ..layers import SAM, DropPath
from ..layers.fuse import scale_outputs
from ..layers.mhsa import MSA
from ._builder import build_model, pretrained_cfg, register_pretrained_cfgs
from ._common import PyramidBackbone, check_common_args, check_stage_lists, checkpoint_block, from_released_layout
from .registry import register_model

__all__ = ["MSA", "SMT", "SMT_CONFIGS", "checkpoint_filter_fn", "default_cfgs"]


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
            self.gamma_1: nn.Parameter | None = nn.Parameter(torch.full((dim,), layerscale_value))
            self.gamma_2: nn.Parameter | None = nn.Parameter(torch.full((dim,), layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        attended = self.attn.forward_tokens(self.norm1(x), height, width)
        x = x + self.drop_path(attended if self.gamma_1 is None else self.gamma_1 * attended)
        mixed = self.mlp(self.norm2(x), height, width)
        return x + self.drop_path(mixed if self.gamma_2 is None else self.gamma_2 * mixed)

    def fuse(self) -> Block:
        """Fold the layer scales into ``attn.proj`` and ``mlp.fc2``, in place (inference only)."""
        if self.gamma_1 is not None and self.gamma_2 is not None:
            self.attn.proj = scale_outputs(self.attn.proj, self.gamma_1.detach())
            self.mlp.fc2 = scale_outputs(self.mlp.fc2, self.gamma_2.detach())
            del self.gamma_1, self.gamma_2
            self.gamma_1 = self.gamma_2 = None
        return self


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


class SMTStage(nn.Module):
    """Patch embedding (tokens), blocks, LayerNorm, back to a map: NCHW in, normalised NCHW out."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[Block], dim: int, norm_eps: float) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, height, width = self.downsample(x)
        for block in self.blocks:
            # TorchScript compiles only the plain call: checkpointing is a training feature of eager mode
            if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint_block(block, x, height, width)
            else:
                x = block(x, height, width)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width).contiguous()


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
        in_chans, drop_rate, attn_drop_rate: as usual; drop_path_rate: stochastic depth in [0, 1).
        global_pool: ``'avg'`` (released), ``'max'``, ``'avgmax'`` or ``''``.
        device, dtype: where and in which dtype to create the parameters.

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
        global_pool: str = "avg",
        num_stages: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
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
            raise ConfigurationError(f"SMT: num_stages={num_stages} but the per-stage lists have {found} entries")
        check_common_args("SMT", num_classes, in_chans, drop_path_rate, global_pool)
        if isinstance(head_conv, bool) or not isinstance(head_conv, int) or head_conv < 1 or head_conv % 2 == 0:
            raise ConfigurationError(
                f"SMT: head_conv must be an odd kernel size (3 or 7 in the papers), got {head_conv!r}"
            )
        self._check_heads(embed_dims, depths, ca_num_heads, sa_num_heads, ca_attentions)
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.num_stages = found
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        stages = []
        with torch.device(device) if device is not None else contextlib.nullcontext():
            for i in range(found):
                dim = self.embed_dims[i]
                downsample: nn.Module = (
                    Stem(head_conv, dim, in_chans) if i == 0 else OverlapPatchEmbed(self.embed_dims[i - 1], dim)
                )
                blocks = [
                    Block(
                        dim,
                        ca_num_heads[i],
                        sa_num_heads[i],
                        mlp_ratios[i],
                        qkv_bias,
                        qk_scale,
                        use_layerscale,
                        layerscale_value,
                        drop_rate,
                        attn_drop_rate,
                        rates[sum(self.depths[:i]) + j],
                        _uses_sam(i, j, ca_attentions),
                        expand_ratio,
                        norm_eps,
                    )
                    for j in range(self.depths[i])
                ]
                stages.append(SMTStage(downsample, blocks, dim, norm_eps))
            self.stages = nn.ModuleList(stages)
            self._finish(self.embed_dims, num_classes, in_chans, global_pool, "stages.0.downsample.conv.0")
        if dtype is not None:
            self.to(dtype)

    @staticmethod
    def _check_heads(embed_dims, depths, ca_num_heads, sa_num_heads, ca_attentions) -> None:
        for stage, (dim, depth) in enumerate(zip(embed_dims, depths)):
            kinds = {_uses_sam(stage, j, ca_attentions) for j in range(depth)}
            for uses_sam in kinds:
                name, heads = (
                    ("ca_num_heads", ca_num_heads[stage]) if uses_sam else ("sa_num_heads", sa_num_heads[stage])
                )
                kind = "scale-aware modulation (SAM)" if uses_sam else "self-attention (MSA)"
                if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
                    divisors = [h for h in range(1, min(dim, 32) + 1) if dim % h == 0]
                    raise ConfigurationError(
                        f"SMT: stage {stage + 1} uses {kind} but {name}[{stage}] = {heads!r}; it must be a "
                        f"positive divisor of embed_dims[{stage}] = {dim} (e.g. one of {divisors})"
                    )

    @staticmethod
    def checkpoint_filter(
        state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, model)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Map an SMT checkpoint to our layout; timm's ``pretrained_filter_fn``.

    Training wrappers (``model``, ``state_dict``, EMA) are unwrapped; detection/segmentation files
    keep their ``backbone.`` part; the released layout (``patch_embed1``/``block1``/``norm1``) is renamed.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return from_released_layout(state_dict)


# -- default configurations ----------------------------------------------------------------------
_COMMON = {
    "ca_num_heads": (4, 4, 4, -1),
    "sa_num_heads": (-1, -1, 8, 16),
    "qkv_bias": True,
    "ca_attentions": (1, 1, 1, 0),
    "expand_ratio": 2,
}
_RELEASES = "https://github.com/AFeng-x/SMT/releases/download/v1.0.0/"

SMT_CONFIGS: dict[str, dict[str, Any]] = {
    "smt_t": {
        **_COMMON,
        "embed_dims": (64, 128, 256, 512),
        "mlp_ratios": (4, 4, 4, 2),
        "depths": (2, 2, 8, 1),
        "head_conv": 3,
    },
    "smt_s": {
        **_COMMON,
        "embed_dims": (64, 128, 256, 512),
        "mlp_ratios": (4, 4, 4, 2),
        "depths": (3, 4, 18, 2),
        "head_conv": 3,
    },
    "smt_b": {
        **_COMMON,
        "embed_dims": (64, 128, 256, 512),
        "mlp_ratios": (8, 6, 4, 2),
        "depths": (4, 6, 28, 2),
        "head_conv": 7,
    },
    "smt_l": {
        **_COMMON,
        "embed_dims": (96, 192, 384, 768),
        "mlp_ratios": (8, 6, 4, 2),
        "depths": (4, 6, 28, 4),
        "head_conv": 7,
    },
}


def _cfg(url: str | None = None, **kwargs: Any) -> dict[str, Any]:
    # the SMT (Swin) evaluation transform: Resize(256/224 * size, bicubic), CenterCrop, ImageNet mean/std
    return pretrained_cfg(
        url,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop_pct=SMT_CROP_PCT,
        first_conv="stages.0.downsample.conv.0",
        license="mit",
        paper_ids="arXiv:2307.08579",
        origin_url="https://github.com/AFeng-x/SMT",
        **kwargs,
    )


default_cfgs: dict[str, dict[str, Any]] = {
    "smt_t.in1k": _cfg(_RELEASES + "smt_tiny.pth"),
    "smt_s.in1k": _cfg(_RELEASES + "smt_small.pth"),
    "smt_b.in1k": _cfg(_RELEASES + "smt_base.pth"),
    "smt_l.in22k_ft_in1k": _cfg(
        _RELEASES + "smt_large_22k_224_ft.pth"
    ),  # ImageNet-22K pretrained, 1K fine-tuned at 224
}
register_pretrained_cfgs(default_cfgs)


def _create_smt(variant: str, pretrained: bool = False, **kwargs: Any) -> SMT:
    return build_model(  # type: ignore[return-value]  # an SMT, or its features_only wrapper
        SMT,
        variant,
        pretrained,
        feature_cfg={"out_indices": (0, 1, 2, 3), "feature_cls": "getter"},
        pretrained_filter_fn=checkpoint_filter_fn,
        **{**SMT_CONFIGS[variant], **kwargs},
    )


@register_model
def smt_t(pretrained: bool = False, **kwargs: Any) -> SMT:
    """SMT-T: 11.5M params, 2.4 GMACs."""
    return _create_smt("smt_t", pretrained, **kwargs)


@register_model
def smt_s(pretrained: bool = False, **kwargs: Any) -> SMT:
    """SMT-S: 22.6M params, 4.7 GMACs."""
    return _create_smt("smt_s", pretrained, **kwargs)


@register_model
def smt_b(pretrained: bool = False, **kwargs: Any) -> SMT:
    """SMT-B: 32.0M params, 7.7 GMACs."""
    return _create_smt("smt_b", pretrained, **kwargs)


@register_model
def smt_l(pretrained: bool = False, **kwargs: Any) -> SMT:
    """SMT-L: 80.6M params, 17.7 GMACs."""
    return _create_smt("smt_l", pretrained, **kwargs)
