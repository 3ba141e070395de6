"""Plain Ultralytics YOLO against our LSKA / LKA / SAM configs, trained on the same generated data.

    PYTHONPATH=src python benchmarks/yolo_train.py [--epochs 12] [--imgsz 160] [--train 256] [--val 64]

Every model is trained by Ultralytics' own trainer on one generated digits dataset
(:func:`largekernel.train.scenes.write_yolo_dataset`: MNIST digits pasted on textured canvases,
tight boxes, 10 classes), with the same seed and settings, on the CPU, and validated by
Ultralytics. Prints a markdown table: parameters and GFLOPs (Ultralytics' ``model.info()`` at
640 px, unfused), seconds per epoch (training and the per-epoch validation, as Ultralytics
times it), mAP50 and mAP50-95 of ``best.pt`` on the validation scenes. Everything (dataset, runs,
Ultralytics settings) lives in a temporary folder unless ``--workdir`` is given.

This is a benchmark, not a test: timings depend on the machine and its load (the load average is
printed with the table).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODELS = (
    "yolov8n",
    "yolov8n-lska",
    "yolov8n-lka",
    "yolov8n-sam",
    "yolov8n-sppf-lska",
    "yolov8n-c2f-lska",
    "yolo11n",
    "yolo11n-lska",
    "yolo11n-c3k2-lska",
    "yolov5n",
    "yolov5n-c3-lska",
)


def _offline(workdir: Path) -> None:
    """Keep Ultralytics' settings in ``workdir`` and away from the network (fonts: a local copy)."""
    os.environ["YOLO_CONFIG_DIR"] = str(workdir / "config")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "False")  # the table only; progress goes to stderr
    import shutil

    import matplotlib

    settings = workdir / "config" / "Ultralytics"
    settings.mkdir(parents=True, exist_ok=True)
    # Ultralytics' dataset check looks for Arial.ttf there and otherwise asks github.com for it
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not (settings / "Arial.ttf").exists():
        shutil.copy(font, settings / "Arial.ttf")


def train_one(name: str, data: Path, workdir: Path, args: argparse.Namespace) -> dict[str, float | str]:
    import torch
    from ultralytics import YOLO

    from largekernel.integrations import yolo  # noqa: F401 - registers our configs and blocks

    torch.manual_seed(args.seed)  # the same initial weights for the layers the models share
    model = YOLO(f"{name}.yaml")
    _layers, params, _gradients, gflops = model.model.info(verbose=True, imgsz=640)  # the summary Ultralytics prints
    start = time.perf_counter()
    model.train(
        data=str(data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=0,
        device="cpu",
        seed=args.seed,
        deterministic=True,
        project=str(workdir / "runs"),
        name=name,
        exist_ok=True,
        plots=False,
        verbose=False,
        amp=False,
    )
    elapsed = time.perf_counter() - start
    run = workdir / "runs" / name
    with open(run / "results.csv") as handle:
        epochs = list(csv.DictReader(handle))
    metrics = YOLO(str(run / "weights" / "best.pt")).val(
        data=str(data), imgsz=args.imgsz, batch=args.batch, workers=0, device="cpu", plots=False, verbose=False,
        project=str(workdir / "val"), name=name, exist_ok=True,
    )  # fmt: skip
    return {
        "model": name,
        "params": params,
        "gflops": gflops,
        "s_per_epoch": float(epochs[-1]["time"]) / len(epochs),
        "total_s": elapsed,
        "map50": float(metrics.box.map50),
        "map": float(metrics.box.map),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help="Ultralytics or largekernel config names"
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=256, help="generated training scenes")
    parser.add_argument("--val", type=int, default=64, help="generated validation scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep dataset and runs here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.imgsz % 32 or args.train < 1 or args.val < 1:
        parser.error("need --epochs >= 1, --imgsz a multiple of 32, --train and --val >= 1")

    with tempfile.TemporaryDirectory(prefix="yolo-bench-") as temporary:
        workdir = (args.workdir or Path(temporary)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        _offline(workdir)
        from largekernel.train.scenes import write_yolo_dataset

        data = write_yolo_dataset(workdir / "data", train=args.train, val=args.val, size=args.imgsz, seed=args.seed)
        rows = []
        for name in args.models:
            rows.append(train_one(name, data, workdir, args))
            row = rows[-1]
            print(f"done {name}: mAP50 {row['map50']:.3f}, {row['total_s']:.0f} s", file=sys.stderr, flush=True)

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"
    print(
        f"{args.train} train / {args.val} val generated digit scenes at {args.imgsz} px, {args.epochs} epochs, "
        f"batch {args.batch}, seed {args.seed}, CPU ({os.cpu_count()} cores, load average at the end {load})\n"
    )
    print("| model | params (M) | GFLOPs (640 px) | s/epoch | mAP50 | mAP50-95 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['params'] / 1e6:.2f} | {row['gflops']:.1f} | {row['s_per_epoch']:.1f} | "
            f"{row['map50']:.3f} | {row['map']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
