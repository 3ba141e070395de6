"""Decode heads for semantic segmentation, laid out like mmsegmentation's so its checkpoints load.

* :class:`UPerHead` (Xiao et al., UPerNet): a pyramid pooling module (pool scales 1/2/3/6) on the
  last stage plus an FPN over all stages, 512 channels, fused by a 3x3 conv; logits at stride 4.
* :class:`FCNHead`: the auxiliary head UperNet trains on stage 3 (one 3x3 conv, 256 channels).
* :class:`FPN` + :class:`FPNHead` (Kirillov et al., Semantic FPN): a 256-channel FPN neck, then one
  upsampling branch per level (3x3 conv-norm-ReLU + 2x bilinear, repeated until stride 4), summed,
  128 channels; logits at stride 4.

Module and parameter names follow mmseg (``lateral_convs.0.conv.weight``, ``psp_modules.0.1.bn.*``,
``scale_heads.2.2.conv.*``, ``conv_seg.*``), so an mmseg ``state_dict`` maps key for key.
Normalisation is BatchNorm (the published configs use SyncBN; Lightning's ``sync_batchnorm`` or
``nn.SyncBatchNorm.convert_sync_batchnorm`` turns it into that for multi-device runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError

__all__ = ["FPN", "ConvModule", "FCNHead", "FPNHead", "UPerHead", "adaptive_avg_pool2d_exportable"]


def _resize(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """Conv, then BatchNorm and ReLU when asked (mmcv's ConvModule names: ``conv``, ``bn``).

    Without a norm the conv has a bias (as in mmcv); with one it has none.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, norm: bool = True, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.activate = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def adaptive_avg_pool2d_exportable(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` written as two matrix products.

    ONNX has no adaptive pooling for sizes other than 1 on inputs of unknown size; bin ``i`` of a
    side of length ``n`` averages ``[floor(i n / s), ceil((i + 1) n / s))``, the same bins PyTorch
    uses, so the two agree (tested) while this form traces with dynamic height and width.
    """

    def bins(n: Any) -> torch.Tensor:  # (output_size, n) averaging matrix; n is a traced size when exporting
        index = torch.arange(output_size, device=x.device)
        start = torch.div(index * n, output_size, rounding_mode="floor")
        end = torch.div((index + 1) * n + output_size - 1, output_size, rounding_mode="floor")
        position = torch.arange(n, device=x.device)[None, :]
        inside = (position >= start[:, None]) & (position < end[:, None])
        return inside.to(x.dtype) / (end - start)[:, None].to(x.dtype)

    height, width = x.shape[-2], x.shape[-1]
    return bins(height) @ x @ bins(width).transpose(0, 1)


class AdaptiveAvgPool(nn.Module):
    """Adaptive average pooling that exports to ONNX with dynamic sizes (see above)."""

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return adaptive_avg_pool2d_exportable(x, self.output_size)
        return F.adaptive_avg_pool2d(x, self.output_size)


class _ClassifierMixin(nn.Module):
    def _init_classifier(self, channels: int, num_classes: int, dropout: float) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigurationError(f"{type(self).__name__}: num_classes must be an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)  # mmseg's init of the classifier
        nn.init.zeros_(self.conv_seg.bias)  # type: ignore[arg-type]  # built with bias=True: never None

    def cls_seg(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class UPerHead(_ClassifierMixin):
    """UperNet's decoder: PPM on the last map, top-down FPN, concat of all levels, classifier.

    Args:
        in_channels: channels of the backbone maps, finest first (strides 4, 8, 16, 32).
        num_classes: output classes.
        channels: width of the PPM, FPN and fusion convs (512 in the published configs).
        pool_scales: PPM output sizes.
        dropout: Dropout2d before the classifier (0.1).

    Shapes: maps ``[(B, C_i, H/s_i, W/s_i)]`` -> ``(B, num_classes, H/s_0, W/s_0)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(scale), ConvModule(in_channels[-1], channels, 1)) for scale in pool_scales
        )
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self._init_classifier(channels, num_classes, dropout)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(module(x), x.shape[2:]) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, maps)]
        laterals.append(self.psp_forward(maps[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the coarser level, upsampled
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [_resize(x, outs[0].shape[2:]) for x in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class FCNHead(_ClassifierMixin):
    """mmseg's FCNHead as UperNet's auxiliary head: ``num_convs`` 3x3 conv-BN-ReLU, classifier.

    Shapes: ``(B, in_channels, h, w) -> (B, num_classes, h, w)``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 256, num_convs: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(ConvModule(in_channels if i == 0 else channels, channels, 3) for i in range(num_convs))
        )
        self._init_classifier(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_seg(self.convs(x))


class FPN(nn.Module):
    """The FPN neck of Semantic FPN (mmseg ``FPN``): 1x1 laterals, nearest top-down sum, 3x3 outputs.

    No norm and no activation, as in the published config. Shapes: ``[(B, C_i, ...)]`` ->
    ``[(B, out_channels, ...)]``, same sizes.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, norm=False, act=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, norm=False, act=False) for _ in in_channels
        )
        for module in self.modules():  # mmcv's xavier init of the FPN convs
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]  # norm=False above: every conv here has a bias

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, maps)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FPNHead(_ClassifierMixin):
    """Semantic FPN's head: per level, (3x3 conv-BN-ReLU, 2x upsample) until stride ``strides[0]``; sum.

    Args:
        in_channels: channels of each FPN level (256).
        strides: stride of each level (4, 8, 16, 32): level ``i`` gets ``max(1, log2(s_i / s_0))``
            conv stages, each followed by a 2x bilinear upsampling except at stride ``s_0``.
        num_classes: output classes.
        channels: width of the branches (128).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ConfigurationError(f"FPNHead: {len(in_channels)} in_channels but {len(strides)} strides")
        self.scale_heads = nn.ModuleList()
        for _level, (width, stride) in enumerate(zip(in_channels, strides)):
            length = max(1, int(math.log2(stride) - math.log2(strides[0])))
            layers: list[nn.Module] = []
            for k in range(length):
                layers.append(ConvModule(width if k == 0 else channels, channels, 3))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self._init_classifier(channels, num_classes, dropout)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](maps[0])
        for head, x in zip(self.scale_heads[1:], maps[1:]):
            output = output + _resize(head(x), output.shape[2:])  # exact 2^k unless a side was odd
        return self.cls_seg(output)
