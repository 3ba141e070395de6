"""``largekernel yolo ...``: Ultralytics' own ``yolo`` command, with our blocks and configs registered.

``largekernel yolo train model=yolov8n-lska.yaml data=my.yaml epochs=100`` works exactly as
``yolo train`` does; a ``model=`` naming a shipped config (see ``largekernel yolo configs``) is
resolved to the file inside this package. Ultralytics is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import re
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Everything after 'yolo' goes to Ultralytics' CLI (key=value style), e.g. "
        "'largekernel yolo train model=yolov8n-lska.yaml data=coco8.yaml epochs=3'. "
        "'largekernel yolo configs' lists the shipped configs; 'largekernel yolo help' shows Ultralytics' help."
    )
    parser.add_argument("ultralytics_args", nargs=argparse.REMAINDER, metavar="ARGS", help="Ultralytics CLI arguments")


def run(args: argparse.Namespace) -> int:
    try:
        from largekernel.integrations import yolo
    except ImportError as error:
        print(f"largekernel yolo: error: {error}", file=sys.stderr)
        return 2
    forwarded = list(args.ultralytics_args)
    if forwarded[:1] == ["configs"]:
        print("shipped configs (put the scale letter after the version: yolov8n-lska.yaml, yolo11s-c3k2-lska.yaml):")
        for name in yolo.available_configs():
            print("  " + re.sub(r"^(yolov?[0-9]+)", r"\1{n,s,m,l,x}", name) + ".yaml")
        return 0
    forwarded = [
        f"model={yolo.resolve_model_arg(arg.split('=', 1)[1])}" if arg.startswith("model=") else arg for arg in forwarded
    ]
    from ultralytics import cfg

    # entrypoint() reads the module-level ARGV captured at import; hand it ours (paths may contain spaces)
    saved = cfg.ARGV
    cfg.ARGV = ["yolo", *forwarded]
    try:
        cfg.entrypoint()
    finally:
        cfg.ARGV = saved
    return 0
