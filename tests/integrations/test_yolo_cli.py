"""``largekernel yolo ...``: Ultralytics' own CLI with our configs and blocks, run as a user runs it."""

from __future__ import annotations

import pytest
import yolo_support
from ultralytics import YOLO

from largekernel import cli
from largekernel.integrations import yolo
from largekernel.integrations.yolo import LSKA
from largekernel.train.scenes import write_yolo_dataset


def test_configs_lists_every_config_without_noise() -> None:
    result = yolo_support.run_child(["-m", "largekernel", "yolo", "configs"], timeout=120)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert listed == {name.replace("-", "{n,s,m,l,x}-", 1) + ".yaml" for name in yolo.available_configs()}
    assert "CUDA" not in result.stdout + result.stderr  # no "No CUDA runtime is found" from a CUDA torch build


def test_train_then_val_from_the_command_line(tmp_path) -> None:
    """``largekernel yolo train model=yolov8-lska.yaml``: no scale letter, Ultralytics takes n, as for yolov8.yaml."""
    data = write_yolo_dataset(tmp_path / "data", yolo_support.TRAIN_SCENES, yolo_support.VAL_SCENES, yolo_support.IMGSZ)
    train = [
        "-m",
        "largekernel",
        "yolo",
        "train",
        "model=yolov8-lska.yaml",
        *yolo_support.cli_train_args(data, tmp_path, "cli"),
    ]
    work = tmp_path / "cwd"
    work.mkdir()
    result = yolo_support.run_child(train, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(work.iterdir())  # runs go to project=..., settings to YOLO_CONFIG_DIR: nothing in the working folder
    best = tmp_path / "cli" / "weights" / "best.pt"
    layer = YOLO(str(best)).model.model[10]
    assert type(layer) is LSKA and layer.dim == 256  # n: 1024 x 0.25

    val = ["-m", "largekernel", "yolo", "val", f"model={best}", f"data={data}", f"imgsz={yolo_support.IMGSZ}",
           "batch=8", "workers=0", "device=cpu", "plots=False", f"project={tmp_path}", "name=val"]  # fmt: skip
    result = yolo_support.run_child(val, YOLO_VERBOSE="True")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line.split() for line in (result.stdout + result.stderr).splitlines() if line.split()[:1] == ["all"]]
    # Ultralytics' summary row: all, images, boxes, P, R, mAP50, mAP50-95
    assert summary and len(summary[-1]) == 7 and summary[-1][1] == str(yolo_support.VAL_SCENES)


def test_a_mistyped_config_gives_one_line_listing_ours(capsys: pytest.CaptureFixture, tmp_path) -> None:
    code = cli.main(["yolo", "train", "model=yolov8n-lksa.yaml", f"data={tmp_path / 'none.yaml'}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Did you mean" in err and "yolov8n-lska.yaml" in err and "yolo11{n,s,m,l,x}-c3k2-lska.yaml" in err


def test_plain_ultralytics_cli_reports_our_name_as_missing_not_a_key_error(tmp_path) -> None:
    """Without largekernel, Ultralytics cannot know our names: its own clear "does not exist", no bare KeyError."""
    code = "from ultralytics.cfg import entrypoint; entrypoint()"
    result = yolo_support.run_child(
        ["-c", code, "train", "model=yolov8n-lska.yaml", f"data={tmp_path / 'none.yaml'}"], timeout=120
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "KeyError" not in result.stderr


def test_a_missing_dataset_is_one_line(capsys: pytest.CaptureFixture, tmp_path) -> None:
    code = cli.main(
        ["yolo", "train", "model=yolov8n-lska.yaml", f"data={tmp_path / 'none.yaml'}", f"project={tmp_path}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "none.yaml' does not exist" in err
