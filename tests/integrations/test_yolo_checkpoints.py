"""YOLO checkpoints of our models in fresh processes: loading, fine-tuning and resuming a killed run,
with Ultralytics alone (the child processes never import largekernel themselves).

Fine-tuning and resuming rebuild the model from the YAML stored in the checkpoint, through
Ultralytics' parser, which needs our blocks registered: unpickling must import the integration.
Each config is checked in its own process, since one config's classes registering the blocks would
hide another's missing registration.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yolo_support

from largekernel.integrations import yolo
from largekernel.integrations.yolo.configs import RECIPES
from largekernel.train.scenes import write_yolo_dataset

PLAIN_LAYER_CONFIGS = [f"{r.base}n-{c.split('-', 1)[1]}" for c, r in RECIPES.items() if r.edit == "after"]
ALL_CONFIGS = [f"{r.base}n-{c.split('-', 1)[1]}" for c, r in RECIPES.items()]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_yolo_dataset(
        tmp_path_factory.mktemp("yolo-ckpt") / "data",
        yolo_support.TRAIN_SCENES,
        yolo_support.VAL_SCENES,
        yolo_support.IMGSZ,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An Ultralytics checkpoint (``model.save``) of every config at scale n, with a probe input and output."""
    root = tmp_path_factory.mktemp("yolo-saved")
    saved = {}
    for name in ALL_CONFIGS:
        torch.manual_seed(0)
        detector = yolo.model(name)
        path = root / f"{name}.pt"
        detector.save(path)
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            expected = detector.model.half().float().eval()(x)[0]  # the checkpoint stores fp16
        torch.save((x, expected), f"{path}.io")
        saved[name] = path
    return saved


FINE_TUNE = """
import json, sys
from ultralytics import YOLO  # Ultralytics alone
YOLO(sys.argv[1]).train(**json.loads(sys.argv[2]))
"""


@pytest.mark.parametrize("name", PLAIN_LAYER_CONFIGS)
def test_fine_tuning_a_checkpoint_in_a_fresh_process(name: str, checkpoints: dict, data: Path, tmp_path: Path) -> None:
    """``YOLO("x.pt").train(...)`` re-parses the stored YAML: it raised KeyError 'LSKA' / 'SAM' before."""
    kwargs = yolo_support.train_kwargs(data, tmp_path, "fine-tune")
    result = yolo_support.run_child(["-c", FINE_TUNE, str(checkpoints[name]), json.dumps(kwargs)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "fine-tune" / "weights" / "best.pt").is_file()


LOAD = """
import sys, torch
if sys.argv[1] == "safe":
    import largekernel.integrations.yolo  # allow-lists our classes for torch.load(weights_only=True)
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
for path in sys.argv[2:]:
    model = YOLO(path).model.float().eval()
    x, expected = torch.load(path + ".io")
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], expected)
    rebuilt = DetectionModel(model.yaml, verbose=False)  # the stored YAML parses again (as fine-tuning does)
    assert [type(m) for m in rebuilt.modules()] == [type(m) for m in model.modules()]
    print("ok", path)
"""


@pytest.mark.parametrize("mode", ["default", "safe"])
def test_every_config_loads_in_a_fresh_process_with_the_same_outputs(mode: str, checkpoints: dict) -> None:
    paths = [str(checkpoints[name]) for name in ALL_CONFIGS]
    result = yolo_support.run_child(["-c", LOAD, mode, *paths], ULTRALYTICS_SAFE_LOAD="1" if mode == "safe" else "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok ") == len(paths)


INTERRUPTED = """
import json, sys, time
from pathlib import Path
from largekernel.integrations import yolo

def hold_after_first_save(trainer):  # a long second epoch: the parent kills the process here
    if trainer.epoch == 0:
        Path(sys.argv[1]).write_text(str(trainer.last))
        time.sleep(600)

model = yolo.model("yolov8n-lska")
model.add_callback("on_model_save", hold_after_first_save)
model.train(**json.loads(sys.argv[2]))
"""


def _yolo_cli() -> list[str]:
    script = Path(sys.executable).with_name("yolo")  # Ultralytics' console script, installed with it
    return (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "from ultralytics.cfg import entrypoint; entrypoint()"]
    )


def test_resume_after_a_killed_run_with_plain_ultralytics(data: Path, tmp_path: Path) -> None:
    """Kill training after epoch 1's ``last.pt``; ``yolo train resume model=last.pt`` (no largekernel) finishes it."""
    marker = tmp_path / "saved"
    kwargs = yolo_support.train_kwargs(data, tmp_path, "run", epochs=2)
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(marker), json.dumps(kwargs)],
        env=yolo_support.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), (
            f"training never saved epoch 1: {child.stderr.read()[-3000:] if child.poll() is not None else 'timeout'}"
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    last = Path(marker.read_text())
    assert last == tmp_path / "run" / "weights" / "last.pt"
    with open(tmp_path / "run" / "results.csv") as handle:
        assert [row["epoch"].strip() for row in csv.DictReader(handle)] == ["1"]

    cli = [*_yolo_cli(), "train", "resume", f"model={last}"]
    result = subprocess.run(
        cli, check=False, env=yolo_support.child_env(YOLO_VERBOSE="True"), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming training" in result.stdout + result.stderr
    with open(tmp_path / "run" / "results.csv") as handle:
        assert [row["epoch"].strip() for row in csv.DictReader(handle)] == ["1", "2"]
    final = torch.load(tmp_path / "run" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert final["epoch"] == -1  # Ultralytics marks a finished run (optimizer stripped)
