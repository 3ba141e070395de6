"""The LightningModule and callbacks: the papers' recipe around any image classifier.

Recipe (VAN / LSKA / SMT): AdamW, linear warmup then cosine decay stepped per optimizer step, label
smoothing, drop-path (inside the model), weight decay on weight matrices and kernels only (no decay
on 1-D parameters: norms, biases, layer scales).

Determinism: every training step reseeds torch from ``(seed, global_step, rank)``, so augmentation
and drop-path draw the same numbers whether or not the run was interrupted and resumed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from .data import AugmentConfig, augment_batch

__all__ = [
    "ImageClassifier",
    "EpochMetricsWriter",
    "AtomicCheckpointIO",
    "warmup_cosine",
    "parameter_groups",
    "atomic_write_bytes",
    "METRIC_COLUMNS",
]

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_seconds", "images_per_second")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> float:
    """LR multiplier: linear from ``1/warmup`` to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decay on >= 2-D parameters; none on 1-D ones (norms, biases, layer scales)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader (or a run killed mid-write) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, fsync'ed, then renamed over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


class ImageClassifier(L.LightningModule):
    """Train and evaluate ``model`` (any ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, classes)`` logits).

    Batches arrive as uint8 images; they are scaled to [0, 1], augmented (training only), then
    normalised with ``mean``/``std``.

    Args:
        model: the classifier.
        num_classes: its number of outputs (checked against the logits).
        mean, std: per-channel normalisation of [0, 1] images.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decay of >= 2-D parameters.
        warmup_epochs: linear warmup length, in epochs (converted to steps).
        label_smoothing: of the cross-entropy.
        augment: the training augmentation.
        seed: base of the per-step reseeding.
        model_config: JSON-able description of ``model`` stored in every checkpoint so it can be rebuilt.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        label_smoothing: float = 0.1,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.lr, self.weight_decay, self.warmup_epochs = lr, weight_decay, warmup_epochs
        self.label_smoothing = label_smoothing
        self.augment = augment or AugmentConfig()
        self.seed = seed
        self.model_config = model_config or {}
        self._reset_train_sums()
        self._reset_val_sums()
        self.epoch_metrics: dict[str, float] = {}

    # -- data ------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        images = images.float().div_(255.0)
        if train:
            images = augment_batch(images, self.augment)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images (no augmentation)."""
        return self.model(self.preprocess(images, train=False))

    # -- training --------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step_seed = (self.seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank
        torch.manual_seed(step_seed % (2**63))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(self.preprocess(images, train=True))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            raise ValueError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"lower --lr (now {self.lr:g}), or use --precision 32-true"
            )
        self._train_sums += torch.stack([loss.detach() * len(labels), torch.tensor(float(len(labels)), device=loss.device)])
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._reset_train_sums()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.weight_decay), lr=self.lr, betas=(0.9, 0.999))
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        warmup_steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- evaluation ------------------------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def _evaluate_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        logits = self(images).float()
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)}, expected (batch, {self.num_classes})")
        loss = F.cross_entropy(logits, labels, reduction="sum")
        top = logits.topk(min(5, self.num_classes), dim=1).indices
        hits = top.eq(labels[:, None])
        self._val_sums += torch.stack(
            [loss, hits[:, :1].sum().float(), hits.any(dim=1).sum().float(), torch.tensor(float(len(labels)), device=loss.device)]
        )

    def on_validation_epoch_start(self) -> None:
        self._reset_val_sums()

    def on_test_epoch_start(self) -> None:
        self._reset_val_sums()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _finish_evaluation(self, prefix: str) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums.clone(), reduce_op="sum")
        loss_sum, correct1, correct5, count = sums.tolist()
        count = max(count, 1.0)
        metrics = {f"{prefix}_loss": loss_sum / count, f"{prefix}_top1": 100.0 * correct1 / count}
        if self.num_classes >= 5:
            metrics[f"{prefix}_top5"] = 100.0 * correct5 / count
        metrics[f"{prefix}_images"] = count
        if self.trainer.state.fn == "fit":
            train_sums = self.trainer.strategy.reduce(self._train_sums.clone(), reduce_op="sum")
            if train_sums[1] > 0:
                metrics["train_loss"] = (train_sums[0] / train_sums[1]).item()
                metrics["train_images"] = train_sums[1].item()
        self.epoch_metrics = metrics
        for name, value in metrics.items():
            self.log(name, value, logger=False, prog_bar=name.endswith("top1"))

    def _reset_train_sums(self) -> None:
        device = self.mean.device if hasattr(self, "mean") else None
        self._train_sums = torch.zeros(2, device=device)

    def _reset_val_sums(self) -> None:
        device = self.mean.device if hasattr(self, "mean") else None
        self._val_sums = torch.zeros(4, device=device, dtype=torch.float64 if device is None or device.type == "cpu" else torch.float32)

    # -- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["largekernel_model_config"] = self.model_config


class EpochMetricsWriter(L.Callback):
    """Appends one row per epoch to ``metrics.csv`` (rewritten atomically) and keeps the rows in checkpoints.

    The rows travel inside each checkpoint, so a resumed run rewrites the CSV from the checkpoint's
    history: rows of epochs that the checkpoint had not finished are dropped and re-run, none are lost.
    """

    def __init__(self, out_dir: str | os.PathLike | None) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.history: list[dict[str, float]] = []
        self._epoch_start = 0.0
        self._train_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)  # on resume: the checkpoint's rows, nothing after them

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_seconds = time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = getattr(pl_module, "epoch_metrics", {})
        train_images = metrics.get("train_images", 0.0)
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": metrics.get("train_loss", float("nan")),
            "val_loss": metrics.get("val_loss", float("nan")),
            "val_top1": metrics.get("val_top1", float("nan")),
            "val_top5": metrics.get("val_top5", float("nan")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - self._epoch_start,
            "images_per_second": train_images / self._train_seconds if self._train_seconds > 0 else float("nan"),
            "train_images": train_images,
            "train_seconds": self._train_seconds,
        }
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if self.out_dir is None or not trainer.is_global_zero:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({key: _format(row.get(key)) for key in METRIC_COLUMNS})
        atomic_write_bytes(self.out_dir / "metrics.csv", text.getvalue().encode())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
