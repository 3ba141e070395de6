"""``train(config)``: build data and model, fit with Lightning, write the run's files.

A run directory (``--out``) holds::

    run.json                 the resolved settings (``--resume`` reuses them)
    checkpoints/last.ckpt    Lightning checkpoint after every epoch (atomic writes)
    checkpoints/best.ckpt    the epoch with the best held-out top-1
    metrics.csv              one row per epoch: losses, top-1/top-5, lr, seconds, images/s
    curves.png               loss and accuracy curves
    model.safetensors        final weights, with model.json (how to rebuild the model)
    summary.json             top1, top5, epochs, images_per_second, params, seconds, ...
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

import torch
from torch import nn

from .config import DEFAULT_MODEL, TrainConfig
from .data import EMBEDDED_DATASETS, DataSplit, EpochShuffleSampler, ShardSampler, load_data
from .module import AtomicCheckpointIO, EpochMetricsWriter, ImageClassifier, atomic_write_bytes, write_json

__all__ = ["TrainConfig", "train", "build_model", "save_weights", "load_trained", "plot_curves", "DEFAULT_MODEL"]

def build_model(
    name: str,
    num_classes: int,
    in_chans: int,
    model_kwargs: dict[str, Any] | None = None,
    checkpoint_path: str | None = None,
) -> nn.Module:
    """``largekernel.create_model`` with the data's class and channel counts."""
    import largekernel

    if not hasattr(largekernel, "create_model"):
        raise ValueError("this build of largekernel has no model registry (largekernel.create_model)")
    kwargs = dict(model_kwargs or {})
    if checkpoint_path is None:
        return largekernel.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    # load the weights into a model whose classifier fits them exactly, then put a fresh classifier
    # for this data's classes in its place (the usual fine-tuning start)
    published_classes = checkpoint_classes(name, checkpoint_path, {**kwargs, "in_chans": in_chans})
    model = largekernel.create_model(
        name, num_classes=published_classes, in_chans=in_chans, checkpoint_path=checkpoint_path, **kwargs
    )
    if published_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def checkpoint_classes(model: str, checkpoint_path: str, model_kwargs: dict[str, Any]) -> int:
    """How many classes the weights' classifier predicts (0 when they have none)."""
    import largekernel
    from largekernel.models.checkpoint import read_state_dict

    if not Path(checkpoint_path).is_file():
        raise FileNotFoundError(f"--checkpoint-path {checkpoint_path} does not exist")
    state = read_state_dict(checkpoint_path)
    converter = getattr(largekernel.create_model(model, **{**model_kwargs, "num_classes": 0}), "checkpoint_filter", None)
    if converter is not None:
        state = converter(state)
    head = state.get("head.weight")
    return int(head.shape[0]) if head is not None else 0


def save_weights(model: nn.Module, path: str | os.PathLike, config: dict[str, Any]) -> None:
    """Final weights as safetensors (atomic) plus ``<stem>.json`` describing how to rebuild the model."""
    from safetensors.torch import save

    path = Path(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"format": "pt"}))
    write_json(path.with_suffix(".json"), config)


def load_trained(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model trained by ``largekernel train`` from ``model.safetensors`` (+ its JSON) or a ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        config_path = path.with_suffix(".json")
        if not config_path.is_file():
            raise FileNotFoundError(f"{path} needs its model description {config_path} beside it (written by largekernel train)")
        config = json.loads(config_path.read_text())
        state = load_file(str(path), device=map_location)
    else:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)  # no pickled code
        if not isinstance(checkpoint, dict) or "largekernel_model_config" not in checkpoint:
            raise ValueError(
                f"{path} is not a checkpoint written by largekernel train; for published weights use "
                "--model NAME --checkpoint-path FILE"
            )
        config = checkpoint["largekernel_model_config"]
        state = {key[len("model."):]: value for key, value in checkpoint["state_dict"].items() if key.startswith("model.")}
    model = build_model(config["model"], config["num_classes"], config["in_chans"], config.get("model_kwargs"))
    model.load_state_dict(state)
    return model, config


def plot_curves(history: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> None:
    """Loss (train, held-out) and accuracy (top-1, top-5) against epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train (smoothed labels, augmented)"), ("val_loss", "held-out")):
        loss_axis.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss_axis.legend()
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        values = [row.get(key, math.nan) for row in history]
        if not all(math.isnan(v) for v in values):
            accuracy_axis.plot(epochs, values, marker="o", label=label)
    accuracy_axis.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="accuracy")
    accuracy_axis.legend()
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _make_datamodule(data: DataSplit, batch_size: int, seed: int, num_workers: int):
    """Loaders built once the rank is known (after Lightning launched its processes)."""
    import lightning as L
    from torch.utils.data import DataLoader

    class DataModule(L.LightningDataModule):
        def _loader(self, dataset, sampler, drop_last: bool) -> DataLoader:
            return DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=sampler,
                drop_last=drop_last,
                num_workers=num_workers,
                persistent_workers=num_workers > 0,
            )

        def train_dataloader(self) -> DataLoader:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            sampler = EpochShuffleSampler(len(data.train), seed, rank, world)
            # drop a ragged last batch (BatchNorm needs > 1 image) only when there is more than one batch
            return self._loader(data.train, sampler, drop_last=len(sampler) > batch_size)

        def val_dataloader(self) -> DataLoader:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            return self._loader(data.val, ShardSampler(len(data.val), rank, world), drop_last=False)

        def test_dataloader(self) -> DataLoader:
            return self.val_dataloader()

    return DataModule()


def _is_rank_zero() -> bool:
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def quiet_lightning() -> None:
    """Silence Lightning's banner lines and the advice warnings that do not apply here."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging interval.*")


def default_out_dir() -> str:
    # one name for all ranks: Lightning's DDP launcher re-runs this program with the same environment
    name = os.environ.get("LARGEKERNEL_RUN_DIR")
    if name is None:
        name = os.path.join("runs", time.strftime("train-%Y%m%d-%H%M%S"))
        os.environ["LARGEKERNEL_RUN_DIR"] = name
    return name


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (also written to ``<out>/summary.json``).

    With ``resume=True`` training continues from ``<out>/checkpoints/last.ckpt``; the result equals
    an uninterrupted run's with the same settings.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from largekernel.analysis.complexity import count_parameters

    started = time.perf_counter()
    out = Path(config.out or default_out_dir())
    last = out / "checkpoints" / "last.ckpt"
    _check_config(config)
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {last} to continue from (run without --resume to start)")
    if not resume and last.is_file() and _is_rank_zero():
        raise ValueError(f"{out} already holds a run ({last}); pass --resume to continue it, or choose another --out")
    # Lightning 2.6 on torch 2.13 warns about its own pytree use on every run; not the user's concern
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if config.quiet:
        quiet_lightning()
    else:
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    # Small convolutions on a shared CPU: one thread per process was 10x faster than two on the
    # 2-core development machine under load (OpenMP threads spin against each other).
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 2) // 2))
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = load_data(config.data, config.img_size, config.in_chans or (3 if config.checkpoint_path else None), config.val_fraction)
    name, model_kwargs = config.model_kwargs(data)
    model = build_model(name, data.num_classes, data.in_chans, model_kwargs, config.checkpoint_path)
    # eval must rebuild the architecture without the published file, so it is left out here
    model_config = {
        "model": name,
        "model_kwargs": model_kwargs,
        "num_classes": data.num_classes,
        "in_chans": data.in_chans,
        "img_size": data.img_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "class_names": data.class_names,
        "data": config.data,
    }
    module = ImageClassifier(
        model,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        label_smoothing=config.label_smoothing,
        augment=data.augment,
        seed=config.seed,
        model_config=model_config,
    )
    metrics_writer = EpochMetricsWriter(out)
    callbacks: list[Any] = [
        metrics_writer,
        ModelCheckpoint(
            dirpath=out / "checkpoints", filename="best", monitor="val_top1", mode="max",
            save_top_k=1, save_last=True, enable_version_counter=False,
        ),
    ]
    if not config.quiet:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=_parse_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        deterministic=True,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=not config.quiet,
        enable_model_summary=not config.quiet,
        num_sanity_val_steps=0,
        default_root_dir=out,
        use_distributed_sampler=False,  # our samplers shard by rank themselves (deterministic order)
        log_every_n_steps=10,
    )
    if _is_rank_zero():  # after the Trainer accepted the settings
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", asdict(config))
    datamodule = _make_datamodule(data, config.batch_size, config.seed, config.num_workers)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)

    history = metrics_writer.history
    final = history[-1] if history else {}
    train_images = sum(row.get("train_images", 0.0) for row in history)
    train_seconds = sum(row.get("train_seconds", 0.0) for row in history)
    summary = {
        "top1": final.get("val_top1"),
        "top5": final.get("val_top5") if data.num_classes >= 5 else None,
        "val_loss": final.get("val_loss"),
        "best_top1": max((row["val_top1"] for row in history), default=None),
        "epochs": len(history),
        "images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "model": name,
        "model_kwargs": model_kwargs,
        "params": count_parameters(model),
        "data": config.data,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "num_classes": data.num_classes,
        "img_size": data.img_size,
        "world_size": trainer.world_size,
        "out": str(out),
    }
    if data.num_classes < 5:
        summary.pop("top5")
    if trainer.is_global_zero:
        save_weights(module.model, out / "model.safetensors", model_config)
        write_json(out / "summary.json", summary)
        if history:
            plot_curves(history, out / "curves.png", title=f"{name} on {config.data}")
    return summary


def _parse_devices(devices: str | int) -> str | int:
    if isinstance(devices, int) or devices == "auto" or "," in str(devices):
        return devices
    try:
        return int(devices)
    except ValueError:
        raise ValueError(f"--devices must be 'auto', a count, or a comma list of ids; got {devices!r}") from None


def _check_config(config: TrainConfig) -> None:
    positive_ints = {"epochs": config.epochs, "batch_size": config.batch_size, "num_nodes": config.num_nodes}
    for name, value in positive_ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ValueError(f"--lr must be a positive number, got {config.lr!r}")
    if not 0.0 <= config.drop_path < 1.0:
        raise ValueError(f"--drop-path must be in [0, 1), got {config.drop_path!r}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing!r}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {config.threads}")
    if config.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {config.num_workers}")
    if config.data not in EMBEDDED_DATASETS and not Path(config.data).expanduser().exists():
        raise FileNotFoundError(
            f"--data {config.data!r} is neither an embedded dataset ({', '.join(EMBEDDED_DATASETS)}) nor an existing directory"
        )
