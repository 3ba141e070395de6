"""Semantic segmentation: Semantic FPN and UperNet heads on any registered backbone.

``create_segmenter(backbone="van_b2", head="upernet", num_classes=150)`` or
``largekernel.create_model("van_b2_upernet", num_classes=150)``; see ``docs/segmentation.md``.
"""

from __future__ import annotations

from .heads import FPN, FCNHead, FPNHead, UPerHead
from .inference import predict_logits, slide_inference
from .model import HEADS, Segmenter, create_segmenter, create_segmenter_from_name, list_segmenters, split_segmenter_name

__all__ = [
    "FPN",
    "HEADS",
    "FCNHead",
    "FPNHead",
    "Segmenter",
    "UPerHead",
    "create_segmenter",
    "create_segmenter_from_name",
    "list_segmenters",
    "predict_logits",
    "slide_inference",
    "split_segmenter_name",
]
