"""``largekernel train --task segment`` / ``eval --task segment`` end to end on one tiny shared run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from largekernel.cli import main
from largekernel.train.segmentation_data import write_scene_folders

TINY = [
    "--model",
    "van_lska_tiny_upernet",
    "--model-args",
    json.dumps(
        {"depths": [1, 1, 1, 1], "embed_dims": [16, 24, 32, 48], "kernel_size": 7, "channels": 24, "aux_channels": 16}
    ),
    "--img-size",
    "48",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """UperNet (with aux head) on a written ADE20K-style folder of 24 + 6 scenes, 3 epochs."""
    root = tmp_path_factory.mktemp("segment")
    folder = write_scene_folders(root / "ade", train=24, val=6, size=48, seed=0)
    out = root / "run"
    assert (
        main(
            [
                "train",
                "--task",
                "segment",
                "--data",
                str(folder),
                *TINY,
                "--epochs",
                "3",
                "--lr",
                "3e-3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return folder, out


def test_train_writes_the_run_files(run, capsys) -> None:
    _folder, out = run
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["model"] == "van_lska_tiny_upernet" and summary["train_images"] == 24 and summary["val_images"] == 6
    assert summary["iterations"] == 3 * 3  # 24 images, batch 8, three epochs
    assert summary["mIoU"] == pytest.approx(metrics["mIoU"]) and 0 <= metrics["mIoU"] <= 100
    assert set(metrics["per_class_iou"]) == {"background", *map(str, range(10))}
    assert metrics["per_class_iou"]["background"] > 50  # most pixels are background; even 9 steps learn that
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    description = json.loads((out / "model.json").read_text())
    assert description["num_classes"] == 11 and description["img_size"] == 48
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_eval_reproduces_the_training_score_whole_and_slide(run, capsys, tmp_path) -> None:
    _folder, out = run
    trained = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert (
        main(["eval", "--task", "segment", "--checkpoint", str(out / "model.safetensors"), "--json", "--threads", "1"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6) and result["images"] == 6
    assert (
        main(
            [
                "eval",
                "--task",
                "segment",
                "--checkpoint",
                str(out / "model.safetensors"),
                "--inference",
                "slide",
                "--crop-size",
                "32",
                "--stride",
                "16",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "slide" in printed and "mIoU" in printed and (tmp_path / "eval" / "overlay.png").is_file()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["inference"] == "slide"


def test_eval_of_a_named_model_with_a_checkpoint(run, capsys) -> None:
    folder, out = run
    args = json.loads(TINY[3])
    assert (
        main(
            [
                "eval",
                "--task",
                "segment",
                "--model",
                "van_lska_tiny_upernet",
                "--model-args",
                json.dumps(args),
                "--checkpoint-path",
                str(out / "model.safetensors"),
                "--data",
                str(folder),
                "--img-size",
                "48",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["mIoU"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["mIoU"], abs=1e-6
    )


def test_user_errors_are_one_line(run, capsys, tmp_path) -> None:
    folder, out = run
    assert main(["train", "--task", "segment", "--model", "van_b0", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "is not a segmenter" in capsys.readouterr().err
    assert main(["train", "--task", "segment", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "neither the embedded 'scenes' nor a folder" in capsys.readouterr().err
    (folder / "images" / "validation" / "scene_00000.png").unlink()
    assert (
        main(["eval", "--task", "segment", "--checkpoint", str(out / "model.safetensors"), "--data", str(folder)]) == 2
    )
    assert "mismatched image/mask pairs" in capsys.readouterr().err


def test_every_segment_option_reaches_the_config() -> None:
    from dataclasses import fields

    from largekernel.cli import build_parser
    from largekernel.cli._segment import _config
    from largekernel.train.segmentation_config import SegmentConfig

    args = build_parser().parse_args(
        [
            "train",
            "--task",
            "segment",
            "--ohem-thresh",
            "0.7",
            "--ohem-min-kept",
            "640",
            "--aux-weight",
            "0.2",
            "--poly-power",
            "0.9",
            "--warmup-iters",
            "7",
            "--train-scenes",
            "9",
            "--val-scenes",
            "3",
            "--inference",
            "slide",
            "--crop-size",
            "40",
            "--stride",
            "20",
            "--num-classes",
            "11",
            "--reduce-zero-label",
        ]
    )
    config = _config(args)
    assert (config.ohem_thresh, config.ohem_min_kept, config.aux_weight, config.poly_power, config.warmup_iters) == (
        0.7,
        640,
        0.2,
        0.9,
        7,
    )
    assert (config.train_scenes, config.val_scenes, config.inference, config.crop_size, config.stride) == (
        9,
        3,
        "slide",
        40,
        20,
    )
    assert config.num_classes == 11 and config.reduce_zero_label is True
    # every field has an option of the same name (shared with classification or segment-only)
    missing = [f.name for f in fields(SegmentConfig) if not hasattr(args, f.name)]
    assert not missing, missing
