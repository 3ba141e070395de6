"""VAN: Visual Attention Network (Guo et al., arXiv 2202.09741), and VAN-LSKA (Lau et al., 2023).

A four-stage pyramid of NCHW blocks. Each block is
``x + layer_scale_1 * SpatialGating(BN(x))`` then ``x + layer_scale_2 * Mlp(BN(x))``, where the
spatial gating holds a large-kernel attention: LKA (VAN), LSKA (VAN-LSKA) or the trivial
undecomposed designs, at any kernel size. Parameter names equal the released checkpoints'
(``patch_embed1.proj``, ``block1.0.attn.spatial_gating_unit.conv0``, ``norm1``, ``head``), so
those load without conversion; HuggingFace and mmpretrain layouts are converted by
:func:`checkpoint_filter`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers import DropPath, SpatialGatingAttention
from ..layers.attention import ATTENTIONS
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

__all__ = ["VAN", "VAN_CONFIGS", "checkpoint_filter", "to_hf_layout", "to_mmpretrain_layout"]


class DWConv(nn.Module):
    """Depthwise 3x3 inside the MLP (key ``mlp.dwconv.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """1x1 conv -> depthwise 3x3 -> GELU -> dropout -> 1x1 conv -> dropout, on NCHW maps."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """VAN block: BN -> spatial gating (large-kernel attention) and BN -> MLP, each layer-scaled.

    Shapes: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        attention: str = "lka",
        kernel_size: int = 21,
        dilation: int | None = None,
        layer_scale_init_value: float = 1e-2,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialGatingAttention(dim, attention, kernel_size, dilation)  # type: ignore[arg-type]
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided conv (7x7/4 for the stem, 3x3/2 later) + BatchNorm: ``(B, C_in, H, W) -> (B, C, H/s, W/s)``."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VAN(PyramidBackbone):
    """Visual Attention Network with a choice of large-kernel attention.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        num_classes: classifier outputs; 0 gives no classifier (``forward`` returns pooled features).
        in_chans: input channels.
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        attention: ``'lka'`` (VAN), ``'lska'`` (VAN-LSKA), ``'lka_trivial'`` or ``'lska_trivial'``.
        kernel_size: the attention's kernel size (21 for VAN's LKA, 23 for VAN-LSKA).
        dilation: the attention's dilation; ``None`` uses the layers' rule.
        norm_eps: epsilon of the per-stage LayerNorms (1e-6 in every released model).
        layer_scale_init_value: initial layer scale.
        features_only: return the list of stage maps (NCHW, after each stage's norm) instead of logits;
            no classifier is built, nor stages after the last requested one.
        out_indices: which stages ``features_only`` returns.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``; stage ``i`` has stride ``4 * 2**i``.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attention: str = "lka",
        kernel_size: int = 21,
        dilation: int | None = None,
        norm_eps: float = 1e-6,
        layer_scale_init_value: float = 1e-2,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        num_stages: int | None = None,
    ) -> None:
        super().__init__()
        num_stages_found = check_stage_lists("VAN", embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios)
        if num_stages is not None and num_stages != num_stages_found:
            raise ValueError(f"VAN: num_stages={num_stages} but the per-stage lists have {num_stages_found} entries")
        if attention not in ATTENTIONS:
            raise ValueError(f"VAN: unknown attention {attention!r}; choose one of {sorted(ATTENTIONS)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"VAN: num_classes must be an int >= 0, got {num_classes!r}")
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.num_stages = num_stages_found
        self.attention = attention
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.num_features = self.embed_dims[-1]
        self.features_only = features_only
        self.grad_checkpointing = False
        reductions = [4 * 2**i for i in range(self.num_stages)]

        if features_only:
            self.out_indices = check_out_indices("VAN", out_indices, self.num_stages)
            built_stages = self.out_indices[-1] + 1
            self.feature_info = feature_info(self.embed_dims, reductions, self.out_indices)
        else:
            self.out_indices = ()
            built_stages = self.num_stages
            self.feature_info = feature_info(self.embed_dims, reductions, range(self.num_stages))
        self.built_stages = built_stages
        # keys a full checkpoint has that this (pruned) model intentionally lacks
        self.pruned_checkpoint_prefixes: tuple[str, ...] = ()
        if features_only:
            pruned = [f"{kind}{i + 1}." for i in range(built_stages, self.num_stages) for kind in ("patch_embed", "block", "norm")]
            self.pruned_checkpoint_prefixes = (*pruned, "head.")

        drop_path_rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        first_block = 0
        for i in range(built_stages):
            embed = OverlapPatchEmbed(
                patch_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
                in_chans=in_chans if i == 0 else self.embed_dims[i - 1],
                embed_dim=self.embed_dims[i],
            )
            blocks = nn.ModuleList(
                Block(
                    self.embed_dims[i],
                    mlp_ratios[i],
                    drop_rate,
                    drop_path_rates[first_block + j],
                    attention,
                    kernel_size,
                    dilation,
                    layer_scale_init_value,
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

    def _run_stage(self, x: torch.Tensor, i: int) -> torch.Tensor:
        x = getattr(self, f"patch_embed{i + 1}")(x)
        for block in getattr(self, f"block{i + 1}"):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint_block(block, x)
            else:
                x = block(x)
        # LayerNorm over channels, on the NHWC view (same as the reference's token form)
        norm = getattr(self, f"norm{i + 1}")
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def checkpoint_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter(state_dict)


# -- checkpoint layouts --------------------------------------------------------------------------
# Inside one block: our (reference) key prefix -> HuggingFace transformers VanLayer prefix.
_HF_BLOCK = {
    "norm1.": "pre_normomalization.",  # sic, as HF spells it
    "norm2.": "post_normalization.",
    "attn.proj_1.": "attention.pre_projection.conv.",
    "attn.proj_2.": "attention.post_projection.",
    "attn.spatial_gating_unit.conv0.": "attention.attention_layer.attention.depth_wise.",
    "attn.spatial_gating_unit.conv_spatial.": "attention.attention_layer.attention.depth_wise_dilated.",
    "attn.spatial_gating_unit.conv1.": "attention.attention_layer.attention.point_wise.",
    "layer_scale_1": "attention_scaling.weight",
    "layer_scale_2": "mlp_scaling.weight",
    "mlp.fc1.": "mlp.in_dense.",
    "mlp.dwconv.dwconv.": "mlp.depth_wise.",
    "mlp.fc2.": "mlp.out_dense.",
}
# Inside one block: ours -> mmpretrain VANBlock (LKA) and the LSKA repo's mm-style names.
_MM_BLOCK = {
    "attn.spatial_gating_unit.conv0.": "attn.spatial_gating_unit.DW_conv.",
    "attn.spatial_gating_unit.conv_spatial.": "attn.spatial_gating_unit.DW_D_conv.",
    "attn.spatial_gating_unit.conv0h.": "attn.spatial_gating_unit.DW_conv_h.",
    "attn.spatial_gating_unit.conv0v.": "attn.spatial_gating_unit.DW_conv_v.",
    "attn.spatial_gating_unit.conv_spatial_h.": "attn.spatial_gating_unit.DW_D_conv_h.",
    "attn.spatial_gating_unit.conv_spatial_v.": "attn.spatial_gating_unit.DW_D_conv_v.",
    # whole keys: a "mlp.dwconv." prefix would also catch our own names in mm-wrapped checkpoints
    "mlp.dwconv.dwconv.weight": "mlp.dwconv.weight",
    "mlp.dwconv.dwconv.bias": "mlp.dwconv.bias",
}
_HF_UNUSED = ("van.layernorm.",)  # HF builds this LayerNorm but its forward never uses it


def _rename_prefix(rest: str, table: dict[str, str]) -> str:
    for source in sorted(table, key=len, reverse=True):  # longest first: conv_spatial_h before conv_spatial
        if rest.startswith(source):
            return table[source] + rest[len(source) :]
    return rest


def to_hf_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our (reference) VAN keys -> HuggingFace ``VanForImageClassification`` keys (LKA models only).

    HF's unused final ``van.layernorm`` is emitted as an identity LayerNorm so the result loads strictly.
    """
    out: dict[str, torch.Tensor] = {}
    last_norm: tuple[int, torch.Tensor] | None = None
    for key, value in state_dict.items():
        if match := re.fullmatch(r"patch_embed(\d+)\.(proj|norm)\.(.+)", key):
            stage, part, rest = int(match[1]) - 1, match[2], match[3]
            part = "convolution" if part == "proj" else "normalization"
            out[f"van.encoder.stages.{stage}.embeddings.{part}.{rest}"] = value
        elif match := re.fullmatch(r"block(\d+)\.(\d+)\.(.+)", key):
            stage, index, rest = int(match[1]) - 1, match[2], match[3]
            out[f"van.encoder.stages.{stage}.layers.{index}.{_rename_prefix(rest, _HF_BLOCK)}"] = value
        elif match := re.fullmatch(r"norm(\d+)\.(.+)", key):
            stage = int(match[1]) - 1
            out[f"van.encoder.stages.{stage}.normalization.{match[2]}"] = value
            if last_norm is None or stage > last_norm[0]:
                last_norm = (stage, value)
        elif key.startswith("head."):
            out["classifier." + key[len("head.") :]] = value
        else:
            raise ValueError(f"to_hf_layout: unexpected VAN key {key!r}")
    if last_norm is not None:
        out["van.layernorm.weight"] = torch.ones_like(last_norm[1])
        out["van.layernorm.bias"] = torch.zeros_like(last_norm[1])
    return out


def to_mmpretrain_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our VAN keys -> mmpretrain ``ImageClassifier(backbone=VAN, head=LinearClsHead)`` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if match := re.fullmatch(r"patch_embed(\d+)\.proj\.(.+)", key):
            out[f"backbone.patch_embed{match[1]}.projection.{match[2]}"] = value
        elif match := re.fullmatch(r"block(\d+)\.(\d+)\.(.+)", key):
            out[f"backbone.blocks{match[1]}.{match[2]}.{_rename_prefix(match[3], _MM_BLOCK)}"] = value
        elif key.startswith("head."):
            out["head.fc." + key[len("head.") :]] = value
        else:  # patch_embed{i}.norm, norm{i}: same names
            out["backbone." + key] = value
    return out


def _from_hf_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    inverse = {hf: ours for ours, hf in _HF_BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_HF_UNUSED):
            continue
        plain = key.removeprefix("van.")
        if match := re.fullmatch(r"encoder\.stages\.(\d+)\.embeddings\.(convolution|normalization)\.(.+)", plain):
            part = "proj" if match[2] == "convolution" else "norm"
            out[f"patch_embed{int(match[1]) + 1}.{part}.{match[3]}"] = value
        elif match := re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", plain):
            out[f"block{int(match[1]) + 1}.{match[2]}.{_rename_prefix(match[3], inverse)}"] = value
        elif match := re.fullmatch(r"encoder\.stages\.(\d+)\.normalization\.(.+)", plain):
            out[f"norm{int(match[1]) + 1}.{match[2]}"] = value
        elif plain.startswith("classifier."):
            out["head." + plain[len("classifier.") :]] = value
        else:
            out[key] = value  # left for the loader to report as unexpected
    return out


def _from_mmpretrain_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    inverse = {mm: ours for ours, mm in _MM_BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        plain = key.removeprefix("backbone.")
        if match := re.fullmatch(r"patch_embed(\d+)\.projection\.(.+)", plain):
            out[f"patch_embed{match[1]}.proj.{match[2]}"] = value
        elif match := re.fullmatch(r"blocks?(\d+)\.(\d+)\.(.+)", plain):
            out[f"block{match[1]}.{match[2]}.{_rename_prefix(match[3], inverse)}"] = value
        elif plain.startswith("head.fc."):
            out["head." + plain[len("head.fc.") :]] = value
        else:
            out[plain] = value
    return out


def checkpoint_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a VAN checkpoint in any known layout (reference, HuggingFace, mmpretrain/mmseg/mmdet) to ours.

    Detection/segmentation checkpoints (``backbone.*`` plus neck and head keys) keep only the backbone.
    """
    keys = list(state_dict)
    if any(k.startswith(("van.encoder.", "encoder.stages.")) for k in keys):
        return _from_hf_layout(state_dict)
    if any(k.startswith("backbone.") for k in keys):
        # a detector/segmentor or an mmpretrain classifier: the backbone, plus mmpretrain's linear head
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(("backbone.", "head.fc."))}
        return _from_mmpretrain_layout(state_dict)
    if any(re.match(r"blocks\d+\.", k) or ".projection." in k or "DW_conv" in k for k in keys):
        return _from_mmpretrain_layout(state_dict)
    return dict(state_dict)


# -- default configurations (data, one entry per variant) ----------------------------------------
_B0 = {"embed_dims": (32, 64, 160, 256), "depths": (3, 3, 5, 2), "mlp_ratios": (8, 8, 4, 4)}
_B1 = {"embed_dims": (64, 128, 320, 512), "depths": (2, 2, 4, 2), "mlp_ratios": (8, 8, 4, 4)}
_B2 = {"embed_dims": (64, 128, 320, 512), "depths": (3, 3, 12, 3), "mlp_ratios": (8, 8, 4, 4)}
_B3 = {"embed_dims": (64, 128, 320, 512), "depths": (3, 5, 27, 3), "mlp_ratios": (8, 8, 4, 4)}
_LSKA = {"attention": "lska", "kernel_size": 23}
_HF_ORIGINAL = "https://huggingface.co/Visual-Attention-Network/{}-original/resolve/main/{}"

VAN_CONFIGS: dict[str, dict[str, Any]] = {
    "van_b0": {"arch": _B0, "url": _HF_ORIGINAL.format("VAN-Tiny", "van_tiny_754.pth.tar")},
    "van_b1": {"arch": _B1, "url": _HF_ORIGINAL.format("VAN-Small", "van_small_811.pth.tar")},
    "van_b2": {"arch": _B2, "url": _HF_ORIGINAL.format("VAN-Base", "van_base_828.pth.tar")},
    "van_b3": {"arch": _B3, "url": _HF_ORIGINAL.format("VAN-Large", "van_large_839.pth.tar")},
    # b4..b6: released as ImageNet-22K weights without a public direct link in the reference code
    "van_b4": {"arch": {"embed_dims": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "mlp_ratios": (8, 8, 4, 4)}},
    "van_b5": {"arch": {"embed_dims": (96, 192, 480, 768), "depths": (3, 3, 24, 3), "mlp_ratios": (8, 8, 4, 4)}},
    "van_b6": {"arch": {"embed_dims": (96, 192, 384, 768), "depths": (6, 6, 90, 6), "mlp_ratios": (8, 8, 4, 4)}},
    # VAN-LSKA: the b0..b3 architectures with LSKA (no classification weights with a public direct link)
    "van_lska_tiny": {"arch": {**_B0, **_LSKA}},
    "van_lska_small": {"arch": {**_B1, **_LSKA}},
    "van_lska_base": {"arch": {**_B2, **_LSKA}},
    "van_lska_large": {"arch": {**_B3, **_LSKA}},
}


def _create_van(variant: str, **overrides: Any) -> VAN:
    return create_from_config(VAN, VAN_CONFIGS, variant, overrides)  # type: ignore[return-value]


@register_model
def van_b0(**overrides: Any) -> VAN:
    """VAN-B0 (formerly VAN-Tiny): 4.1M params, 0.9 GMACs."""
    return _create_van("van_b0", **overrides)


@register_model
def van_b1(**overrides: Any) -> VAN:
    """VAN-B1 (formerly VAN-Small): 13.9M params, 2.5 GMACs."""
    return _create_van("van_b1", **overrides)


@register_model
def van_b2(**overrides: Any) -> VAN:
    """VAN-B2 (formerly VAN-Base): 26.6M params, 5.0 GMACs."""
    return _create_van("van_b2", **overrides)


@register_model
def van_b3(**overrides: Any) -> VAN:
    """VAN-B3 (formerly VAN-Large): 44.8M params, 9.0 GMACs."""
    return _create_van("van_b3", **overrides)


@register_model
def van_b4(**overrides: Any) -> VAN:
    """VAN-B4: 60.3M params, 12.2 GMACs."""
    return _create_van("van_b4", **overrides)


@register_model
def van_b5(**overrides: Any) -> VAN:
    """VAN-B5: 90.0M params, 17.2 GMACs."""
    return _create_van("van_b5", **overrides)


@register_model
def van_b6(**overrides: Any) -> VAN:
    """VAN-B6: 199.8M params, 38.9 GMACs."""
    return _create_van("van_b6", **overrides)


@register_model
def van_lska_tiny(**overrides: Any) -> VAN:
    """VAN-LSKA-Tiny: VAN-B0 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_tiny", **overrides)


@register_model
def van_lska_small(**overrides: Any) -> VAN:
    """VAN-LSKA-Small: VAN-B1 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_small", **overrides)


@register_model
def van_lska_base(**overrides: Any) -> VAN:
    """VAN-LSKA-Base: VAN-B2 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_base", **overrides)


@register_model
def van_lska_large(**overrides: Any) -> VAN:
    """VAN-LSKA-Large: VAN-B3 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_large", **overrides)
