"""``largekernel profile``: the attention designs side by side as the kernel grows."""

from __future__ import annotations

import argparse
import json
import sys

from .profile import DESIGNS, PAPER_KERNEL_SIZES

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel-sizes", type=int, nargs="+", default=list(PAPER_KERNEL_SIZES), metavar="K",
        help="odd kernel sizes (default: the LSKA paper's 7 11 23 35 41 53)",
    )
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS, help="attention designs")
    parser.add_argument("--dim", type=int, default=64, help="channels (default 64)")
    parser.add_argument("--resolution", type=int, default=56, help="feature map side (default 56)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timing per row (default 0.2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..layers.decomposition import check_kernel_size
    from .profile import profile_modules

    for kernel_size in args.kernel_sizes:
        check_kernel_size(kernel_size, "profile")
    if args.dim <= 0 or args.resolution <= 0 or args.batch <= 0:
        raise ValueError("--dim, --resolution and --batch must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    rows = profile_modules(
        args.designs,
        args.kernel_sizes,
        progress=not args.json,
        dim=args.dim,
        resolution=args.resolution,
        batch=args.batch,
        device=args.device,
        dtype=getattr(torch, DTYPES[args.dtype]),
        min_run_time=args.min_run_time,
    )
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    _print_table(rows, args)
    return 0


def _print_table(rows, args) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"attention modules: dim {args.dim}, {args.resolution}x{args.resolution}, batch {args.batch}, "
        f"{args.device} {args.dtype}"
    )
    table = Table(title=title)
    for column in ("kernel", "design", "dilation", "params", "MMACs", "latency ms", "vs LKA-trivial"):
        table.add_column(column, justify="left" if column == "design" else "right", no_wrap=True)
    baseline = {row.kernel_size: row.latency_ms for row in rows if row.design == "lka_trivial"}
    for row in rows:
        ratio = baseline.get(row.kernel_size)
        table.add_row(
            str(row.kernel_size),
            row.design,
            "-" if row.dilation is None else str(row.dilation),
            f"{row.params:,}",
            f"{row.macs / 1e6:.2f}",
            f"{row.latency_ms:.3f}",
            f"{ratio / row.latency_ms:.2f}x" if ratio else "",
        )
    # a pipe or file gets the whole table rather than 80 truncated columns
    Console(width=None if sys.stdout.isatty() else 120).print(table)
