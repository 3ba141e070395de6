"""Whole-image and sliding-window inference (mmseg's ``test_cfg`` modes ``whole`` and ``slide``)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigurationError

__all__ = ["predict_logits", "slide_inference"]


def slide_inference(
    model: nn.Module, images: torch.Tensor, num_classes: int, crop_size: int, stride: int
) -> torch.Tensor:
    """Logits of ``images`` from overlapping ``crop_size`` windows ``stride`` apart, averaged.

    As mmseg: windows start every ``stride`` pixels and the last one is pushed back inside the
    image; an image smaller than a window is one window of its own size. ``model(crop)`` must give
    logits at the crop's resolution. Returns ``(B, num_classes, H, W)``.
    """
    if crop_size < 1 or stride < 1 or stride > crop_size:
        raise ConfigurationError(
            f"slide_inference: need crop_size >= stride >= 1, got crop_size={crop_size}, stride={stride}"
        )
    batch, _, height, width = images.shape
    rows = max(height - crop_size + stride - 1, 0) // stride + 1
    cols = max(width - crop_size + stride - 1, 0) // stride + 1
    logits = images.new_zeros((batch, num_classes, height, width))
    counts = images.new_zeros((1, 1, height, width))
    for row in range(rows):
        for col in range(cols):
            y1, x1 = min(row * stride, max(height - crop_size, 0)), min(col * stride, max(width - crop_size, 0))
            y2, x2 = min(y1 + crop_size, height), min(x1 + crop_size, width)
            logits[:, :, y1:y2, x1:x2] += model(images[:, :, y1:y2, x1:x2])
            counts[:, :, y1:y2, x1:x2] += 1
    return logits / counts


def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    inference: str = "whole",
    crop_size: int = 512,
    stride: int = 341,
) -> torch.Tensor:
    """``inference='whole'``: one forward pass; ``'slide'``: :func:`slide_inference`."""
    if inference == "whole":
        return model(images)
    if inference == "slide":
        return slide_inference(model, images, num_classes, crop_size, stride)
    raise ConfigurationError(f"inference mode must be 'whole' or 'slide', got {inference!r}")
