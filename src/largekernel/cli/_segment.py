"""``largekernel train --task segment`` / ``largekernel eval --task segment`` (semantic segmentation).

The train and eval parsers own the shared options (``--data``, ``--model``, ``--epochs``, ...); this
module adds the segmentation-only ones and runs the task. No torch at import time.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from ..errors import ConfigurationError

__all__ = ["add_eval_arguments", "add_train_arguments", "run_eval", "run_train"]


def _add_common(group) -> None:
    group.add_argument(
        "--num-classes", type=int, help="segment: classes of an ADE20K-style folder (default: its classes.txt)"
    )
    group.add_argument(
        "--reduce-zero-label",
        action="store_true",
        default=None,
        help="segment: ADE20K's label convention (0 = other -> ignored, c -> c-1)",
    )
    group.add_argument(
        "--inference",
        choices=("whole", "slide"),
        help="segment: whole-image or sliding-window inference (default whole)",
    )
    group.add_argument("--crop-size", type=int, help="segment: sliding window side (default: --img-size)")
    group.add_argument("--stride", type=int, help="segment: sliding window stride (default: 2/3 of the window)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options only ``--task segment`` reads (the shared ones come from ``largekernel train``)."""
    from ..train.segmentation_config import DEFAULT_SEGMENTER, SegmentConfig

    d = SegmentConfig()
    group = parser.add_argument_group(
        "segmentation (--task segment)",
        f"--data: 'scenes' (embedded digit scenes, 11 classes) or an ADE20K-style folder; --model: a segmenter "
        f"<backbone>_fpn / <backbone>_upernet (default {DEFAULT_SEGMENTER}, sized down for the scenes); "
        f"--checkpoint-path: backbone weights. Defaults: --epochs {d.epochs}, --batch-size {d.batch_size}, --lr {d.lr:g}",
    )
    _add_common(group)
    group.add_argument("--aux-weight", type=float, help=f"segment: auxiliary head loss weight (default {d.aux_weight})")
    group.add_argument(
        "--ohem-thresh",
        type=float,
        help="segment: online hard pixel mining (mmseg's OHEMPixelSampler) threshold, e.g. 0.7 (default off)",
    )
    group.add_argument(
        "--ohem-min-kept", type=int, help="segment: hard pixels kept per image at least (default 100000)"
    )
    group.add_argument(
        "--poly-power", type=float, help=f"segment: poly learning-rate decay power (default {d.poly_power})"
    )
    group.add_argument("--warmup-iters", type=int, help=f"segment: linear warmup iterations (default {d.warmup_iters})")
    group.add_argument(
        "--train-scenes", type=int, help=f"segment: generated training scenes (default {d.train_scenes})"
    )
    group.add_argument("--val-scenes", type=int, help=f"segment: generated held-out scenes (default {d.val_scenes})")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options only ``eval --task segment`` reads."""
    group = parser.add_argument_group(
        "segmentation (--task segment)",
        "--checkpoint: a segment run's model.safetensors; "
        "or --model <backbone>_<head> with --checkpoint-path (ours or mmseg's layout)",
    )
    _add_common(group)
    group.add_argument("--out", help="segment: folder for overlay.png and metrics.json")
    group.add_argument("--val-scenes", type=int, help="segment: generated held-out scenes (default 200)")


def _config(args: argparse.Namespace):
    from ..train.segmentation_config import SegmentConfig

    if args.resume:
        raise ConfigurationError("--resume is not supported with --task segment; start a new run")
    given = {f.name: getattr(args, f.name) for f in fields(SegmentConfig) if getattr(args, f.name, None) is not None}
    if given.get("data") in ("mnist", "digits"):
        raise ConfigurationError(
            f"--data {given['data']} is a classification set; --task segment uses 'scenes' or an ADE20K-style folder"
        )
    return SegmentConfig(**given)


def run_train(args: argparse.Namespace) -> int:
    from ..train.segmentation import train_segmentation

    summary = train_segmentation(_config(args))
    print(
        f"{summary['model']} ({summary['params']:,} params) on {summary['data']}: held-out mIoU {summary['mIoU']:.2f}%, "
        f"pixel accuracy {summary['aAcc']:.2f}% on {summary['val_images']} images after {summary['epochs']} epochs "
        f"({summary['iterations']} iterations); {summary['seconds']:.0f} s. Run: {summary['out']}"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..train.segmentation import _set_threads, evaluate_segmentation, load_segmenter
    from ..train.segmentation_data import load_segmentation_data

    _set_threads(args.threads)
    if args.checkpoint is not None:
        model, description = load_segmenter(args.checkpoint)
        data_name = args.data or description["data"]
        img_size = args.img_size or description["img_size"]
        num_classes = args.num_classes or description["num_classes"]
        reduce_zero = (
            args.reduce_zero_label
            if args.reduce_zero_label is not None
            else description.get("reduce_zero_label", False)
        )
    elif args.model is not None:
        if args.data is None:
            raise ConfigurationError(
                "eval --task segment --model NAME needs --data ('scenes' or an ADE20K-style folder)"
            )
        data_name, img_size, num_classes, reduce_zero = (
            args.data,
            args.img_size,
            args.num_classes,
            bool(args.reduce_zero_label),
        )
    else:
        raise ConfigurationError(
            "eval --task segment needs --checkpoint RUN/model.safetensors, or --model NAME --checkpoint-path FILE"
        )
    data = load_segmentation_data(
        data_name,
        img_size,
        None if data_name == "scenes" else num_classes,
        reduce_zero,
        train_count=(args.val_scenes or 200) if args.split == "train" else 1,
        val_count=args.val_scenes or 200,
    )
    if args.checkpoint is None:
        from ..segmentation.model import create_segmenter_from_name

        model = create_segmenter_from_name(
            args.model, num_classes=data.num_classes, checkpoint_path=args.checkpoint_path, **(args.model_args or {})
        )
    result = evaluate_segmentation(
        model,
        data,
        args.split if args.split != "all" else "val",
        args.batch_size,
        args.inference or "whole",
        args.crop_size,
        args.stride,
        args.out,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    worst = sorted((v, k) for k, v in result["per_class_iou"].items() if v is not None)[:3]
    print(
        f"{data.name} ({result['split']}, {result['images']} images, {result['inference']}): mIoU {result['mIoU']:.2f}%  "
        f"mAcc {result['mAcc']:.2f}%  pixel accuracy {result['aAcc']:.2f}%  lowest IoU: "
        + ", ".join(f"{k} {v:.1f}%" for v, k in worst)
        + (f"  overlay: {args.out}/overlay.png" if args.out else "")
    )
    return 0
