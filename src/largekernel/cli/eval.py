"""``largekernel eval``: top-1 / top-5, loss and throughput of a trained or published model."""

from __future__ import annotations

import argparse
import json

from ._common import json_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--task",
        choices=("classify", "segment"),
        default="classify",
        help="classify (default) or segment (mIoU of a segmenter)",
    )
    add("--checkpoint", help="a largekernel train output: model.safetensors (with model.json beside it) or a .ckpt")
    add("--model", help="registered model name, for published weights (with --checkpoint-path)")
    add(
        "--checkpoint-path",
        help="published weights for --model (normalised, cropped and resized as its pretrained_cfg says)",
    )
    add("--model-args", type=json_object, help="JSON dict of create_model overrides for --model")
    add("--kernel-size", type=int, help="attention kernel size for --model (must match the weights)")
    add("--attention", help="attention design for --model (must match the weights)")
    add("--data", help="embedded set name or image folder (default: the data the model was trained on)")
    add("--split", default="val", choices=("val", "train", "all"), help="which images to score (default val: held out)")
    add("--img-size", type=int, help="input size (default: the training size; the model's own for published weights)")
    add("--batch-size", type=int, default=128)
    add("--accelerator", default="auto")
    add("--devices", default="1", help="device count or list (default 1)")
    add("--precision", default="32-true")
    add("--num-workers", type=int, default=0)
    add("--threads", type=int, default=1, help="CPU threads (default 1, as largekernel train)")
    add("--json", action="store_true", help="print the result as JSON")
    add("--quiet", action="store_true", help="no progress bar or Lightning banners")
    from ._segment import add_eval_arguments  # --task segment's own options

    add_eval_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "task", "classify") == "segment":
        from ._segment import run_eval

        return run_eval(args)
    import torch

    from ..errors import ConfigurationError
    from ..train.evaluate import evaluate, load_for_eval

    if args.threads < 1:
        raise ConfigurationError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise ConfigurationError(f"--batch-size must be a positive integer, got {args.batch_size}")
    overrides = dict(args.model_args or {})
    if args.kernel_size is not None:
        overrides["kernel_size"] = args.kernel_size
    if args.attention is not None:
        overrides["attention"] = args.attention
    network, config = load_for_eval(args.checkpoint, args.model, args.checkpoint_path, overrides)
    result = evaluate(
        network,
        config,
        data=args.data,
        split=args.split,
        img_size=args.img_size,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        num_workers=args.num_workers,
        quiet=args.quiet or args.json,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    top5 = f"  top-5 {result['top5']:.2f}%" if "top5" in result else ""
    print(
        f"{result['model']} on {result['data']} ({result['split']}, {result['images']} images): "
        f"top-1 {result['top1']:.2f}%{top5}  loss {result['loss']:.4f}  "
        f"{result['images_per_second']:.0f} images/s"
    )
    return 0
