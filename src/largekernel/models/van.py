"""VAN: Visual Attention Network (Guo et al., arXiv 2202.09741), and VAN-LSKA (Lau et al., 2023).

A four-stage pyramid of NCHW blocks. Each block is
``x + layer_scale_1 * SpatialGating(BN(x))`` then ``x + layer_scale_2 * Mlp(BN(x))``, where the
spatial gating holds a large-kernel attention: LKA (VAN), LSKA (VAN-LSKA) or the trivial
undecomposed designs, at any kernel size. Stages live in ``stages`` (``stages.0.downsample``,
``stages.0.blocks.0.attn.spatial_gating_unit.conv0``, ``stages.0.norm``, ``head``); the released
layout (``patch_embed1``, ``block1.0``, ``norm1``), HuggingFace and mmpretrain files are mapped by
:func:`checkpoint_filter_fn`, also inside ``model.load_state_dict``, so they load unconverted.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..checkpoint_io import unwrap_state_dict
from ..constants import INCEPTION_MEAN, INCEPTION_STD, VAN_CROP_PCT
from ..errors import ConfigurationError
from ..layers import DropPath, SpatialGatingAttention
from ..layers.attention import ATTENTIONS
from ..layers.fuse import bn_scale_shift, fold_affine_before_pointwise, fold_batchnorm_into_conv, scale_outputs
from ._builder import build_model, pretrained_cfg, register_pretrained_cfgs
from ._common import (
    PyramidBackbone,
    check_common_args,
    check_stage_lists,
    checkpoint_block,
    from_released_layout,
    to_released_layout,
)
from .registry import register_model

__all__ = [
    "VAN",
    "VAN_CONFIGS",
    "checkpoint_filter",
    "checkpoint_filter_fn",
    "default_cfgs",
    "to_hf_layout",
    "to_mmpretrain_layout",
]


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
        self.attn = SpatialGatingAttention(dim, attention, kernel_size, dilation)  # type: ignore[arg-type]  # attention is checked by create_attention
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))

    def fuse(self) -> FusedBlock:
        """The inference form: BatchNorms and layer scales folded into the 1x1 convs (eval mode only)."""
        return FusedBlock(self)


class FusedBlock(nn.Module):
    """A VAN block with its BatchNorms and layer scales folded away (inference only).

    ``y = x * residual_scale + proj_2'(gating(GELU(proj_1'(x))))``, then
    ``y + fc2'(GELU(dwconv(fc1'(y))))``; primes mark the folded convs:

    * ``norm1`` (BN, ``s x + t``) into ``proj_1`` and ``norm2`` into ``fc1``: a BN before a 1x1
      conv folds into it, ``W (s x + t) + b = (W s) x + (W t + b)``;
    * ``layer_scale_1`` into ``proj_2`` and ``layer_scale_2`` into ``fc2``. The attention's inner
      shortcut carries ``BN(x)``, so ``x * (1 + layer_scale_1 * s)`` stays as a per-channel
      residual scale and ``layer_scale_1 * t`` moves into ``proj_2``'s bias.
    """

    if TYPE_CHECKING:  # a registered buffer; declared for the type checker only (a class annotation breaks torch.jit)
        residual_scale: torch.Tensor

    def __init__(self, block: Block) -> None:
        super().__init__()
        attn = block.attn
        scale_1, shift_1 = bn_scale_shift(block.norm1)
        scale_2, shift_2 = bn_scale_shift(block.norm2)
        layer_scale_1 = block.layer_scale_1.detach()
        self.proj_1 = fold_affine_before_pointwise(attn.proj_1, scale_1, shift_1)
        self.activation = attn.activation
        self.spatial_gating_unit = attn.spatial_gating_unit
        self.proj_2 = scale_outputs(attn.proj_2, layer_scale_1, layer_scale_1 * shift_1)
        self.register_buffer("residual_scale", (1 + layer_scale_1 * scale_1).view(1, -1, 1, 1))
        self.fc1 = fold_affine_before_pointwise(block.mlp.fc1, scale_2, shift_2)
        self.dwconv = block.mlp.dwconv
        self.act = block.mlp.act
        self.fc2 = scale_outputs(block.mlp.fc2, block.layer_scale_2.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        x = torch.addcmul(attended, x, self.residual_scale)
        return x + self.fc2(self.act(self.dwconv(self.fc1(x))))


class OverlapPatchEmbed(nn.Module):
    """Strided conv (7x7/4 for the stem, 3x3/2 later) + BatchNorm: ``(B, C_in, H, W) -> (B, C, H/s, W/s)``."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm: nn.Module = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def fuse(self) -> OverlapPatchEmbed:
        """Fold the BatchNorm into the conv, in place (eval mode only)."""
        if isinstance(self.norm, nn.BatchNorm2d):
            self.proj = fold_batchnorm_into_conv(self.proj, self.norm)
            self.norm = nn.Identity()
        return self


class VANStage(nn.Module):
    """Patch embedding, blocks, then a LayerNorm over channels: NCHW in, normalised NCHW out."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        first: bool,
        drop_paths: Sequence[float],
        norm_eps: float = 1e-6,
        **block_args: Any,
    ) -> None:
        super().__init__()
        self.downsample = OverlapPatchEmbed(7 if first else 3, 4 if first else 2, in_chans, dim)
        self.blocks = nn.ModuleList(Block(dim, drop_path=drop_paths[j], **block_args) for j in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            # TorchScript compiles only block(x): checkpointing is a training feature of eager mode
            if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint_block(block, x)
            else:
                x = block(x)
        # LayerNorm over channels, on the NHWC view (same as the reference's token form)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class VAN(PyramidBackbone):
    """Visual Attention Network with a choice of large-kernel attention.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        num_classes: classifier outputs; 0 gives no classifier (``forward`` returns pooled features).
        in_chans: input channels.
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth in [0, 1), linear from 0 to this over all blocks.
        attention: ``'lka'`` (VAN), ``'lska'`` (VAN-LSKA), ``'lka_trivial'`` or ``'lska_trivial'``.
        kernel_size: the attention's kernel size (21 for VAN's LKA, 23 for VAN-LSKA).
        dilation: the attention's dilation; ``None`` uses the layers' rule.
        norm_eps: epsilon of the per-stage LayerNorms (1e-6 in every released model; mmpretrain 1e-5).
        layer_scale_init_value: initial layer scale.
        global_pool: ``'avg'`` (released), ``'max'``, ``'avgmax'`` or ``''`` (no pooling, no classifier).
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``; stage ``i`` has stride ``4 * 2**i``.
    ``features_only=True`` (through :func:`largekernel.create_model` or ``timm.create_model``)
    returns the stage maps instead.
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
        global_pool: str = "avg",
        num_stages: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        found = check_stage_lists("VAN", embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios)
        if num_stages is not None and num_stages != found:
            raise ConfigurationError(f"VAN: num_stages={num_stages} but the per-stage lists have {found} entries")
        if attention not in ATTENTIONS:
            raise ConfigurationError(f"VAN: unknown attention {attention!r}; choose one of {sorted(ATTENTIONS)}")
        check_common_args("VAN", num_classes, in_chans, drop_path_rate, global_pool)
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.num_stages = found
        self.attention = attention
        self.kernel_size = kernel_size
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.stages = nn.ModuleList(
                VANStage(
                    in_chans if i == 0 else self.embed_dims[i - 1],
                    self.embed_dims[i],
                    self.depths[i],
                    i == 0,
                    rates[sum(self.depths[:i]) : sum(self.depths[: i + 1])],
                    mlp_ratio=mlp_ratios[i],
                    drop=drop_rate,
                    attention=attention,
                    kernel_size=kernel_size,
                    dilation=dilation,
                    layer_scale_init_value=layer_scale_init_value,
                    norm_eps=norm_eps,
                )
                for i in range(found)
            )
            self._finish(self.embed_dims, num_classes, in_chans, global_pool, "stages.0.downsample.proj")
        if dtype is not None:
            self.to(dtype)

    @staticmethod
    def checkpoint_filter(
        state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, model)


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
_HF_UNUSED = (
    "layernorm.",
)  # HF builds this final LayerNorm but its forward never uses it (VanModel: no "van." prefix)


def _rename_prefix(rest: str, table: dict[str, str]) -> str:
    for source in sorted(table, key=len, reverse=True):  # longest first: conv_spatial_h before conv_spatial
        if rest.startswith(source):
            return table[source] + rest[len(source) :]
    return rest


def to_hf_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our (or the released) VAN keys -> HuggingFace ``VanForImageClassification`` keys (LKA models only).

    HF's unused final ``van.layernorm`` is emitted as an identity LayerNorm so the result loads strictly.
    """
    state_dict = to_released_layout(state_dict)
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
    """Our (or the released) VAN keys -> mmpretrain ``ImageClassifier(backbone=VAN, head=LinearClsHead)`` keys."""
    state_dict = to_released_layout(state_dict)
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
        plain = key.removeprefix("van.")
        if plain.startswith(_HF_UNUSED):
            continue
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


_MMPRETRAIN_LN_EPS = 1e-5  # mmpretrain's VAN builds its stage LayerNorms with the default eps


def _to_released(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    keys = list(state_dict)
    if any(k.startswith(("van.encoder.", "encoder.stages.")) for k in keys):
        return _from_hf_layout(state_dict), "hf"
    if any(k.startswith("backbone.") for k in keys):
        # a detector/segmentor or an mmpretrain classifier: the backbone, plus mmpretrain's linear head
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(("backbone.", "head.fc."))}
        layout = "mmpretrain" if any(".projection." in k for k in state_dict) else "backbone"
        return _from_mmpretrain_layout(state_dict), layout
    if any(re.match(r"blocks\d+\.", k) or ".projection." in k or "DW_conv" in k for k in keys):
        return _from_mmpretrain_layout(state_dict), "mmpretrain" if any(".projection." in k for k in keys) else "mm"
    return dict(state_dict), "released"


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Map a VAN checkpoint in any known layout to ours (``stages.*``); timm's ``pretrained_filter_fn``.

    Layouts: ours, the reference repos' (``patch_embed1``/``block1``/``norm1``), HuggingFace
    ``VanForImageClassification`` and headless ``VanModel``, mmpretrain (and mmdet/mmseg
    ``backbone.*`` files, of which the backbone is kept). Training wrappers (``state_dict``,
    ``state_dict_ema``, ``model``) are unwrapped. Given ``model``, an mmpretrain file also sets the
    stage LayerNorms' eps to mmpretrain's 1e-5, so outputs equal mmpretrain's.
    """
    state_dict = unwrap_state_dict(state_dict)
    released, layout = _to_released(state_dict)
    if layout == "mmpretrain" and model is not None:
        for stage in getattr(model, "stages", ()):
            stage.norm.eps = _MMPRETRAIN_LN_EPS
    return from_released_layout(released)


def checkpoint_filter(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """:func:`checkpoint_filter_fn` without a model (keys only)."""
    return checkpoint_filter_fn(state_dict)


# -- default configurations (data, one entry per variant) ----------------------------------------
_B0 = {"embed_dims": (32, 64, 160, 256), "depths": (3, 3, 5, 2), "mlp_ratios": (8, 8, 4, 4)}
_B1 = {"embed_dims": (64, 128, 320, 512), "depths": (2, 2, 4, 2), "mlp_ratios": (8, 8, 4, 4)}
_B2 = {"embed_dims": (64, 128, 320, 512), "depths": (3, 3, 12, 3), "mlp_ratios": (8, 8, 4, 4)}
_B3 = {"embed_dims": (64, 128, 320, 512), "depths": (3, 5, 27, 3), "mlp_ratios": (8, 8, 4, 4)}
_LSKA = {"attention": "lska", "kernel_size": 23}
_HF_ORIGINAL = "https://huggingface.co/Visual-Attention-Network/{}-original/resolve/main/{}"

VAN_CONFIGS: dict[str, dict[str, Any]] = {
    "van_b0": _B0,
    "van_b1": _B1,
    "van_b2": _B2,
    "van_b3": _B3,
    # b4..b6: released as ImageNet-22K weights without a public direct link in the reference code
    "van_b4": {"embed_dims": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "mlp_ratios": (8, 8, 4, 4)},
    "van_b5": {"embed_dims": (96, 192, 480, 768), "depths": (3, 3, 24, 3), "mlp_ratios": (8, 8, 4, 4)},
    "van_b6": {"embed_dims": (96, 192, 384, 768), "depths": (6, 6, 90, 6), "mlp_ratios": (8, 8, 4, 4)},
    # VAN-LSKA: the b0..b3 architectures with LSKA (no classification weights with a public direct link)
    "van_lska_tiny": {**_B0, **_LSKA},
    "van_lska_small": {**_B1, **_LSKA},
    "van_lska_base": {**_B2, **_LSKA},
    "van_lska_large": {**_B3, **_LSKA},
}


def _cfg(url: str | None = None, **kwargs: Any) -> dict[str, Any]:
    # the VAN and VAN-LSKA training code set timm's ViT _cfg(): mean = std = 0.5, crop 0.9, bicubic
    return pretrained_cfg(
        url,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        crop_pct=VAN_CROP_PCT,
        first_conv="stages.0.downsample.proj",
        license="apache-2.0",
        **kwargs,
    )


_VAN_PAPER = {
    "paper_ids": "arXiv:2202.09741",
    "origin_url": "https://github.com/Visual-Attention-Network/VAN-Classification",
}
_LSKA_PAPER = {
    "paper_ids": "arXiv:2309.01439",
    "origin_url": "https://github.com/StevenLauHKHK/Large-Separable-Kernel-Attention",
}
default_cfgs: dict[str, dict[str, Any]] = {
    "van_b0.in1k": _cfg(_HF_ORIGINAL.format("VAN-Tiny", "van_tiny_754.pth.tar"), **_VAN_PAPER),
    "van_b1.in1k": _cfg(_HF_ORIGINAL.format("VAN-Small", "van_small_811.pth.tar"), **_VAN_PAPER),
    "van_b2.in1k": _cfg(_HF_ORIGINAL.format("VAN-Base", "van_base_828.pth.tar"), **_VAN_PAPER),
    "van_b3.in1k": _cfg(_HF_ORIGINAL.format("VAN-Large", "van_large_839.pth.tar"), **_VAN_PAPER),
    **{name: _cfg(**_VAN_PAPER) for name in ("van_b4", "van_b5", "van_b6")},
    **{name: _cfg(**_LSKA_PAPER) for name in ("van_lska_tiny", "van_lska_small", "van_lska_base", "van_lska_large")},
}
register_pretrained_cfgs(default_cfgs)


def _create_van(variant: str, pretrained: bool = False, **kwargs: Any) -> VAN:
    return build_model(  # type: ignore[return-value]  # a VAN, or its features_only wrapper
        VAN,
        variant,
        pretrained,
        feature_cfg={"out_indices": (0, 1, 2, 3), "feature_cls": "getter"},
        pretrained_filter_fn=checkpoint_filter_fn,
        **{**VAN_CONFIGS[variant], **kwargs},
    )


@register_model
def van_b0(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B0 (formerly VAN-Tiny): 4.1M params, 0.9 GMACs."""
    return _create_van("van_b0", pretrained, **kwargs)


@register_model
def van_b1(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B1 (formerly VAN-Small): 13.9M params, 2.5 GMACs."""
    return _create_van("van_b1", pretrained, **kwargs)


@register_model
def van_b2(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B2 (formerly VAN-Base): 26.6M params, 5.0 GMACs."""
    return _create_van("van_b2", pretrained, **kwargs)


@register_model
def van_b3(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B3 (formerly VAN-Large): 44.8M params, 9.0 GMACs."""
    return _create_van("van_b3", pretrained, **kwargs)


@register_model
def van_b4(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B4: 60.3M params, 12.2 GMACs."""
    return _create_van("van_b4", pretrained, **kwargs)


@register_model
def van_b5(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B5: 90.0M params, 17.2 GMACs."""
    return _create_van("van_b5", pretrained, **kwargs)


@register_model
def van_b6(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B6: 199.8M params, 38.9 GMACs."""
    return _create_van("van_b6", pretrained, **kwargs)


@register_model
def van_lska_tiny(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-LSKA-Tiny: VAN-B0 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_tiny", pretrained, **kwargs)


@register_model
def van_lska_small(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-LSKA-Small: VAN-B1 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_small", pretrained, **kwargs)


@register_model
def van_lska_base(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-LSKA-Base: VAN-B2 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_base", pretrained, **kwargs)


@register_model
def van_lska_large(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-LSKA-Large: VAN-B3 with LSKA (kernel 23 by default)."""
    return _create_van("van_lska_large", pretrained, **kwargs)
