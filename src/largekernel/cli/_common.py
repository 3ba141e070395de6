"""Argument helpers shared by the subcommands; importable without torch (``--help`` stays fast)."""

from __future__ import annotations

import argparse
import json

__all__ = ["DTYPE_NAMES", "add_device_dtype_arguments", "json_object"]

DTYPE_NAMES: tuple[str, ...] = ("bfloat16", "float16", "float32")


def add_device_dtype_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPE_NAMES, help="parameter and input dtype (default: float32)"
    )


def json_object(text: str) -> dict:
    """argparse type: a JSON object such as ``'{"depths": [1, 1, 2]}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"depths\": [1, 1, 2]}}', got {text!r}")
    return value
