"""The ``largekernel`` command: one entry point, one module per subcommand in this package.

Each subcommand module holds all of its argparse and printing and exposes ``add_arguments(parser)``
(importable without torch, so ``--help`` is fast) and ``run(args) -> int`` (which imports the library
code it drives). The library packages (``models``, ``train``, ``analysis``, ``integrations``) print
nothing and parse no arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LargeKernelError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "profile": ("largekernel.cli.profile", "params, FLOPs and latency of the attention designs (or whole models)"),
    "export": ("largekernel.cli.export", "write a model as ONNX (dynamic batch and size) and check it in onnxruntime"),
    "train": ("largekernel.cli.train", "train a large-kernel model on an embedded dataset or an image folder"),
    "eval": ("largekernel.cli.eval", "top-1/top-5, loss and throughput of a trained or published model"),
    "models": (
        "largekernel.cli.models",
        "list the backbones (VAN, VAN-LSKA, SMT) with params, GMACs and released weights",
    ),
    "yolo": ("largekernel.cli.yolo", "Ultralytics' yolo CLI with LSKA/LKA/SAM blocks and configs registered"),
    "erf": (
        "largekernel.cli.erf",
        "effective receptive fields of models or attention layers: heatmap PNG and area ratios",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="largekernel", description="Large-kernel convolutional attention toolkit.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def _version() -> str:
    from largekernel import __version__

    return f"largekernel {__version__}"


# optional libraries -> the extra that installs them (a missing one is a one-line error, not a bug)
OPTIONAL_LIBRARIES: dict[str, str] = {
    "lightning": "train",
    "timm": "train",
    "torchmetrics": "train",
    "torchvision": "train",
    "mlxtend": "train",
    "matplotlib": "analysis",
    "PIL": "analysis",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "ultralytics": "yolo",
    "triton": "triton",
}


def main(argv: list[str] | None = None) -> int:
    """Run ``largekernel ARGV``; return the exit code.

    The package's own errors (:class:`~largekernel.errors.LargeKernelError`: bad arguments, files,
    data) and a missing optional library print one line and return 2; anything else is a bug and
    keeps its traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LargeKernelError as error:
        print(f"largekernel {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        library = (error.name or "").split(".")[0]
        if library not in OPTIONAL_LIBRARIES:
            raise
        extra = OPTIONAL_LIBRARIES[library]
        print(
            f"largekernel {args.command}: error: this needs {library}, which is not installed: "
            f"pip install 'largekernel[{extra}]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
