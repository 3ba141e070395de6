"""Semantic segmentation on Lightning: ``largekernel train --task segment`` / ``eval --task segment``.

Losses, schedule and metrics follow mmseg and the VAN-Segmentation configs: per-pixel cross-entropy
with ignore index 255 on logits upsampled to the label size, the auxiliary head's loss weighted
0.4, AdamW with no decay on norms and biases, linear warmup then poly decay per iteration, and
mIoU / per-class IoU / pixel accuracy from one confusion matrix (torchmetrics) over the whole
held-out set (classes absent from both prediction and labels are left out of the mean, as mmseg).

A run directory (``--out``) holds ``run.json`` (the settings), ``model.safetensors`` with
``model.json`` (how to rebuild the segmenter), ``metrics.json`` (per-class IoU too),
``metrics.csv`` (Lightning's per-epoch log), ``overlay.png`` (held-out images, ground truth and
prediction side by side) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError, MissingFileError
from ..segmentation.inference import predict_logits
from .segmentation_config import SegmentConfig
from .segmentation_data import IGNORE_INDEX, SegmentationData, denormalise, load_segmentation_data, pad_collate

__all__ = [
    "SegmentationModule",
    "evaluate_segmentation",
    "load_segmenter",
    "poly_lr_lambda",
    "save_overlay",
    "segmentation_loss",
    "segmentation_metrics",
    "train_segmentation",
]


def ohem_weights(logits: torch.Tensor, masks: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """mmseg's ``OHEMPixelSampler``: 1 for the hard pixels, 0 elsewhere.

    A labelled pixel is hard when its predicted probability of the true class is below ``thresh``,
    or below the ``min_kept * batch``-th smallest such probability when fewer than that are.
    ``logits`` are at the mask's size.
    """
    with torch.no_grad():
        valid = masks != IGNORE_INDEX
        probability = logits.softmax(1).gather(1, masks.masked_fill(~valid, 0)[:, None])[:, 0]
        ranked = probability[valid].sort().values
        threshold = thresh
        if ranked.numel() > 0:
            threshold = max(thresh, float(ranked[min(min_kept * len(masks), ranked.numel() - 1)]))
        return ((probability < threshold) & valid).to(logits.dtype)


def segmentation_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    aux_logits: torch.Tensor | None = None,
    aux_weight: float = 0.4,
    ohem_thresh: float | None = None,
    ohem_min_kept: int = 100_000,
) -> torch.Tensor:
    """Cross-entropy (ignore 255) of the decode logits, plus ``aux_weight`` x that of the auxiliary ones.

    With ``ohem_thresh``, the decode loss counts only the hard pixels (:func:`ohem_weights`), summed
    over them and divided by the number of labelled pixels (mmseg weights the per-pixel loss the same
    way); the auxiliary loss stays plain, as in mmseg's configs.
    """

    def upsample(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=masks.shape[-2:], mode="bilinear", align_corners=False)

    decode = upsample(logits)
    if ohem_thresh is None:
        loss = F.cross_entropy(decode, masks, ignore_index=IGNORE_INDEX)
    else:
        weights = ohem_weights(decode, masks, ohem_thresh, ohem_min_kept)
        per_pixel = F.cross_entropy(decode, masks, ignore_index=IGNORE_INDEX, reduction="none")
        loss = (per_pixel * weights).sum() / (masks != IGNORE_INDEX).sum().clamp(min=1)
    if aux_logits is not None:
        loss = loss + aux_weight * F.cross_entropy(upsample(aux_logits), masks, ignore_index=IGNORE_INDEX)
    return loss


def poly_lr_lambda(max_iters: int, warmup_iters: int = 0, power: float = 1.0, warmup_ratio: float = 1e-6):
    """mmcv's ``poly`` policy with linear warmup, as a LambdaLR factor of iteration ``i``.

    ``(1 - i / max_iters) ** power``; during warmup that is scaled from ``warmup_ratio`` up to 1.
    """

    def factor(i: int) -> float:
        poly = (1 - min(i, max_iters) / max_iters) ** power
        if i < warmup_iters:
            k = (1 - i / warmup_iters) * (1 - warmup_ratio)
            return poly * (1 - k)
        return poly

    return factor


def segmentation_metrics(confusion: torch.Tensor, classes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """mIoU, mean class accuracy, pixel accuracy and per-class IoU from a ``(true, predicted)`` confusion matrix.

    A class with no pixels in labels or predictions has IoU NaN (``null`` in JSON) and is left out
    of the means, as in mmseg.
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    labelled, predicted = confusion.sum(1), confusion.sum(0)
    union = labelled + predicted - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
    accuracy = torch.where(labelled > 0, true_positive / labelled.clamp(min=1), torch.full_like(labelled, float("nan")))
    names = classes or tuple(str(i) for i in range(len(iou)))
    return {
        "mIoU": 100 * float(iou.nanmean()),
        "mAcc": 100 * float(accuracy.nanmean()),
        "aAcc": 100 * float(true_positive.sum() / confusion.sum().clamp(min=1)),
        "per_class_iou": {name: (None if math.isnan(v) else 100 * v) for name, v in zip(names, iou.tolist())},
        "pixels": int(confusion.sum()),
    }


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # as the VAN-Segmentation configs: no decay for norms (and biases, 1-d layer scales)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or "norm" in name or ".bn." in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lightning():
    import lightning

    return lightning


class SegmentationModule(_lightning().LightningModule):  # type: ignore[misc]  # a base class from a lazy import: mypy cannot see it
    """The segmenter, its loss, optimiser and schedule, and the held-out confusion matrix."""

    def __init__(
        self,
        model: nn.Module,
        classes: tuple[str, ...],
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        max_iters: int = 1000,
        warmup_iters: int = 50,
        poly_power: float = 1.0,
        aux_weight: float = 0.4,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 100_000,
        inference: str = "whole",
        crop_size: int = 512,
        stride: int = 341,
    ) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.model: Any = model  # a Segmenter (forward_heads)
        self.classes = tuple(classes)
        self.lr, self.weight_decay = lr, weight_decay
        self.max_iters, self.warmup_iters, self.poly_power = max_iters, warmup_iters, poly_power
        self.aux_weight = aux_weight
        self.ohem_thresh, self.ohem_min_kept = ohem_thresh, ohem_min_kept
        self.inference, self.crop_size, self.stride = inference, crop_size, stride
        self.confusion = MulticlassConfusionMatrix(len(classes), ignore_index=IGNORE_INDEX)
        self.last_metrics: dict[str, Any] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, images, len(self.classes), self.inference, self.crop_size, self.stride)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        images, masks = batch
        logits, aux = self.model.forward_heads(images)
        loss = segmentation_loss(logits, masks, aux, self.aux_weight, self.ohem_thresh, self.ohem_min_kept)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(images))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        images, masks = batch
        logits = self(images)
        self.log(
            "val/loss", F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX), on_epoch=True, batch_size=len(images)
        )
        self.confusion.update(logits.argmax(1), masks)

    def on_validation_epoch_end(self) -> None:
        metrics = segmentation_metrics(self.confusion.compute().cpu(), self.classes)
        self.confusion.reset()
        self.last_metrics = metrics
        self.log_dict(
            {"val/mIoU": metrics["mIoU"], "val/aAcc": metrics["aAcc"], "val/mAcc": metrics["mAcc"]},
            prog_bar=True,
            sync_dist=False,
        )

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(_parameter_groups(self.model, self.weight_decay), lr=self.lr, betas=(0.9, 0.999))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, poly_lr_lambda(self.max_iters, self.warmup_iters, self.poly_power)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# -- runs ----------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)  # atomic: a reader never sees half a file


def _set_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ConfigurationError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))


def _check_config(config: SegmentConfig) -> None:
    for name in ("epochs", "batch_size", "train_scenes", "val_scenes"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config.lr <= 0:
        raise ConfigurationError(f"--lr must be positive, got {config.lr}")
    if config.inference not in ("whole", "slide"):
        raise ConfigurationError(f"--inference must be 'whole' or 'slide', got {config.inference!r}")
    if config.img_size is not None and config.img_size < 32:
        raise ConfigurationError(f"--img-size must be at least 32, got {config.img_size}")


def build_segmenter(config: SegmentConfig, num_classes: int) -> nn.Module:
    """The segmenter a config asks for, with the data's class count (and backbone weights if given)."""
    from ..segmentation.model import create_segmenter_from_name, split_segmenter_name

    name, overrides = config.segmenter()
    parts = split_segmenter_name(name)
    if parts is None:
        raise ConfigurationError(
            f"--model {name!r} is not a segmenter: use <backbone>_fpn or <backbone>_upernet (e.g. van_b0_upernet)"
        )
    if config.checkpoint_path is not None and not Path(config.checkpoint_path).is_file():
        raise MissingFileError(f"--checkpoint-path {config.checkpoint_path} does not exist")
    return create_segmenter_from_name(
        name, num_classes=num_classes, backbone_checkpoint=config.checkpoint_path, **overrides
    )


def _inference_settings(config: SegmentConfig, img_size: int) -> dict[str, Any]:
    crop = config.crop_size or img_size
    return {"inference": config.inference, "crop_size": crop, "stride": config.stride or max(1, crop * 2 // 3)}


def train_segmentation(config: SegmentConfig) -> dict[str, Any]:
    """Fit a segmenter as ``config`` says, write the run directory, return the summary."""
    lightning = _lightning()
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    _check_config(config)
    _set_threads(config.threads)
    from ..segmentation.model import split_segmenter_name

    if split_segmenter_name(config.segmenter()[0]) is None:  # before generating or reading any data
        raise ConfigurationError(
            f"--model {config.model!r} is not a segmenter: use <backbone>_fpn or <backbone>_upernet (e.g. van_b0_upernet)"
        )
    start = time.perf_counter()
    out = Path(config.out or f"runs/segment-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "run.json", asdict(config))
    lightning.seed_everything(config.seed, verbose=False)
    if config.quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    data = load_segmentation_data(
        config.data,
        config.img_size,
        config.num_classes,
        config.reduce_zero_label,
        config.train_scenes,
        config.val_scenes,
    )
    model = build_segmenter(config, data.num_classes)
    collate = pad_collate
    train_loader = DataLoader(
        data.train,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(data.train) > config.batch_size,
        num_workers=config.num_workers,
        collate_fn=collate,
    )
    val_loader = DataLoader(
        data.val, batch_size=max(1, config.batch_size), num_workers=config.num_workers, collate_fn=collate
    )
    max_iters = config.epochs * len(train_loader)
    settings = _inference_settings(config, data.img_size)
    module = SegmentationModule(
        model,
        data.classes,
        config.lr,
        config.weight_decay,
        max_iters,
        min(config.warmup_iters, max_iters // 4),
        config.poly_power,
        config.aux_weight,
        config.ohem_thresh,
        config.ohem_min_kept,
        **settings,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings(
            "ignore", message=".*predict_dataloader.*|.*LeafSpec.*|.*sync_dist.*|.*exists and is not empty.*"
        )
        trainer = lightning.Trainer(
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            precision=config.precision,
            default_root_dir=str(out),
            logger=CSVLogger(str(out), name="", version=""),
            enable_checkpointing=False,
            enable_progress_bar=not config.quiet,
            enable_model_summary=not config.quiet,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=max(1, config.epochs),
            log_every_n_steps=max(1, min(10, len(train_loader))),
        )
        trainer.fit(module, train_loader, val_loader)
    train_seconds = time.perf_counter() - start
    metrics = module.last_metrics
    name, overrides = config.segmenter()
    description = {
        "model": name,
        "overrides": overrides,
        "num_classes": data.num_classes,
        "classes": list(data.classes),
        "img_size": data.img_size,
        "data": config.data,
        "reduce_zero_label": config.reduce_zero_label,
        **settings,
    }
    from ..models.checkpoint import save_checkpoint

    save_checkpoint(model, out / "model.safetensors", metadata={"architecture": name})
    _write_json(out / "model.json", description)
    _write_json(out / "metrics.json", metrics)
    save_overlay(model.eval(), data.val, out / "overlay.png", data.num_classes, settings)
    summary = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "data": data.name,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "epochs": config.epochs,
        "iterations": max_iters,
        "mIoU": metrics.get("mIoU"),
        "aAcc": metrics.get("aAcc"),
        "mAcc": metrics.get("mAcc"),
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "out": str(out),
    }
    _write_json(out / "summary.json", summary)
    return summary


def load_segmenter(checkpoint: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a segmenter trained by ``largekernel train --task segment`` from its ``model.safetensors``."""
    from ..models.checkpoint import load_checkpoint
    from ..segmentation.model import create_segmenter_from_name

    path = Path(checkpoint)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    description_path = path.with_suffix(".json")
    if not description_path.is_file():
        raise MissingFileError(
            f"{path} needs its description {description_path} beside it (written by largekernel train --task segment)"
        )
    description = json.loads(description_path.read_text())
    model = create_segmenter_from_name(
        description["model"], num_classes=description["num_classes"], **description.get("overrides", {})
    )
    load_checkpoint(model, path)
    return model, description


def evaluate_segmentation(
    model: nn.Module,
    data: SegmentationData,
    split: str = "val",
    batch_size: int = 8,
    inference: str = "whole",
    crop_size: int | None = None,
    stride: int | None = None,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy of ``model`` on a split; with ``out``, its overlay PNG too."""
    from torch.utils.data import DataLoader
    from torchmetrics.classification import MulticlassConfusionMatrix

    if inference not in ("whole", "slide"):
        raise ConfigurationError(f"--inference must be 'whole' or 'slide', got {inference!r}")
    dataset = {"val": data.val, "train": data.train}.get(split)
    if dataset is None:
        raise ConfigurationError(f"--split must be 'val' or 'train', got {split!r}")
    crop = crop_size or data.img_size
    settings: dict[str, Any] = {"inference": inference, "crop_size": crop, "stride": stride or max(1, crop * 2 // 3)}
    confusion = MulticlassConfusionMatrix(data.num_classes, ignore_index=IGNORE_INDEX)
    model.eval()
    start, images_seen = time.perf_counter(), 0
    with torch.no_grad():
        for images, masks in DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate):
            logits = predict_logits(model, images, data.num_classes, **settings)
            confusion.update(logits.argmax(1), masks)
            images_seen += len(images)
    seconds = time.perf_counter() - start
    result = {
        **segmentation_metrics(confusion.compute(), data.classes),
        "images": images_seen,
        "split": split,
        "data": data.name,
        "images_per_second": images_seen / max(seconds, 1e-9),
        **settings,
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_overlay(model, dataset, Path(out) / "overlay.png", data.num_classes, settings)
        _write_json(Path(out) / "metrics.json", result)
    return result


def _palette(num_classes: int) -> np.ndarray:
    # background black, classes spread around the colour wheel (stable for any class count)
    import colorsys

    colours = [(0, 0, 0)] + [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.85, 1.0)) for i in range(num_classes - 1)
    ]
    return np.asarray(colours, dtype=np.uint8)


def save_overlay(
    model: nn.Module, dataset, path: Path, num_classes: int, settings: dict[str, Any], count: int = 6
) -> Path:
    """A PNG with one row per held-out image: the image, ground truth over it, prediction over it."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    palette = _palette(num_classes)
    count = min(count, len(dataset))
    figure, axes = plt.subplots(count, 3, figsize=(7.5, 2.5 * count), squeeze=False)
    model.eval()
    for row in range(count):
        image, mask = dataset[row]
        with torch.no_grad():
            prediction = predict_logits(model, image[None], num_classes, **settings)[0].argmax(0).numpy()
        rgb = denormalise(image).astype(np.float32)
        panels = [rgb]
        for labels in (mask.numpy(), prediction):
            colour = palette[np.clip(labels, 0, num_classes - 1)].astype(np.float32)
            alpha = np.where((labels > 0) & (labels != IGNORE_INDEX), 0.6, 0.0)[..., None]
            panels.append(rgb * (1 - alpha) + colour * alpha)
        for column, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
            axes[row, column].imshow(panel.clip(0, 255).astype(np.uint8), interpolation="nearest")
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)
    return path
