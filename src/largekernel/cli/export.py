"""``largekernel export``: write a model as ONNX (dynamic batch and size) and check it in onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MissingFileError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name, e.g. van_b0, van_lska_tiny, smt_t")
    parser.add_argument("--checkpoint", type=Path, default=None, help="weights to load (any layout create_model reads)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    parser.add_argument("--output", type=Path, default=None, help="output file (default: MODEL.onnx)")
    parser.add_argument(
        "--img-size", type=int, default=224, help="side of the example input (the file accepts any size)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument(
        "--exporter", choices=["torchscript", "dynamo"], default="torchscript", help="torch.onnx exporter"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size if not the model's default")
    parser.add_argument("--no-fold", action="store_true", help="export the model as is, without optimize_for_inference")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel import create_model, optimize_for_inference
    from largekernel.export import check_onnx, export_onnx

    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise MissingFileError(f"checkpoint not found: {args.checkpoint}")
    model = create_model(args.model, checkpoint_path=args.checkpoint, **overrides).eval()
    exported = model if args.no_fold else optimize_for_inference(model, channels_last=False)
    output = args.output or Path(f"{args.model}.onnx")
    export_onnx(exported, output, img_size=args.img_size, opset=args.opset, exporter=args.exporter)
    size_mb = output.stat().st_size / 2**20
    print(
        f"wrote {output} ({size_mb:.1f} MB, opset {args.opset}, dynamic batch/height/width, {args.exporter} exporter)"
    )
    if args.no_check:
        return 0
    # a batch and size other than the traced ones, so the dynamic axes are exercised
    shape = (2, 3, args.img_size + 32, args.img_size + 32)
    with torch.no_grad():
        result = check_onnx(output, model, input_shape=shape)
    relative = result.max_abs_diff / max(result.max_abs_output, 1e-12)
    print(
        f"onnxruntime vs PyTorch on random input {shape}: max abs diff {result.max_abs_diff:.2e} (relative {relative:.1e})"
    )
    print("| runtime | latency (ms, median) |\n|---|---|")
    print(
        f"| PyTorch (eager, unfolded) | {result.pytorch_ms:.1f} |\n| onnxruntime (CPU) | {result.onnxruntime_ms:.1f} |"
    )
    if relative > 1e-3:
        print("error: onnxruntime disagrees with PyTorch beyond 1e-3 relative")
        return 1
    return 0
