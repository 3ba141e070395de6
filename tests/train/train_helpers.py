"""Shared helpers for the training tests: tiny models, tiny image folders, one CPU thread.

(A plain module, not conftest.py: other test folders may have their own conftest.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
# A VAN-LSKA small enough for a test to train in seconds on 16 px images.
TINY_MODEL_ARGS = {"embed_dims": [8, 16], "depths": [1, 1], "mlp_ratios": [2, 2]}
# the light recipe (no Mixup or RandAugment): a few steps on 48 images must visibly learn
TINY_TRAIN = [
    "--model",
    "van_lska_tiny",
    "--model-args",
    json.dumps(TINY_MODEL_ARGS),
    "--kernel-size",
    "7",
    "--img-size",
    "16",
    "--batch-size",
    "32",
    "--threads",
    "1",
    "--recipe",
    "digits",
    "--quiet",
]


def write_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 16, mode: str = "L") -> Path:
    """PNGs whose class is visible: class c is a bright bar at row band c (plus noise)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(1)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = torch.randint(0, 60, (size, size), generator=generator, dtype=torch.uint8)
            band = size // classes
            pixels[label * band : (label + 1) * band] = 220
            array = pixels.numpy()
            image = Image.fromarray(array, mode="L")
            (image if mode == "L" else image.convert(mode)).save(folder / f"{index:03d}.png")
    return root
