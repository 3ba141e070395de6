"""Segmentation data: embedded digit scenes and ADE20K-style folders.

Every dataset yields ``(image float32 (3, H, W) normalised with the ImageNet mean/std, mask int64
(H, W))``; mask values are class ids or ``IGNORE_INDEX`` (255), as in mmseg.

* ``scenes``: generated digit scenes (:func:`largekernel.train.scenes.digit_scenes`): 11 classes,
  background and the ten digits; train and held-out scenes come from different seeds.
* A folder in ADE20K's layout::

      root/images/training/*.jpg       root/annotations/training/*.png   (same stems)
      root/images/validation/*.jpg     root/annotations/validation/*.png

  Annotations are PNG label maps (one class id per pixel). ``reduce_zero_label`` (ADE20K's own
  convention: 0 is "other", 1..150 the classes) maps 0 to 255 and shifts the rest down by one.
  ``classes.txt`` in ``root`` (one name per line) gives the class names and count.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DataError
from ..models._common import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IGNORE_INDEX",
    "SCENE_CLASSES",
    "SegmentationData",
    "SegmentationFolder",
    "TensorSegmentation",
    "load_segmentation_data",
    "pad_collate",
    "write_scene_folders",
]

IGNORE_INDEX = 255
SCENE_CLASSES: tuple[str, ...] = ("background", *(str(d) for d in range(10)))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# the embedded default: digits big enough that their strokes span a few stride-4 logits
SCENE_SIZE = 80
SCENE_LAYOUT: dict[str, Any] = {"digits_per_scene": (1, 2), "digit_scale": (0.55, 0.95)}
SCENE_SEEDS = {"train": 0, "val": 1_000_003}  # disjoint streams: no scene is in both


def _normalise(image_uint8_hwc: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(np.array(image_uint8_hwc, copy=True)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def denormalise(image: torch.Tensor) -> np.ndarray:
    """A normalised ``(3, H, W)`` tensor back to ``(H, W, 3)`` uint8 (for the overlay figure)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.detach().cpu() * std + mean).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


class TensorSegmentation(Dataset):
    """Images and masks held in memory (the generated scenes)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]


def scene_tensors(count: int, seed: int, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` digit scenes as normalised images ``(N, 3, S, S)`` and masks ``(N, S, S)``."""
    from .scenes import digit_scenes

    side = size or SCENE_SIZE
    scenes = list(digit_scenes(count, side, seed=seed, **SCENE_LAYOUT))
    if not scenes:
        return torch.empty(0, 3, side, side), torch.empty(0, side, side, dtype=torch.long)
    images = torch.stack([_normalise(scene.image) for scene in scenes])
    masks = torch.from_numpy(np.stack([scene.mask for scene in scenes])).long()
    return images, masks


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as label:
        if label.mode not in ("L", "P", "I", "I;16"):
            raise DataError(
                f"{path}: annotation must be a single-channel PNG label map (mode L or P), got mode {label.mode}"
            )
        return np.asarray(label).astype(np.int64)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise DataError(f"{path}: cannot read image ({error})") from None


class SegmentationFolder(Dataset):
    """One split of an ADE20K-style folder (see the module docstring).

    Args:
        root: the dataset folder.
        split: ``'training'`` or ``'validation'``.
        num_classes: labels must be in ``[0, num_classes)`` or 255 (after ``reduce_zero_label``).
        img_size: training crops are ``img_size`` squares; held-out images are resized so the
            short side is ``img_size`` (metrics are computed at that scale).
        train: random rescale (0.5-2x), crop (padded with the ignore label), horizontal flip.
        reduce_zero_label: ADE20K's convention (0 = "other" -> 255, ``c`` -> ``c - 1``).

    Raises:
        DataError: a missing folder, images without annotations or the reverse (named), and when
            an item is read: an image and mask of different sizes, or labels out of range.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        img_size: int,
        train: bool,
        reduce_zero_label: bool = False,
    ) -> None:
        root = Path(root)
        image_dir, label_dir = root / "images" / split, root / "annotations" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DataError(
                    f"{folder} not found: an ADE20K-style folder has images/{split}/ and annotations/{split}/"
                )
        images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() == ".png"}
        no_label, no_image = sorted(set(images) - set(labels)), sorted(set(labels) - set(images))
        if no_label or no_image:
            parts = []
            if no_label:
                parts.append(
                    f"{len(no_label)} image(s) in {image_dir} without an annotation PNG (e.g. {images[no_label[0]].name})"
                )
            if no_image:
                parts.append(
                    f"{len(no_image)} annotation(s) in {label_dir} without an image (e.g. {labels[no_image[0]].name})"
                )
            raise DataError("mismatched image/mask pairs: " + "; ".join(parts))
        if not images:
            raise DataError(f"{image_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.pairs = [(images[stem], labels[stem]) for stem in sorted(images)]
        self.num_classes, self.img_size, self.train, self.reduce_zero_label = (
            num_classes,
            img_size,
            train,
            reduce_zero_label,
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked image ``(H, W, 3)`` uint8 and label map ``(H, W)`` int64 of item ``index``."""
        image_path, label_path = self.pairs[index]
        image, mask = _read_image(image_path), _read_mask(label_path)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"mismatched image/mask pair: {image_path.name} is {image.shape[1]}x{image.shape[0]} but "
                f"{label_path} is {mask.shape[1]}x{mask.shape[0]} (width x height)"
            )
        if self.reduce_zero_label:
            mask = np.where(mask == 0, IGNORE_INDEX, mask - 1)
            mask[mask == IGNORE_INDEX - 1] = IGNORE_INDEX  # 255 stays ignored
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX) | (mask < 0)
        if bad.any():
            values = sorted(int(v) for v in np.unique(mask[bad]))[:8]
            shift = " after reduce_zero_label" if self.reduce_zero_label else ""
            raise DataError(
                f"{label_path}: label values {values} out of range{shift}: expected 0..{self.num_classes - 1} "
                f"or {IGNORE_INDEX} (ignored); check --num-classes / classes.txt"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_np, mask_np = self.load_pair(index)
        image = _normalise(image_np)[None]
        mask = torch.from_numpy(mask_np)[None, None].float()
        height, width = mask.shape[-2:]
        if self.train:  # mmseg's ADE20K pipeline, shortened: rescale, crop (cat_max_ratio left out), flip
            scale = random.uniform(0.5, 2.0) * self.img_size / min(height, width)
        else:
            scale = self.img_size / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        mask = F.interpolate(mask, size=size, mode="nearest")
        if self.train:
            pad_h, pad_w = max(self.img_size - size[0], 0), max(self.img_size - size[1], 0)
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=float(IGNORE_INDEX))
            top = random.randint(0, image.shape[-2] - self.img_size)
            left = random.randint(0, image.shape[-1] - self.img_size)
            image = image[..., top : top + self.img_size, left : left + self.img_size]
            mask = mask[..., top : top + self.img_size, left : left + self.img_size]
            if random.random() < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
        return image[0].contiguous(), mask[0, 0].long().contiguous()


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items of different sizes: images padded with 0, masks with the ignore label."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), 3, height, width)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.long)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


@dataclass
class SegmentationData:
    """A training set, a held-out set and their classes."""

    name: str
    train: TensorSegmentation | SegmentationFolder
    val: TensorSegmentation | SegmentationFolder
    classes: tuple[str, ...]
    img_size: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _folder_classes(root: Path, num_classes: int | None) -> tuple[str, ...]:
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
        if num_classes is not None and num_classes != len(names):
            raise DataError(f"--num-classes {num_classes} but {names_file} lists {len(names)} classes")
        return names
    if num_classes is None:
        raise DataError(
            f"{root}: give --num-classes (150 for ADE20K) or put a classes.txt (one name a line) in the folder"
        )
    return tuple(str(i) for i in range(num_classes))


def load_segmentation_data(
    data: str = "scenes",
    img_size: int | None = None,
    num_classes: int | None = None,
    reduce_zero_label: bool = False,
    train_count: int = 2000,
    val_count: int = 200,
) -> SegmentationData:
    """The embedded ``'scenes'`` (``train_count``/``val_count`` generated scenes) or an ADE20K-style folder."""
    if data == "scenes":
        size = img_size or SCENE_SIZE
        if num_classes not in (None, len(SCENE_CLASSES)):
            raise DataError(f"the embedded scenes have {len(SCENE_CLASSES)} classes, not --num-classes {num_classes}")
        train = TensorSegmentation(*scene_tensors(train_count, SCENE_SEEDS["train"], size))
        val = TensorSegmentation(*scene_tensors(val_count, SCENE_SEEDS["val"], size))
        return SegmentationData("scenes", train, val, SCENE_CLASSES, size)
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"--data {data!r} is neither the embedded 'scenes' nor a folder")
    classes = _folder_classes(root, num_classes)
    size = img_size or 512
    return SegmentationData(
        root.name,
        SegmentationFolder(root, "training", len(classes), size, train=True, reduce_zero_label=reduce_zero_label),
        SegmentationFolder(root, "validation", len(classes), size, train=False, reduce_zero_label=reduce_zero_label),
        classes,
        size,
    )


def write_scene_folders(root: str | Path, train: int = 16, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write digit scenes in ADE20K's folder layout (JPEG-free: PNG images, PNG label maps, classes.txt)."""
    from PIL import Image

    from .scenes import digit_scenes

    root = Path(root)
    for split, count, split_seed in (("training", train, seed), ("validation", val, seed + SCENE_SEEDS["val"])):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for number, scene in enumerate(digit_scenes(count, size, seed=split_seed, **SCENE_LAYOUT)):
            Image.fromarray(scene.image).save(root / "images" / split / f"scene_{number:05d}.png")
            Image.fromarray(scene.mask, mode="L").save(root / "annotations" / split / f"scene_{number:05d}.png")
    (root / "classes.txt").write_text("\n".join(SCENE_CLASSES) + "\n")
    return root
