"""``evaluate(...)``: top-1 / top-5, loss and throughput of a model on a dataset's held-out images."""

from __future__ import annotations

import time
from typing import Any

from torch import nn
from torch.utils.data import ConcatDataset

from ..errors import ConfigurationError, DataError
from .data import SizedDataset, TransformedDataset, create_eval_transform, load_data
from .trainer import _make_datamodule, build_model, checkpoint_classes, load_trained, model_data_config, quiet_lightning

__all__ = ["evaluate", "load_for_eval"]


def load_for_eval(
    checkpoint: str | None = None,
    model: str | None = None,
    checkpoint_path: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its description: from a ``largekernel train`` output (``checkpoint``: ``.safetensors``
    or ``.ckpt``), or a registered ``model`` with published weights (``checkpoint_path``), whose input
    normalisation, crop and interpolation are the model's own (``pretrained_cfg``)."""
    if (checkpoint is None) == (model is None):
        raise ConfigurationError(
            "give either --checkpoint FILE (a largekernel train output) or --model NAME [--checkpoint-path FILE]"
        )
    if checkpoint is not None:
        if checkpoint_path is not None or model_kwargs:
            raise ConfigurationError(
                "--checkpoint-path and model overrides go with --model; --checkpoint already describes the model"
            )
        return load_trained(checkpoint)
    if checkpoint_path is None:
        raise ConfigurationError("--model needs --checkpoint-path FILE, the published weights to evaluate")
    assert model is not None  # one of the two, checked above
    model_kwargs = dict(model_kwargs or {})
    num_classes = checkpoint_classes(model, checkpoint_path, model_kwargs)
    if num_classes == 0:
        raise ConfigurationError(
            f"{checkpoint_path} has no classifier (head.weight); it cannot be evaluated as a classifier"
        )
    network = build_model(model, num_classes, 3, model_kwargs, checkpoint_path=checkpoint_path)
    data_config = model_data_config(network, in_chans=3)
    config = {
        "model": model,
        "model_kwargs": model_kwargs,
        "num_classes": num_classes,
        "in_chans": 3,
        "img_size": data_config["input_size"][-1],
        "mean": list(data_config["mean"]),
        "std": list(data_config["std"]),
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        "class_names": None,
        "data": None,
    }
    return network, config


def evaluate(
    network: nn.Module,
    config: dict[str, Any],
    data: str | None = None,
    split: str = "val",
    img_size: int | None = None,
    batch_size: int = 128,
    accelerator: str = "auto",
    devices: str = "auto",
    precision: str = "32-true",
    num_workers: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Score ``network`` (described by ``config``, as ``load_for_eval`` returns) through Lightning.

    ``split``: ``val`` (the held-out images), ``train`` or ``all``. Images go through timm's eval
    pipeline with the description's ``mean``/``std``/``crop_pct``/``interpolation``. Throughput counts
    the whole evaluation loop (loading, preprocessing, forward) in images per second.
    """
    quiet_lightning(quiet)

    from .module import ImageClassifier

    if split not in ("val", "train", "all"):
        raise ConfigurationError(f"--split must be val, train or all; got {split!r}")
    data_name = data or config.get("data") or "mnist"
    size = img_size or config["img_size"]
    dataset = load_data(data_name, size, config["in_chans"])
    if dataset.num_classes != config["num_classes"]:
        raise DataError(
            f"class-count mismatch: the model predicts {config['num_classes']} classes but {data_name} has "
            f"{dataset.num_classes} ({', '.join(dataset.class_names[:10])}{'...' if dataset.num_classes > 10 else ''})"
        )
    splits: dict[str, SizedDataset | ConcatDataset] = {
        "val": dataset.val,
        "train": dataset.train,
        "all": ConcatDataset([dataset.train, dataset.val]),
    }
    images = splits[split]
    transform = create_eval_transform(
        {
            "input_size": (config["in_chans"], size, size),
            "mean": tuple(config["mean"]),
            "std": tuple(config["std"]),
            "crop_pct": config.get("crop_pct", 1.0),
            "interpolation": config.get("interpolation", "bilinear"),
        }
    )
    scored = TransformedDataset(images, transform)
    module = ImageClassifier(network, config["num_classes"])
    from .trainer import _make_trainer_for_eval

    trainer = _make_trainer_for_eval(accelerator, devices, precision, quiet)
    datamodule = _make_datamodule(scored, scored, batch_size, seed=0, num_workers=num_workers)
    started = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - started
    metrics = module.epoch_metrics
    count = int(metrics["test_images"])
    result: dict[str, Any] = {
        "model": config["model"],
        "data": data_name,
        "split": split,
        "images": count,
        "top1": metrics["test_top1"],
        "top5": metrics.get("test_top5"),
        "loss": metrics["test_loss"],
        "images_per_second": count / seconds if seconds > 0 else None,
        "seconds": seconds,
        "img_size": size,
    }
    if result["top5"] is None:
        result.pop("top5")
    return result
