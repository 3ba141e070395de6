"""What a segmentation run depends on; importable without torch (the CLI builds its help from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_SEGMENTER", "SCENES_BACKBONE_ARGS", "SCENES_HEAD_ARGS", "SegmentConfig"]

# The embedded default: VAN-LSKA-Tiny (one block a stage) with a Semantic FPN narrowed to 64
# channels, sized for the 80 px scenes and a 2-core CPU; the published widths are the defaults elsewhere.
DEFAULT_SEGMENTER = "van_lska_tiny_fpn"
SCENES_BACKBONE_ARGS: dict[str, Any] = {"depths": [1, 1, 2, 1]}
SCENES_HEAD_ARGS: dict[str, Any] = {"neck_channels": 64, "channels": 64}


@dataclass
class SegmentConfig:
    """Everything a ``largekernel train --task segment`` run depends on (``run.json`` in ``--out``)."""

    data: str = "scenes"
    model: str | None = None  # a segmenter name <backbone>_<fpn|upernet>; None: DEFAULT_SEGMENTER, sized for the scenes
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides (backbone and head options)
    checkpoint_path: str | None = None  # published backbone weights to start from
    num_classes: int | None = None  # folders: from classes.txt when not given
    reduce_zero_label: bool = False
    epochs: int = 16
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_iters: int = 50
    poly_power: float = 1.0
    aux_weight: float = 0.4
    ohem_thresh: float | None = None  # mmseg's OHEMPixelSampler on the decode loss (None: off)
    ohem_min_kept: int = 100_000  # per image, as mmseg
    drop_path: float = 0.0
    img_size: int | None = None
    inference: str = "whole"  # or "slide"
    crop_size: int | None = None  # slide window (default img_size)
    stride: int | None = None  # slide stride (default 2/3 of the window)
    train_scenes: int = 2000
    val_scenes: int = 200
    seed: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    out: str | None = None
    quiet: bool = False

    def segmenter(self) -> tuple[str, dict[str, Any]]:
        """The segmenter name and its ``create_model`` overrides."""
        name = self.model or DEFAULT_SEGMENTER
        overrides: dict[str, Any] = {}
        if self.model is None and self.checkpoint_path is None and self.data == "scenes":
            overrides.update(SCENES_BACKBONE_ARGS)
            overrides.update(SCENES_HEAD_ARGS)
        overrides.update(self.model_args)
        if self.drop_path:
            overrides["drop_path_rate"] = self.drop_path
        return name, overrides
