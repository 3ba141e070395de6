"""``train(config)``: build data and model, fit with Lightning, write the run's files.

A run directory (``--out``) holds::

    run.json                 the resolved settings, recipe included (``--resume`` reuses them)
    checkpoints/last.ckpt    Lightning checkpoint after every epoch (atomic writes)
    checkpoints/best.ckpt    the epoch with the best held-out top-1
    metrics.csv              one row per epoch: losses, top-1/top-5, lr, seconds, images/s
    curves.png               loss and accuracy curves
    model.safetensors        final weights (the EMA's with --model-ema), with model.json
    summary.json             top1, top5, epochs, images_per_second, params, seconds, ...
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointMismatchError, ConfigurationError, LargeKernelError, MissingFileError
from .config import DEFAULT_MODEL, TrainConfig, resolve_config, resolved
from .data import DataSplit, EpochShuffleSampler, ShardSampler, TransformedDataset, load_data
from .files import read_json, read_lightning_checkpoint, write_json

__all__ = [
    "DEFAULT_MODEL",
    "TrainConfig",
    "build_model",
    "load_trained",
    "model_data_config",
    "planned_world_size",
    "plot_curves",
    "save_weights",
    "train",
]


def build_model(
    name: str,
    num_classes: int,
    in_chans: int,
    model_kwargs: dict[str, Any] | None = None,
    checkpoint_path: str | None = None,
) -> nn.Module:
    """``largekernel.create_model`` with the data's class and channel counts."""
    import largekernel

    kwargs = dict(model_kwargs or {})
    if checkpoint_path is None:
        return largekernel.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    # load the weights into a model whose classifier fits them exactly, then put a fresh classifier
    # for this data's classes in its place (the usual fine-tuning start)
    published_classes = checkpoint_classes(name, checkpoint_path, {**kwargs, "in_chans": in_chans})
    try:
        model = largekernel.create_model(
            name, num_classes=published_classes, in_chans=in_chans, checkpoint_path=checkpoint_path, **kwargs
        )
    except CheckpointMismatchError as error:  # the models package lists the keys on lines: one line here
        raise CheckpointError(f"--checkpoint-path {checkpoint_path} does not fit {name}: {_one_line(error)}") from None
    if published_classes != num_classes:
        model.reset_classifier(num_classes)  # type: ignore[operator]  # timm's classifier hook, untyped on nn.Module
    return model


def checkpoint_classes(model: str, checkpoint_path: str, model_kwargs: dict[str, Any]) -> int:
    """How many classes the weights' classifier predicts (0 when they have none)."""
    import largekernel
    from largekernel.models.checkpoint import read_state_dict

    if not Path(checkpoint_path).is_file():
        raise MissingFileError(f"--checkpoint-path {checkpoint_path} does not exist")
    try:
        state = read_state_dict(checkpoint_path)
    except (LargeKernelError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - empty, truncated or corrupt: any reader's failure, one line
        raise CheckpointError(
            f"--checkpoint-path {checkpoint_path} cannot be read: {type(error).__name__}: {_one_line(error)}"
        ) from None
    converter = getattr(
        largekernel.create_model(model, **{**model_kwargs, "num_classes": 0}), "checkpoint_filter", None
    )
    if converter is not None:
        state = converter(state)
    head = state.get("head.weight")
    return int(head.shape[0]) if head is not None else 0


def model_data_config(model: nn.Module, in_chans: int, img_size: int | None = None) -> dict[str, Any]:
    """The input the model's weights expect: timm's ``resolve_data_config`` over its ``pretrained_cfg``.

    ``mean``/``std``/``crop_pct``/``interpolation`` come from the model (VAN's released weights, for
    one, were trained with mean = std = 0.5); ``img_size`` overrides its input size. A grey input
    takes the mean of the three channel statistics.
    """
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    mean, std = tuple(config["mean"]), tuple(config["std"])
    if in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    size = img_size or config["input_size"][-1]
    return {
        "input_size": (in_chans, size, size),
        "mean": mean,
        "std": std,
        "crop_pct": config["crop_pct"],
        "crop_mode": config.get("crop_mode", "center"),
        "interpolation": config["interpolation"],
    }


def _data_config(model: nn.Module, data: DataSplit, from_weights: bool) -> dict[str, Any]:
    if data.embedded and not from_weights:
        # digits trained from scratch: their own statistics, no crop (the digit fills the image)
        return {
            "input_size": (data.in_chans, data.img_size, data.img_size),
            "mean": data.mean,
            "std": data.std,
            "crop_pct": 1.0,
            "crop_mode": "center",
            "interpolation": "bilinear",
        }
    return model_data_config(model, data.in_chans, data.img_size)


def save_weights(model: nn.Module, path: str | os.PathLike, config: dict[str, Any]) -> None:
    """Final weights as safetensors (atomic) plus ``<stem>.json`` describing how to rebuild the model."""
    from largekernel.models.checkpoint import save_checkpoint

    path = Path(path)
    save_checkpoint(model, path)
    write_json(path.with_suffix(".json"), config)


def load_trained(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model trained by ``largekernel train`` from ``model.safetensors`` (+ its JSON) or a ``.ckpt``.

    A ``.ckpt`` with an EMA gives the EMA's weights (those ``model.safetensors`` holds).
    """
    from largekernel.models.checkpoint import load_checkpoint, load_state_dict_into

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        config_path = path.with_suffix(".json")
        if not config_path.is_file():
            raise MissingFileError(
                f"{path} needs its model description {config_path} beside it (written by largekernel train)"
            )
        config = read_json(config_path, "model description")
        model = _build_described(config, config_path)
        try:
            load_checkpoint(model, path)
        except CheckpointMismatchError as error:  # named with the description that built the model
            raise CheckpointError(f"cannot load {path} as described by {config_path}: {_one_line(error)}") from None
        except LargeKernelError:
            raise
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad file, named in one line
            raise CheckpointError(f"cannot load {path} as described by {config_path}: {_one_line(error)}") from None
        return model, config
    checkpoint = read_lightning_checkpoint(path, map_location=map_location)
    stored = checkpoint.get("largekernel_model_config")
    if not isinstance(stored, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a checkpoint written by largekernel train; for published weights use "
            "--model NAME --checkpoint-path FILE"
        )
    weights = checkpoint["state_dict"]
    prefix = "model_ema.module." if any(key.startswith("model_ema.module.") for key in weights) else "model."
    state = {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
    model = _build_described(stored, path)
    try:
        load_state_dict_into(model, state, source=f"checkpoint {path}")
    except Exception as error:  # noqa: BLE001 - a mismatch or a corrupt tensor: either way a bad file, one line
        raise CheckpointError(f"cannot load {path}: {_one_line(error)}") from None
    return model, stored


def _build_described(config: dict[str, Any], source: Path) -> nn.Module:
    try:
        return build_model(config["model"], config["num_classes"], config["in_chans"], config.get("model_kwargs"))
    except LargeKernelError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source} does not describe a model largekernel can build: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return text or type(error).__name__


def plot_curves(history: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> None:
    """Loss (train, held-out) and accuracy (top-1, top-5) against epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from ..checkpoint_io import atomic_write_bytes

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train (augmented)"), ("val_loss", "held-out")):
        loss_axis.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss_axis.legend()
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5"), ("raw_val_top1", "top-1 without EMA")):
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


def _make_datamodule(train_set, val_set, batch_size: int, seed: int, num_workers: int):
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

        def _rank_and_world(self) -> tuple[int, int]:
            if self.trainer is None:
                raise RuntimeError("the loaders are built by a Trainer (it knows this process's rank)")
            return self.trainer.global_rank, self.trainer.world_size

        def train_dataloader(self) -> DataLoader:
            rank, world = self._rank_and_world()
            sampler = EpochShuffleSampler(len(train_set), seed, rank, world)
            # drop a ragged last batch (BatchNorm needs > 1 image) only when there is more than one batch
            return self._loader(train_set, sampler, drop_last=len(sampler) > batch_size)

        def val_dataloader(self) -> DataLoader:
            rank, world = self._rank_and_world()
            return self._loader(val_set, ShardSampler(len(val_set), rank, world), drop_last=False)

        def test_dataloader(self) -> DataLoader:
            return self.val_dataloader()

    return DataModule()


def _is_rank_zero() -> bool:
    return int(os.environ.get("NODE_RANK", "0")) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


_NOISE = (
    r".*does not have many workers.*",
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's own pytree use on torch >= 2.13
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*number of training batches.*smaller than the logging interval.*",
    r".*torch.distributed.*barrier.*",
    r".*module\(s\) in eval mode at the start of training.*",
    r".*Grad strides do not match bucket view strides.*",  # DDP on the (C, 1, k, 1) separable kernels  # the EMA copy is in eval mode by design
)


def quiet_lightning(quiet: bool = True) -> None:
    """Silence the warnings that never apply here; with ``quiet``, Lightning's info lines too.

    Lightning's rank-zero info ("Tip: litlogger", "GPU available", the DDP banner) goes through the
    ``lightning`` loggers; the DDP launcher's child processes call this as well (they re-run the CLI).
    """
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    import lightning  # noqa: F401 - it sets its loggers' levels when imported; ours must come after

    if quiet:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_utilities"):
            logging.getLogger(name).setLevel(logging.ERROR)


def default_out_dir() -> str:
    # one name for all ranks: Lightning's DDP launcher re-runs this program with the same environment
    name = os.environ.get("LARGEKERNEL_RUN_DIR")
    if name is None:
        name = os.path.join("runs", time.strftime("train-%Y%m%d-%H%M%S"))
        os.environ["LARGEKERNEL_RUN_DIR"] = name
    return name


def planned_world_size(config: TrainConfig) -> int:
    """Processes the run will have (the lr scales with the global batch), known before Lightning starts."""
    devices = str(config.devices)
    if devices == "auto":
        uses_gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
        count = max(1, torch.cuda.device_count()) if uses_gpu else 1
    elif "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            count = int(devices)
        except ValueError:
            raise ConfigurationError(
                f"--devices must be 'auto', a count, or a comma list of ids; got {devices!r}"
            ) from None
        if count == -1:
            count = (
                max(1, torch.cuda.device_count())
                if config.accelerator in ("gpu", "cuda", "auto")
                else (os.cpu_count() or 1)
            )
        if count < 1 and count != -1:
            raise ConfigurationError(f"--devices must be a positive count, got {devices!r}")
    return count * config.num_nodes


def _check_environment(config: TrainConfig, out: Path) -> None:
    """Settings that would otherwise crash deep in Lightning, or wait 30 minutes for nodes that never come."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} is a file; give a directory for the run")
    _check_accelerator(config.accelerator)
    if config.num_nodes > 1:
        from lightning.fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

        # (Kubeflow cannot be detected; its launcher sets MASTER_ADDR and the ranks, covered below)
        managed = any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))
        manual = "MASTER_ADDR" in os.environ and ("NODE_RANK" in os.environ or "RANK" in os.environ)
        if not (managed or manual):
            raise ConfigurationError(
                f"--num-nodes {config.num_nodes}: no multi-node launch found (SLURM, torchrun, or MASTER_ADDR, "
                "MASTER_PORT and NODE_RANK set on every node), so the other nodes would never join; "
                "on one machine use --num-nodes 1 with --devices N"
            )


def _check_accelerator(accelerator: str) -> None:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            f"--accelerator {accelerator}: no CUDA GPU is available here (use --accelerator cpu or auto)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigurationError("--accelerator mps: no Apple GPU is available here (use --accelerator cpu or auto)")


def _lightning_trainer(accelerator: str, devices: str, strategy: str, precision: str, **kwargs: Any):
    """``L.Trainer`` whose refusals of these four settings come back as one line naming them."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    parsed: Any = devices
    if isinstance(devices, str) and devices != "auto" and "," not in devices:
        try:
            parsed = int(devices)
        except ValueError:
            raise ConfigurationError(
                f"--devices must be 'auto', a count, or a comma list of ids; got {devices!r}"
            ) from None
    try:
        return L.Trainer(accelerator=accelerator, devices=parsed, strategy=strategy, precision=precision, **kwargs)  # type: ignore[arg-type]  # any string: Lightning validates precision, its refusal is one line below
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        raise ConfigurationError(
            f"Lightning refused --accelerator {accelerator} --devices {devices} --strategy {strategy} "
            f"--precision {precision}: {_one_line(error)}"
        ) from None


def _make_trainer_for_eval(accelerator: str, devices: str, precision: str, quiet: bool):
    _check_accelerator(accelerator)
    return _lightning_trainer(
        accelerator,
        devices,
        "auto",
        precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def _make_trainer(config: TrainConfig, out: Path, callbacks: list[Any]):
    from .files import SafeCheckpointIO

    return _lightning_trainer(
        config.accelerator,
        config.devices,
        config.strategy,
        config.precision,
        max_epochs=resolved(config.epochs, "epochs") + resolved(config.cooldown_epochs, "cooldown_epochs"),
        num_nodes=config.num_nodes,
        gradient_clip_val=config.clip_grad,
        deterministic=True,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        logger=False,
        enable_progress_bar=not config.quiet,
        enable_model_summary=not config.quiet,
        num_sanity_val_steps=0,
        default_root_dir=out,
        use_distributed_sampler=False,  # our samplers shard by rank themselves (deterministic order)
        log_every_n_steps=10,
    )


@contextlib.contextmanager
def _torch_determinism_restored() -> Iterator[None]:
    """Undo, on exit, the global flags that ``Trainer(deterministic=True)`` sets."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def _fit(trainer, module, config: TrainConfig, out: Path, train_set, val_set, last: Path | None) -> None:
    if trainer.world_size != config.world_size:  # the lr was scaled for config.world_size processes
        raise ConfigurationError(
            f"Lightning starts {trainer.world_size} processes where {config.world_size} were planned from "
            f"--devices {config.devices} --num-nodes {config.num_nodes}; give --devices as a count"
        )
    if _is_rank_zero():  # after the Trainer accepted the settings
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", config.to_json())
    datamodule = _make_datamodule(train_set, val_set, config.batch_size, config.seed, config.num_workers)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last is not None else None)


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (also written to ``<out>/summary.json``).

    ``config`` is resolved first (:func:`~largekernel.train.config.resolve_config`). With
    ``resume=True`` training continues from ``<out>/checkpoints/last.ckpt``; the result equals an
    uninterrupted run's with the same settings.
    """
    quiet_lightning(config.quiet)  # before Lightning is imported: some of its warnings come at import
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from largekernel.analysis.complexity import count_parameters

    from .module import EpochMetricsWriter, ImageClassifier

    started = time.perf_counter()
    config = resolve_config(config, planned_world_size(config))
    out = Path(config.out or default_out_dir())
    last = out / "checkpoints" / "last.ckpt"
    _check_environment(config, out)
    if resume and not last.is_file():
        raise MissingFileError(
            f"--resume: no checkpoint {last} to continue from (a run stopped before its first epoch ended has "
            "none; start it again without --resume)"
        )
    if not resume and last.is_file() and _is_rank_zero():
        raise ConfigurationError(
            f"{out} already holds a run ({last}); pass --resume to continue it, or choose another --out"
        )

    torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = load_data(
        config.data, config.img_size, config.in_chans or (3 if config.checkpoint_path else None), config.val_fraction
    )
    name, model_kwargs = config.model_kwargs(data.img_size)
    model = build_model(name, data.num_classes, data.in_chans, model_kwargs, config.checkpoint_path)
    data_config = _data_config(model, data, from_weights=config.checkpoint_path is not None)
    from .data import create_eval_transform, create_train_transform

    train_set = TransformedDataset(data.train, create_train_transform(config, data_config), seed=config.seed)
    val_set = TransformedDataset(data.val, create_eval_transform(data_config))
    # eval must rebuild the architecture without the published file, so it is left out here
    model_config = {
        "model": name,
        "model_kwargs": model_kwargs,
        "num_classes": data.num_classes,
        "in_chans": data.in_chans,
        "img_size": data.img_size,
        "mean": list(data_config["mean"]),
        "std": list(data_config["std"]),
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        "class_names": data.class_names,
        "data": config.data,
        "weights": "ema" if config.model_ema else "model",
    }
    module = ImageClassifier(model, num_classes=data.num_classes, config=config, model_config=model_config)
    metrics_writer = EpochMetricsWriter(out)
    callbacks: list[Any] = [
        metrics_writer,
        ModelCheckpoint(
            dirpath=out / "checkpoints",
            filename="best",
            monitor="val_top1",
            mode="max",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        ),
    ]
    if not config.quiet:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    with _torch_determinism_restored():  # Lightning's deterministic=True is for this run, not the caller's process
        trainer = _make_trainer(config, out, callbacks)
        _fit(trainer, module, config, out, train_set, val_set, last if resume else None)

    history = metrics_writer.history
    final = history[-1] if history else {}
    train_images = sum(row.get("train_images", 0.0) for row in history)
    train_seconds = sum(row.get("train_seconds", 0.0) for row in history)
    summary = {
        "top1": final.get("val_top1"),
        "top5": final.get("val_top5") if data.num_classes >= 5 else None,
        "val_loss": final.get("val_loss"),
        "best_top1": max((row["val_top1"] for row in history), default=None),
        "weights": model_config["weights"],
        "epochs": len(history),
        "images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "model": name,
        "model_kwargs": model_kwargs,
        "params": count_parameters(model),
        "recipe": config.recipe,
        "lr": config.lr,
        "data": config.data,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "num_classes": data.num_classes,
        "img_size": data.img_size,
        "world_size": trainer.world_size,
        "threads": config.threads,
        "out": str(out),
    }
    if data.num_classes < 5:
        summary.pop("top5")
    if trainer.is_global_zero:
        kept = module.model_ema.module if module.model_ema is not None else module.model
        save_weights(kept, out / "model.safetensors", model_config)
        write_json(out / "summary.json", summary)
        if history:
            plot_curves(history, out / "curves.png", title=f"{name} on {config.data}")
    return summary
