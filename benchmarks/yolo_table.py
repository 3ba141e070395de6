"""Params and GFLOPs of every shipped YOLO config against its plain Ultralytics base, as markdown.

    PYTHONPATH=src python benchmarks/yolo_table.py [--scales nsmlx] [--imgsz 640]

GFLOPs follow Ultralytics' convention (2 x multiply-accumulates, the number ``model.info()`` prints)
at ``imgsz`` x ``imgsz``. MACs are counted by :func:`largekernel.analysis.count_macs` at 128 x 128 and
scaled by the area ratio, which is exact for these fully convolutional models: every layer's output
map is the input size over its stride, so every layer's cost is proportional to the input area
(``--check`` recounts one model at full size to show it).
"""

from __future__ import annotations

import argparse
import re
import sys

import torch

from largekernel.analysis.complexity import count_macs, count_parameters

COUNT_SIZE = 128


def build(cfg: str | dict):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(cfg, verbose=False)


def measure(cfg: str | dict, imgsz: int) -> tuple[int, float]:
    model = build(cfg)
    macs = count_macs(model, (1, 3, COUNT_SIZE, COUNT_SIZE)) * (imgsz / COUNT_SIZE) ** 2
    return count_parameters(model), 2 * macs / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="nsmlx", help="model scales to list (default: nsmlx)")
    parser.add_argument("--imgsz", type=int, default=640, help="image size for GFLOPs (default 640)")
    parser.add_argument("--check", action="store_true", help="also count yolov8n-lska at full size")
    args = parser.parse_args(argv)
    if not set(args.scales) <= set("nsmlx") or not args.scales:
        parser.error(f"--scales must be letters from 'nsmlx', got {args.scales!r}")
    if args.imgsz % 32:
        parser.error(f"--imgsz must be a multiple of 32 (the largest stride), got {args.imgsz}")
    torch.set_num_threads(1)  # small maps: one thread is fastest and the numbers do not depend on it

    from largekernel.integrations import yolo

    if args.check:
        model = build(yolo.config("yolov8n-lska"))
        full = count_macs(model, (1, 3, args.imgsz, args.imgsz))
        scaled = count_macs(model, (1, 3, COUNT_SIZE, COUNT_SIZE)) * (args.imgsz / COUNT_SIZE) ** 2
        print(
            f"check yolov8n-lska: MACs at {args.imgsz}: {full:,}; at {COUNT_SIZE} scaled: {scaled:,.0f}",
            file=sys.stderr,
        )

    families: dict[str, list[str]] = {}
    for config in yolo.available_configs():
        families.setdefault(config.split("-")[0], []).append(config)
    print(
        f"Params (M) / GFLOPs at {args.imgsz}x{args.imgsz} (Ultralytics' convention: 2 x MACs); "
        "in brackets the change against the plain Ultralytics model of the same scale.\n"
    )
    for family, configs in families.items():
        header = "| config | " + " | ".join(f"{family}{s}" for s in args.scales) + " |"
        rows = [header, "|" + "---|" * (len(args.scales) + 1)]
        base = {s: measure(f"{family}{s}.yaml", args.imgsz) for s in args.scales}
        rows.append(
            f"| {family} (Ultralytics) | " + " | ".join(f"{p / 1e6:.2f} / {g:.1f}" for p, g in base.values()) + " |"
        )
        for config in configs:
            cells = []
            for s in args.scales:
                params, gflops = measure(yolo.config(re.sub(r"^(yolov?\d+)", rf"\g<1>{s}", config)), args.imgsz)
                bp, bg = base[s]
                cells.append(
                    f"{params / 1e6:.2f} / {gflops:.1f} ({100 * (params / bp - 1):+.1f}% / {100 * (gflops / bg - 1):+.1f}%)"
                )
            rows.append(f"| {config} | " + " | ".join(cells) + " |")
            print(f"measured {config}", file=sys.stderr, flush=True)
        print("\n".join(rows) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
