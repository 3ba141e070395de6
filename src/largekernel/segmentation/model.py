"""Segmenters: any registered backbone's ``features_only`` maps plus a Semantic FPN or UperNet head.

``create_segmenter(backbone="van_b2", head="upernet", num_classes=150)`` builds the VAN-Segmentation
config; the same model is ``largekernel.create_model("van_b2_upernet", num_classes=150)``.
Attribute names follow mmseg's ``EncoderDecoder`` (``backbone``, ``neck``, ``decode_head``,
``auxiliary_head``) so an mmseg checkpoint loads key for key (the backbone part through the
backbone's own layout conversion).
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from .heads import FPN, FCNHead, FPNHead, UPerHead

__all__ = [
    "HEADS",
    "Segmenter",
    "create_segmenter",
    "create_segmenter_from_name",
    "list_segmenters",
    "split_segmenter_name",
]

# head name -> published settings (VAN-Segmentation configs/_base_/models/{fpn,upernet}_van.py)
HEADS: dict[str, dict[str, Any]] = {
    "fpn": {"neck_channels": 256, "channels": 128, "aux_head": False},
    "upernet": {"channels": 512, "pool_scales": (1, 2, 3, 6), "aux_head": True, "aux_channels": 256, "aux_index": 2},
}


class Segmenter(nn.Module):
    """Backbone + (neck) + decode head (+ auxiliary head); logits at the input resolution.

    Args:
        backbone: a ``features_only`` model with ``feature_info.channels()`` / ``.reduction()``.
        head: ``'fpn'`` (Semantic FPN) or ``'upernet'``.
        num_classes: output classes.
        channels: decode width (published: 128 for FPN's head, 512 for UperNet).
        neck_channels: FPN neck width (Semantic FPN only; published 256).
        pool_scales: UperNet's PPM output sizes.
        aux_head: build UperNet's auxiliary FCN head on the map ``aux_index`` (stage 3).
        aux_channels: its width (256).
        dropout: Dropout2d before each classifier (0.1).

    ``forward(x)`` gives ``(B, num_classes, H, W)`` for any ``H, W`` (the stride-4 logits are
    upsampled bilinearly, as mmseg does at test time); :meth:`forward_heads` gives the raw head
    outputs that training uses (the decode logits at stride 4 and the auxiliary logits at stride 16).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: str,
        num_classes: int,
        channels: int | None = None,
        neck_channels: int | None = None,
        pool_scales: tuple[int, ...] | None = None,
        aux_head: bool | None = None,
        aux_channels: int | None = None,
        aux_index: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ConfigurationError(f"unknown segmentation head {head!r}; choose one of {sorted(HEADS)}")
        info = getattr(backbone, "feature_info", None)
        if info is None or not hasattr(info, "channels"):
            raise TypeError(
                f"Segmenter: the backbone {type(backbone).__name__} has no feature_info (build it with features_only=True)"
            )
        published = HEADS[head]
        in_channels, strides = list(info.channels()), list(info.reduction())
        self.backbone = backbone
        self.head_name = head
        self.num_classes = num_classes
        self.neck: nn.Module | None = None
        if head == "fpn":
            neck_width = neck_channels or published["neck_channels"]
            self.neck = FPN(in_channels, neck_width)
            self.decode_head: nn.Module = FPNHead(
                [neck_width] * len(in_channels), strides, num_classes, channels or published["channels"], dropout
            )
        else:
            self.decode_head = UPerHead(
                in_channels,
                num_classes,
                channels or published["channels"],
                pool_scales or published["pool_scales"],
                dropout,
            )
        use_aux = published["aux_head"] if aux_head is None else aux_head
        self.aux_index = published.get("aux_index", 2) if aux_index is None else aux_index
        if use_aux and not -len(in_channels) <= self.aux_index < len(in_channels):
            raise ConfigurationError(
                f"Segmenter: aux_index {self.aux_index} is not one of the {len(in_channels)} backbone maps"
            )
        self.auxiliary_head: nn.Module | None = (
            FCNHead(
                in_channels[self.aux_index],
                num_classes,
                aux_channels or published.get("aux_channels", 256),
                dropout=dropout,
            )
            if use_aux
            else None
        )
        self.output_stride = strides[0]

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(decode logits at stride 4, auxiliary logits at stride 16 or None)``."""
        maps = self.backbone(x)
        aux = self.auxiliary_head(maps[self.aux_index]) if self.auxiliary_head is not None and self.training else None
        if self.neck is not None:
            maps = self.neck(maps)
        return self.decode_head(maps), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.forward_heads(x)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    def num_parameters(self, include_aux: bool = True) -> int:
        """Parameter count; ``include_aux=False`` leaves out the auxiliary head (unused at test time)."""
        total = sum(p.numel() for p in self.parameters())
        if not include_aux and self.auxiliary_head is not None:
            total -= sum(p.numel() for p in self.auxiliary_head.parameters())
        return total

    def checkpoint_filter(
        self, state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """Map a segmenter checkpoint (ours or mmseg's ``EncoderDecoder``) to this model's keys.

        The ``backbone.`` part goes through the backbone's own converter (reference, mmpretrain,
        HuggingFace layouts); head keys already have mmseg's names. An auxiliary head the model does
        not have is dropped with a warning (it only serves training).
        """
        return convert_segmenter_state_dict(self, state_dict)


def _unwrap_backbone(backbone: nn.Module) -> tuple[nn.Module, str]:
    # a timm features_only wrapper (FeatureGetterNet) holds the network under ``model.``
    inner = getattr(backbone, "model", None)
    if isinstance(inner, nn.Module) and hasattr(backbone, "out_indices"):
        return inner, "model."
    return backbone, ""


def convert_segmenter_state_dict(model: Segmenter, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """See :meth:`Segmenter.checkpoint_filter`."""
    backbone_part = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
    if not backbone_part and rest and not any(k.startswith(("decode_head.", "neck.", "auxiliary_head.")) for k in rest):
        raise ConfigurationError(
            "the checkpoint has no backbone./decode_head. keys, so it is not a segmenter checkpoint; "
            "load a classification checkpoint into the backbone with backbone_checkpoint= instead"
        )
    inner, prefix = _unwrap_backbone(model.backbone)
    if prefix and backbone_part and all(k.startswith(prefix) for k in backbone_part):
        backbone_part = {k[len(prefix) :]: v for k, v in backbone_part.items()}  # our own files
    converter = getattr(inner, "checkpoint_filter", None)
    if converter is not None and backbone_part and not set(backbone_part) <= set(inner.state_dict()):
        # a foreign layout; the backbone's converter recognises mmseg/mmdet files by their ``backbone.``
        backbone_part = converter({f"backbone.{k}": v for k, v in backbone_part.items()}, inner)
    pruned = tuple(getattr(inner, "pruned_checkpoint_prefixes", ()))
    out = {f"backbone.{prefix}{k}": v for k, v in backbone_part.items() if not (pruned and k.startswith(pruned))}
    if model.auxiliary_head is None and any(k.startswith("auxiliary_head.") for k in rest):
        warnings.warn(
            "checkpoint's auxiliary_head weights dropped: this segmenter has no auxiliary head",
            UserWarning,
            stacklevel=3,
        )
        rest = {k: v for k, v in rest.items() if not k.startswith("auxiliary_head.")}
    out.update(rest)
    return out


def split_segmenter_name(name: str) -> tuple[str, str] | None:
    """``'van_b2_upernet'`` -> ``('van_b2', 'upernet')``; ``None`` when ``name`` is no segmenter name."""
    for head in HEADS:
        if name.endswith(f"_{head}"):
            return name[: -len(head) - 1], head
    return None


def list_segmenters(pattern: str | None = None) -> list[str]:
    """``<backbone>_<head>`` for every registered backbone and head (``van_b0_fpn``, ``van_b0_upernet``...)."""
    from ..models import list_models

    names = sorted(f"{backbone}_{head}" for backbone in list_models() for head in HEADS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def create_segmenter(
    backbone: str = "van_b0",
    head: str = "upernet",
    num_classes: int = 150,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    backbone_checkpoint: str | os.PathLike[str] | None = None,
    backbone_args: dict[str, Any] | None = None,
    **head_args: Any,
) -> Segmenter:
    """Build a segmenter on a registered backbone.

    Args:
        backbone: a name from ``largekernel.list_models()`` (``'van_b2'``, ``'van_lska_small'``...).
        head: ``'fpn'`` or ``'upernet'``.
        num_classes: output classes (150 for ADE20K).
        pretrained: load the backbone's released ImageNet weights (what the papers start from).
        checkpoint_path: a whole segmenter checkpoint (ours, or mmseg's ``backbone.``/
            ``decode_head.``/``auxiliary_head.`` layout), loaded strictly.
        backbone_checkpoint: a classification checkpoint for the backbone alone (any layout the
            backbone converts; its classifier is dropped).
        backbone_args: ``create_model`` overrides for the backbone (``drop_path_rate``, ``depths``...).
        **head_args: :class:`Segmenter` options (``channels``, ``aux_head``, ``aux_channels``...).
    """
    from ..models import create_model

    if head not in HEADS:
        raise ConfigurationError(f"unknown segmentation head {head!r}; choose one of {sorted(HEADS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigurationError(f"create_segmenter: num_classes must be an int >= 1, got {num_classes!r}")
    if sum(x is not None and x is not False for x in (pretrained or None, checkpoint_path, backbone_checkpoint)) > 1:
        raise ConfigurationError(
            "create_segmenter: give at most one of pretrained=True, checkpoint_path, backbone_checkpoint"
        )
    overrides = {**(backbone_args or {}), "features_only": True, "out_indices": (0, 1, 2, 3)}
    for key in ("num_classes", "features_only", "out_indices"):
        if key in (backbone_args or {}):
            raise ConfigurationError(f"create_segmenter: backbone_args may not set {key!r} (the segmenter sets it)")
    network = create_model(backbone, pretrained=pretrained, checkpoint_path=backbone_checkpoint, **overrides)
    model = Segmenter(network, head, num_classes, **head_args)
    model.segmenter_config = {  # type: ignore[assignment]  # a plain dict attribute; nn.Module types attributes as Tensor | Module
        "backbone": backbone,
        "head": head,
        "num_classes": num_classes,
        "backbone_args": dict(backbone_args or {}),
        "head_args": dict(head_args),
    }
    if checkpoint_path is not None:
        from ..models.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint_path)
    return model


def create_segmenter_from_name(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    backbone_checkpoint: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Segmenter:
    """``create_model('van_b2_upernet', num_classes=150, ...)``: the registry's entry for segmenters.

    ``num_classes`` and the :class:`Segmenter` options go to the segmenter; any other override goes
    to the backbone. ``checkpoint_path`` is a whole segmenter checkpoint, ``backbone_checkpoint``
    classification weights for the backbone.
    """
    parts = split_segmenter_name(name)
    if parts is None:
        raise ConfigurationError(f"{name!r} is not a segmenter name (<backbone>_fpn or <backbone>_upernet)")
    backbone, head = parts
    segmenter_keys = {
        "num_classes",
        "channels",
        "neck_channels",
        "pool_scales",
        "aux_head",
        "aux_channels",
        "aux_index",
        "dropout",
    }
    head_args = {k: v for k, v in overrides.items() if k in segmenter_keys}
    backbone_args = {k: v for k, v in overrides.items() if k not in segmenter_keys}
    num_classes = head_args.pop("num_classes", 150)
    return create_segmenter(
        backbone,
        head,
        num_classes,
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        backbone_checkpoint=backbone_checkpoint,
        backbone_args=backbone_args,
        **head_args,
    )
