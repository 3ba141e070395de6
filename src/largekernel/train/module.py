"""The LightningModule and callbacks: the papers' recipe around any image classifier, with timm's pieces.

timm provides the optimizer (``create_optimizer_v2``: no weight decay on 1-D parameters and on the
model's ``no_weight_decay()`` names), the warmup + cosine schedule (``create_scheduler_v2``, stepped
per epoch or per update), Mixup/CutMix (``timm.data.Mixup``) with ``SoftTargetCrossEntropy``, and
the EMA of the weights (``timm.utils.ModelEmaV3``, evaluated each epoch). torchmetrics counts the
held-out accuracy and loss (summed over DDP ranks).

Determinism: every training step reseeds Python, NumPy and torch from ``(seed, global_step, rank)``,
so Mixup and drop-path draw the same numbers whether or not the run was interrupted and resumed.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_io import atomic_write_bytes
from ..errors import ConfigurationError
from .config import TrainConfig, resolved

if TYPE_CHECKING:
    from collections.abc import ItemsView, ValuesView

    from torchmetrics import Metric

__all__ = ["METRIC_COLUMNS", "EpochMetricsWriter", "ImageClassifier"]

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_top1",
    "val_top5",
    "raw_val_top1",
    "lr",
    "epoch_seconds",
    "images_per_second",
)


class _MetricDict(nn.ModuleDict):
    """An ``nn.ModuleDict`` of torchmetrics metrics, typed as such (a plain one types its items as ``Module``)."""

    def __getitem__(self, key: str) -> Metric:
        return cast("Metric", super().__getitem__(key))

    def items(self) -> ItemsView[str, Metric]:
        return cast("ItemsView[str, Metric]", super().items())

    def values(self) -> ValuesView[Metric]:
        return cast("ValuesView[Metric]", super().values())


def _metrics(num_classes: int) -> _MetricDict:
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy

    metrics = {"loss": MeanMetric(), "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return _MetricDict(metrics)


class ImageClassifier(L.LightningModule):
    """Train and evaluate ``model`` (any ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, classes)`` logits).

    Batches arrive transformed and normalised (the data pipeline's job).

    Args:
        model: the classifier.
        num_classes: its number of outputs (checked against the logits).
        config: a resolved :class:`TrainConfig` (optimizer, schedule, Mixup, EMA); ``None`` to evaluate only.
        model_config: JSON-able description of ``model`` stored in every checkpoint so it can be rebuilt.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        config: TrainConfig | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.config = config
        self.model_config = model_config or {}
        self.mixup = None
        self.model_ema = None
        if config is not None:
            if resolved(config.mixup, "mixup") > 0 or resolved(config.cutmix, "cutmix") > 0:
                from timm.data import Mixup

                self.mixup = Mixup(
                    mixup_alpha=config.mixup,
                    cutmix_alpha=config.cutmix,
                    prob=config.mixup_prob,
                    switch_prob=config.mixup_switch_prob,
                    mode="batch",
                    label_smoothing=config.label_smoothing,
                    num_classes=num_classes,
                )
            if config.model_ema:
                from timm.utils import ModelEmaV3

                # warmup: the average starts short and lengthens, so short runs profit as well
                self.model_ema = ModelEmaV3(
                    model, decay=resolved(config.model_ema_decay, "model_ema_decay"), use_warmup=True
                )
                # updated by copying, never by gradients (and DDP must not wait for its gradients)
                self.model_ema.requires_grad_(False)
        self.val_metrics = _metrics(num_classes)
        self.raw_val_metrics = _metrics(num_classes) if self.model_ema is not None else None
        from torchmetrics import MeanMetric

        self.train_loss = MeanMetric()
        self._val_images = 0
        self.epoch_metrics: dict[str, float] = {}

    @property
    def recipe(self) -> TrainConfig:
        """The resolved training settings (a module built to evaluate only has none)."""
        if self.config is None:
            raise RuntimeError("ImageClassifier was built without a TrainConfig; it can evaluate but not train")
        return self.config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the weights that are evaluated and kept (the EMA when there is one)."""
        return (self.model_ema.module if self.model_ema is not None else self.model)(images)

    # -- training --------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step_seed = ((self.recipe.seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank) % (2**32)
        torch.manual_seed(step_seed)
        np.random.seed(step_seed)  # timm's Mixup draws from NumPy
        random.seed(step_seed)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        from timm.loss import SoftTargetCrossEntropy

        images, labels = batch
        if self.mixup is not None and len(labels) % 2 == 0:  # timm's batch Mixup pairs the batch with its flip
            images, targets = self.mixup(images, labels)
            loss = SoftTargetCrossEntropy()(self.model(images).float(), targets)
        else:
            loss = F.cross_entropy(
                self.model(images).float(),
                labels,
                label_smoothing=resolved(self.recipe.label_smoothing, "label_smoothing"),
            )
        if not torch.isfinite(loss):
            raise ConfigurationError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"lower --lr (now {self.recipe.lr:g}), or use --precision 32-true"
            )
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def on_train_epoch_start(self) -> None:
        self.train_loss.reset()

    def configure_optimizers(self):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        config = self.recipe
        optimizer = create_optimizer_v2(self.model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = max(
            1, math.ceil(int(self.trainer.estimated_stepping_batches) / max(1, self.trainer.max_epochs))
        )
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched="cosine",
            num_epochs=config.epochs - (math.ceil(config.warmup_epochs) if config.warmup_prefix else 0),
            warmup_epochs=config.warmup_epochs,
            warmup_lr=config.warmup_lr,
            min_lr=config.min_lr,
            cooldown_epochs=config.cooldown_epochs,
            warmup_prefix=config.warmup_prefix,
            step_on_epochs=config.sched_on_epochs,
            updates_per_epoch=steps_per_epoch,
        )
        interval = "epoch" if config.sched_on_epochs else "step"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # timm's schedulers take the epoch (or update count) they are at, as timm's train.py passes it
        if self.recipe.sched_on_epochs:
            scheduler.step(epoch=self.current_epoch + 1)
        else:
            scheduler.step_update(num_updates=self.global_step)

    # -- evaluation ------------------------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def _evaluate_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        self._val_images += len(labels)
        networks = [(self.val_metrics, self(images))]
        if self.raw_val_metrics is not None:
            networks.append((self.raw_val_metrics, self.model(images)))
        for metrics, logits in networks:
            logits = logits.float()
            if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                raise ConfigurationError(
                    f"model returned logits of shape {tuple(logits.shape)}, expected (batch, {self.num_classes})"
                )
            metrics["loss"].update(F.cross_entropy(logits, labels, reduction="none"))
            for name, metric in metrics.items():
                if name != "loss":
                    metric.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _finish_evaluation(self, prefix: str) -> None:
        metrics: dict[str, float] = {}
        for name, metric in self.val_metrics.items():
            metrics[f"{prefix}_{name}"] = metric.compute().item() * (1.0 if name == "loss" else 100.0)
            metric.reset()
        images = self.trainer.strategy.reduce(
            torch.tensor(float(self._val_images), device=self.device), reduce_op="sum"
        )
        metrics[f"{prefix}_images"] = float(images)
        self._val_images = 0
        if self.raw_val_metrics is not None:
            metrics[f"raw_{prefix}_top1"] = self.raw_val_metrics["top1"].compute().item() * 100.0
            for metric in self.raw_val_metrics.values():
                metric.reset()
        if self.trainer.state.fn == "fit":
            if self.train_loss.update_count > 0:  # every rank takes the same number of steps
                metrics["train_loss"] = self.train_loss.compute().item()
        self.epoch_metrics = metrics
        for name, value in metrics.items():
            # already summed over ranks by torchmetrics: the mean over ranks leaves them as they are
            self.log(name, value, logger=False, prog_bar=name.endswith("top1"), sync_dist=True)

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
        train_images = len(trainer.train_dataloader.sampler) * trainer.world_size if trainer.train_dataloader else 0
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": metrics.get("train_loss", float("nan")),
            "val_loss": metrics.get("val_loss", float("nan")),
            "val_top1": metrics.get("val_top1", float("nan")),
            "val_top5": metrics.get("val_top5", float("nan")),
            "raw_val_top1": metrics.get("raw_val_top1", float("nan")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - self._epoch_start,
            "images_per_second": train_images / self._train_seconds if self._train_seconds > 0 else float("nan"),
            "train_images": float(train_images),
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
