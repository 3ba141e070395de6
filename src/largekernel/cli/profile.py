"""``largekernel profile``: the attention designs side by side as the kernel grows, alone or in whole models.

Three modes:

* default: the attention modules alone (``--dim``, ``--resolution`` is the feature-map side);
* ``--model NAME``: the whole model with each design and kernel size (``--resolution`` is the image
  side), adding forward+backward latency, throughput and peak memory;
* ``--scaling``: whole models and SMT's stage-3 token mixers (LKA, LSKA, SAM, self-attention) at
  growing input resolutions, counting the attention matmuls, on log-log axes.

``--json``, ``--csv FILE`` and ``--plot FILE.png`` work in every mode.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..analysis.defaults import DESIGNS, PAPER_KERNEL_SIZES, SCALING_RESOLUTIONS
from ..errors import ConfigurationError
from ._common import DTYPE_NAMES

if TYPE_CHECKING:  # the CLI's help must not import torch
    from ..analysis.profile import ModelProfile, ModuleProfile

MODULE_RESOLUTION, MODEL_RESOLUTION = 56, 224


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel-sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="odd kernel sizes (default: the LSKA paper's 7 11 23 35 41 53)",
    )
    parser.add_argument(
        "--designs", nargs="+", default=None, choices=DESIGNS, help="attention designs (default: all four)"
    )
    parser.add_argument(
        "--model", help="profile this whole model (e.g. van_lska_tiny) with each design and kernel size"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="cost against input resolution (models and stage-3 mixers)"
    )
    parser.add_argument(
        "--resolutions",
        type=int,
        nargs="+",
        default=list(SCALING_RESOLUTIONS),
        metavar="R",
        help="input sides for --scaling (default 224 512 1024)",
    )
    parser.add_argument(
        "--scaling-models",
        nargs="+",
        default=["van_lska_tiny", "smt_t"],
        metavar="NAME",
        help="whole models for --scaling (default van_lska_tiny smt_t)",
    )
    parser.add_argument(
        "--dim", type=int, default=None, help="channels of the modules (default 64; 256 for --scaling's stage-3 mixers)"
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"feature map side for modules (default {MODULE_RESOLUTION}), image side for --model (default {MODEL_RESOLUTION})",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    parser.add_argument(
        "--min-run-time", type=float, default=0.2, help="seconds of timing per row and figure (default 0.2)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op CPU threads for every measurement of a row: timings, and for --model/--scaling the warm-up and "
        "peak-memory steps (default 1, torch.utils.benchmark's default; some operators' temporary memory grows with threads)",
    )
    parser.add_argument(
        "--macs-only", action="store_true", help="--model/--scaling: parameters and MACs only (no timing, no memory)"
    )
    parser.add_argument("--no-memory", action="store_true", help="--model/--scaling: skip the peak-memory measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw each figure against kernel size (or resolution)")


def run(args: argparse.Namespace) -> int:
    from ..analysis._runtime import resolve_device, resolve_dtype
    from ..layers.decomposition import check_kernel_size

    sweep_given = args.designs is not None or args.kernel_sizes is not None
    args.designs = args.designs or list(DESIGNS)
    args.kernel_sizes = args.kernel_sizes or list(PAPER_KERNEL_SIZES)
    for kernel_size in args.kernel_sizes:
        check_kernel_size(kernel_size, "profile")
    for name in ("dim", "resolution", "batch", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigurationError(f"--{name} must be positive, got {value}")
    if args.model and args.scaling:
        raise ConfigurationError(
            "--model and --scaling are separate modes; use --scaling-models to choose --scaling's models"
        )
    if args.scaling and any(r < 32 for r in args.resolutions):
        raise ConfigurationError(f"--resolutions must be >= 32 (stage 3 has stride 16), got {args.resolutions}")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    progress = not args.json
    measure = {"timing": not args.macs_only, "memory": not (args.macs_only or args.no_memory), "threads": args.threads}

    rows: list[ModelProfile] | list[ModuleProfile]
    if args.scaling:
        from ..analysis.profile import profile_scaling

        rows = profile_scaling(
            args.resolutions,
            args.scaling_models,
            dim=args.dim or 256,
            batch=args.batch,
            device=device,
            dtype=dtype,
            min_run_time=args.min_run_time,
            progress=progress,
            **measure,
        )
    elif args.model:
        from ..analysis.profile import profile_model, profile_models
        from ..models import create_model

        default = create_model(args.model)  # an unknown name raises the registry's error with close matches
        settings = dict(
            resolution=args.resolution or MODEL_RESOLUTION,
            batch=args.batch,
            device=device,
            dtype=dtype,
            min_run_time=args.min_run_time,
            **measure,
        )
        if hasattr(default, "attention") and hasattr(default, "kernel_size"):
            rows = profile_models(args.model, args.designs, args.kernel_sizes, progress=progress, **settings)
        elif sweep_given:
            raise ConfigurationError(
                f"model {args.model!r} has no attention design or kernel size to vary; drop --designs/--kernel-sizes"
            )
        else:  # e.g. SMT: one row for the model as published
            rows = [profile_model(args.model, **settings)]
    else:
        from ..analysis.profile import profile_modules

        rows = profile_modules(
            args.designs,
            args.kernel_sizes,
            progress=progress,
            dim=args.dim or 64,
            resolution=args.resolution or MODULE_RESOLUTION,
            batch=args.batch,
            device=device,
            dtype=dtype,
            min_run_time=args.min_run_time,
            threads=args.threads,
        )
    records = [row.as_dict() for row in rows]
    if args.csv:
        _write_csv(records, args.csv)
    if args.plot:
        _plot(records, args)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if args.scaling:
        _print_scaling_table(records, args)
    elif args.model:
        _print_model_table(records, args)
    else:
        _print_table(rows, args)
    return 0


def _write_csv(records: list[dict], path: str) -> None:
    import csv
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _plot(records: list[dict], args: argparse.Namespace) -> None:
    from ..analysis.plots import save_metric_lines

    setting = f"{args.device} {args.dtype}, batch {args.batch}, {_threads(args.threads)}"
    if args.scaling:
        rows = [{**r, "gmacs_all": r["macs_with_attention"] / 1e9, "memory": r["peak_memory_mib"]} for r in records]
        metrics = {
            "gmacs_all": "GMACs / image (incl. attention matmuls)",
            "forward_ms": "forward latency (ms)",
            "forward_backward_ms": "forward+backward latency (ms)",
            "memory": "peak memory, fwd+bwd (MiB)",
        }
        save_metric_lines(
            rows,
            args.plot,
            x="resolution",
            metrics=metrics,
            group="label",
            log_x=True,
            log_y=True,
            x_label="input resolution (px)",
            title=f"cost against input resolution ({setting})",
        )
        return
    if args.model:
        rows = [{**r, "params_m": r["params"] / 1e6, "gmacs": r["macs"] / 1e9} for r in records]
        metrics = {
            "params_m": "parameters (M)",
            "gmacs": f"GMACs / image @{records[0]['resolution']}",
            "forward_ms": "forward latency (ms)",
            "forward_backward_ms": "forward+backward latency (ms)",
            "throughput": "throughput (images/s)",
            "peak_memory_mib": "peak memory, fwd+bwd (MiB)",
        }
        title = f"{args.model} @{records[0]['resolution']}px by attention design ({setting})"
        # timings span orders of magnitude between designs: log axes keep the cheap designs readable
        save_metric_lines(
            rows,
            args.plot,
            x="kernel_size",
            metrics=metrics,
            group="attention",
            title=title,
            x_label="kernel size",
            log_y={"forward_ms", "forward_backward_ms", "throughput"},
        )
        return
    rows = [{**r, "mmacs": r["macs"] / 1e6} for r in records]
    metrics = {"params": "parameters", "mmacs": "MMACs", "latency_ms": "forward latency (ms)"}
    title = f"attention modules: dim {records[0]['dim']}, {records[0]['resolution']}px map ({setting})"
    save_metric_lines(
        rows, args.plot, x="kernel_size", metrics=metrics, group="design", title=title, x_label="kernel size"
    )


def _console():
    from rich.console import Console

    # a pipe or file gets the whole table rather than 80 truncated columns
    return Console(width=None if sys.stdout.isatty() else 160)


def _threads(count: int) -> str:
    return f"{count} thread" + ("s" if count != 1 else "")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_model_table(records: list[dict], args: argparse.Namespace) -> None:
    from rich.table import Table

    first = records[0]
    table = Table(
        title=f"{args.model} @{first['resolution']}px, batch {first['batch']}, {first['device']} {first['dtype']}, "
        f"{_threads(first['threads'])}"
    )
    with_attention = any(r["macs_with_attention"] != r["macs"] for r in records)
    columns = ["kernel", "design", "params (M)", "GMACs"] + (["GMACs incl. attn"] if with_attention else [])
    for column in (*columns, "fwd ms", "fwd+bwd ms", "img/s", "peak MiB"):
        table.add_column(column, justify="left" if column == "design" else "right", no_wrap=True)
    for r in records:
        attention_cell = [f"{r['macs_with_attention'] / 1e9:.3f}"] if with_attention else []
        table.add_row(
            str(r["kernel_size"] or "-"),
            r["attention"] or "-",
            f"{r['params'] / 1e6:.3f}",
            f"{r['macs'] / 1e9:.3f}",
            *attention_cell,
            _fmt(r["forward_ms"], ".1f"),
            _fmt(r["forward_backward_ms"], ".1f"),
            _fmt(r["throughput"], ".1f"),
            _fmt(r["peak_memory_mib"], ".0f"),
        )
    _console().print(table)


def _print_scaling_table(records: list[dict], args: argparse.Namespace) -> None:
    from rich.table import Table

    first = records[0]
    table = Table(
        title=f"cost against input resolution, batch {first['batch']}, {first['device']} {first['dtype']}, "
        f"{_threads(first['threads'])}"
    )
    for column in (
        "input",
        "model / stage-3 mixer",
        "params",
        "GMACs",
        "GMACs incl. attn",
        "fwd ms",
        "fwd+bwd ms",
        "peak MiB",
    ):
        table.add_column(column, justify="left" if column.startswith("model") else "right", no_wrap=True)
    for r in records:
        table.add_row(
            str(r["resolution"]),
            r["label"],
            f"{r['params']:,}",
            f"{r['macs'] / 1e9:.3f}",
            f"{r['macs_with_attention'] / 1e9:.3f}",
            _fmt(r["forward_ms"], ".1f"),
            _fmt(r["forward_backward_ms"], ".1f"),
            _fmt(r["peak_memory_mib"], ".0f"),
        )
    _console().print(table)


def _print_table(rows, args) -> None:
    from rich.table import Table

    first = rows[0]
    title = (
        f"attention modules: dim {first.dim}, {first.resolution}x{first.resolution}, batch {first.batch}, "
        f"{args.device} {args.dtype}, {_threads(args.threads)}"
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
    _console().print(table)
