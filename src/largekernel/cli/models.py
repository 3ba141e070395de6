"""``largekernel models``: the registered backbones with their size, cost and released weights."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigurationError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=None, help="shell pattern on the names, e.g. 'van_*'")
    parser.add_argument("--macs", action="store_true", help="also count GMACs at --resolution (shapes only, fast)")
    parser.add_argument("--resolution", type=int, default=224, help="input side for --macs (default 224)")
    parser.add_argument("--kernel-size", type=int, default=None, help="override the attention kernel size (VAN models)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def describe_models(
    pattern: str | None = None, macs: bool = False, resolution: int = 224, kernel_size: int | None = None
) -> list[dict[str, Any]]:
    """One row per model: parameters (and MACs), attention design, kernel size, weights location."""
    import torch

    from ..analysis.complexity import count_macs, count_parameters
    from ..models.registry import create_model, list_models

    names = list_models(pattern)
    if not names:
        raise ConfigurationError(f"no model matches {pattern!r}; known: {', '.join(list_models())}")
    rows = []
    for name in names:
        overrides: dict[str, Any] = (
            {"kernel_size": kernel_size} if kernel_size is not None and name.startswith("van") else {}
        )
        with torch.device("meta"):  # shapes only: even 200M-parameter models build in a second
            model = create_model(name, **overrides)
        row: dict[str, Any] = {
            "model": name,
            "attention": getattr(model, "attention", "sam+msa"),
            "kernel_size": getattr(model, "kernel_size", None),
            "params": count_parameters(model),
            "weights": model.pretrained_cfg.get("url"),  # type: ignore[union-attr, operator]  # a plain dict attribute (timm's), untyped on nn.Module
        }
        if macs:
            row["gmacs"] = count_macs(model, (1, 3, resolution, resolution)) / 1e9
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    if args.resolution < 32:
        raise ConfigurationError(
            f"--resolution must be at least 32 (the backbones stride by 32), got {args.resolution}"
        )
    rows = describe_models(args.pattern, args.macs, args.resolution, args.kernel_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="largekernel backbones" + (f" (GMACs at {args.resolution}x{args.resolution})" if args.macs else "")
    )
    columns = ["model", "attention", "kernel", "params (M)", *(["GMACs"] if args.macs else []), "released weights"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "attention", "released weights") else "right")
    for row in rows:
        table.add_row(
            row["model"],
            row["attention"],
            "-" if row["kernel_size"] is None else str(row["kernel_size"]),
            f"{row['params'] / 1e6:.2f}",
            *([f"{row['gmacs']:.2f}"] if args.macs else []),
            row["weights"].rsplit("/", 1)[-1] if row["weights"] else "-",  # the file; --json has the URL
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    return 0
