"""``largekernel erf``: effective receptive fields of models or single attention layers, as PNG and ratios.

Examples::

    largekernel erf --attention lska lka --kernel-sizes 7 23 53 --out erf_layers.png
    largekernel erf --model van_lska_tiny --kernel-sizes 7 23 53 --images embedded --out erf_van.png
    largekernel erf --model van_b0 --checkpoint van_b0.pth --images ~/imagenet/val --num-images 50
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ._common import add_device_dtype_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--model", help="registered model name (largekernel.create_model); omit for single attention layers"
    )
    what.add_argument("--checkpoint", help="weights for --model (.pth/.pt/.safetensors); default: random init")
    what.add_argument(
        "--attention",
        nargs="+",
        choices=["lka", "lska", "lka_trivial", "lska_trivial"],
        help="attention design(s); with --model an override, alone one single layer each (default lska)",
    )
    what.add_argument("--kernel-sizes", nargs="+", type=int, metavar="K", help="kernel size(s); one panel each")
    what.add_argument("--dim", type=int, default=16, help="channels of a single attention layer")
    data = parser.add_argument_group("images")
    data.add_argument(
        "--images", default="embedded", help="an image folder (PNG/JPG), or 'embedded' (bundled MNIST digits)"
    )
    data.add_argument("--num-images", type=int, default=50, help="images to average over (RepLKNet: 50)")
    data.add_argument("--img-size", type=int, default=224, help="square input side in pixels")
    method = parser.add_argument_group("method and output")
    method.add_argument(
        "--gradient",
        choices=["relu", "abs"],
        default="relu",
        help="relu: RepLKNet's relu(output) and relu(gradient); abs: |gradient| of the summed central outputs",
    )
    method.add_argument(
        "--thresholds", nargs="+", type=float, default=[0.2, 0.3, 0.5, 0.99], help="area-ratio thresholds"
    )
    method.add_argument("--out", default="erf.png", help="PNG with one heatmap per configuration")
    method.add_argument("--npz", help="also save the raw mean gradient maps (one array per configuration)")
    method.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    method.add_argument(
        "--seed", type=int, default=0, help="seed for the random initialisation (same for every configuration)"
    )
    method.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_dtype_arguments(parser)


def _configurations(args: argparse.Namespace) -> list[tuple[str | None, int | None]]:
    attentions = args.attention or ([None] if args.model else ["lska"])
    kernel_sizes = args.kernel_sizes or ([None] if args.model else [23])
    return list(itertools.product(attentions, kernel_sizes))


def _label(args: argparse.Namespace, attention: str | None, kernel_size: int | None) -> str:
    parts = [args.model] if args.model else []
    if attention is not None:
        parts.append(attention)
    if kernel_size is not None:
        parts.append(f"k={kernel_size}")
    return " ".join(parts)


def _build(args: argparse.Namespace, attention: str | None, kernel_size: int | None):
    import torch

    from ..analysis.erf import attention_layer_for_erf

    torch.manual_seed(args.seed)
    if not args.model:
        if attention is None or kernel_size is None:  # _configurations gives a lone layer both
            raise ValueError("a single attention layer needs both a design and a kernel size")
        return attention_layer_for_erf(attention, kernel_size, dim=args.dim)
    from largekernel import create_model

    overrides: dict[str, Any] = {}
    if attention is not None:
        overrides["attention"] = attention
    if kernel_size is not None:
        overrides["kernel_size"] = kernel_size
    # checkpoint layouts (reference, HuggingFace, mmpretrain) are converted by the loader
    return create_model(args.model, checkpoint_path=args.checkpoint, **overrides)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..analysis._runtime import resolve_device, resolve_dtype
    from ..analysis.erf import effective_receptive_field, embedded_images, folder_images
    from ..analysis.plots import save_erf_grid

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if args.num_images < 1:
        raise ConfigurationError(f"--num-images must be >= 1, got {args.num_images}")
    if args.img_size < 8:
        raise ConfigurationError(f"--img-size must be >= 8 pixels, got {args.img_size}")
    if args.checkpoint and not args.model:
        raise ConfigurationError("--checkpoint needs --model")
    for threshold in args.thresholds:
        if not 0 < threshold < 1:
            raise ConfigurationError(f"--thresholds must lie in (0, 1), got {threshold}")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    results = []
    for attention, kernel_size in _configurations(args):
        if args.images == "embedded":
            count, images = embedded_images(args.num_images, args.img_size)
        else:
            count, images = folder_images(args.images, args.num_images, args.img_size)
        label = _label(args, attention, kernel_size)
        model = _build(args, attention, kernel_size)
        result = effective_receptive_field(
            model,
            images,
            gradient=args.gradient,
            device=device,
            dtype=dtype,
            progress=not args.no_progress,
            total=count,
            label=label,
        )
        results.append((attention, kernel_size, result))

    maps = {result.label: result.log_scaled() for _, _, result in results}
    ratios = {result.label: result.area_ratios(args.thresholds) for _, _, result in results}

    def caption(values) -> str:  # two thresholds per line, so neighbouring panels' captions never touch
        parts = [f"{100 * r.threshold:g}%: {r.ratio:.3f}" for r in values]
        return "\n".join("   ".join(parts[i : i + 2]) for i in range(0, len(parts), 2))

    captions = {label: caption(values) for label, values in ratios.items()}
    source = "embedded digits" if args.images == "embedded" else Path(args.images).name
    weights = "checkpoint" if args.checkpoint else "random init"
    title = f"ERF ({args.gradient}), {results[0][2].num_images} images ({source}), {args.img_size}px, {weights}"
    # one row per design, one column per kernel size
    columns = len(args.kernel_sizes) if args.kernel_sizes and len(args.kernel_sizes) > 1 else None
    out = save_erf_grid(maps, args.out, columns=columns, title=title, captions=captions)
    if args.npz:
        arrays: dict[str, Any] = {f"map{i}": r.contribution for i, (_, _, r) in enumerate(results)}
        np.savez_compressed(args.npz, **arrays, labels=np.array([r.label for _, _, r in results]))

    records = [
        {
            "label": result.label,
            "model": args.model,
            "attention": attention,
            "kernel_size": kernel_size,
            "num_images": result.num_images,
            "skipped_non_finite": result.skipped_non_finite,
            "img_size": args.img_size,
            "gradient": result.gradient,
            "area_ratios": [{"threshold": r.threshold, "side": r.side, "ratio": r.ratio} for r in ratios[result.label]],
        }
        for attention, kernel_size, result in results
    ]
    if args.json:
        json.dump({"figure": str(out), "results": records}, sys.stdout, indent=2)
        print()
        return 0
    _print_table(records, args.thresholds, out)
    return 0


def _print_table(records: list[dict], thresholds: list[float], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("configuration")
    table.add_column("images", justify="right")
    for threshold in thresholds:
        table.add_column(f"t={threshold:g}", justify="right")
    for record in records:
        cells = [f"{r['ratio']:.3f} ({r['side']})" for r in record["area_ratios"]]
        table.add_row(record["label"], str(record["num_images"]), *cells)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe gets unwrapped rows
    console.print("effective receptive field: area ratio (side in px) of the smallest centred square holding t of it")
    console.print(table)
    console.print(f"heatmaps: {out}")
