"""``largekernel yolo ...``: Ultralytics' own ``yolo`` command, with our blocks and configs registered.

``largekernel yolo train model=yolov8n-lska.yaml data=my.yaml epochs=100`` works exactly as
``yolo train`` does, and knows our config names (built from the installed Ultralytics' configs; see
``largekernel yolo configs``) and our block names in your own YAMLs. Ultralytics is imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import re
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Everything after 'yolo' goes to Ultralytics' CLI (key=value style), e.g. "
        "'largekernel yolo train model=yolov8n-lska.yaml data=coco8.yaml epochs=3'. "
        "'largekernel yolo configs' lists our configs; 'largekernel yolo help' shows Ultralytics' help."
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
        print(
            "largekernel's YOLO configs, built from your Ultralytics' own (scale letter after the version; n without one):"
        )
        width = max(len(name) for name in yolo.available_configs()) + 17
        for name, recipe in sorted(yolo.RECIPES.items()):
            scaled = re.sub(r"^(yolov?[0-9]+)", r"\1{n,s,m,l,x}", name) + ".yaml"
            print(f"  {scaled:<{width}} {recipe.base}.yaml + {recipe.summary}")
        return 0
    from ultralytics import cfg

    # entrypoint() reads the module-level ARGV captured at import; hand it ours (paths may contain spaces)
    saved = cfg.ARGV
    cfg.ARGV = ["yolo", *forwarded]
    try:
        cfg.entrypoint()
    except RuntimeError as error:
        if not str(error).startswith("Dataset '"):  # Ultralytics' one user-input RuntimeError: a bad data=
            raise
        print(f"largekernel yolo: error: {error}", file=sys.stderr)
        return 2
    finally:
        cfg.ARGV = saved
    return 0
