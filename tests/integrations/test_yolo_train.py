"""YOLO trained for real: Ultralytics' own trainer, validator, predictor and ONNX exporter on our
configs, one of each family (v5, v8, 11), on generated digit scenes.

One module fixture trains the three models (2 epochs at 64 px on 16 scenes, seconds each); the tests
share it. Predictions are checked against onnxruntime and against a fresh process that never imports
largekernel (it loads ``best.pt`` with Ultralytics alone).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yolo_support
from ultralytics import YOLO

from largekernel.integrations import yolo
from largekernel.integrations.yolo import C3_LSKA, LSKA, C3k2_LSKA
from largekernel.train.scenes import write_yolo_dataset

# one config of each family, each with a different kind of block
TRAINED = {"yolov5n-c3-lska": C3_LSKA, "yolov8n-lska": LSKA, "yolo11n-c3k2-lska": C3k2_LSKA}
EPOCHS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train each model in :data:`TRAINED`; name -> (run folder, initial state_dict, network look-ups)."""
    root = tmp_path_factory.mktemp("yolo-train")
    data = write_yolo_dataset(
        root / "data", train=yolo_support.TRAIN_SCENES, val=yolo_support.VAL_SCENES, size=yolo_support.IMGSZ
    )
    results = {"data": data, "root": root}
    for name in TRAINED:
        torch.manual_seed(0)
        model = yolo.model(name)
        initial = {k: v.clone() for k, v in model.model.state_dict().items()}
        before = len(yolo_support.network_lookups())
        model.train(**yolo_support.train_kwargs(data, root / "runs", name, epochs=EPOCHS))
        results[name] = (root / "runs" / name, initial, yolo_support.network_lookups()[before:])
    return results


def _epochs(run: Path) -> list[dict[str, float]]:
    with open(run / "results.csv") as handle:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.mark.parametrize("name", TRAINED)
def test_ultralytics_trains_our_model(runs: dict, name: str) -> None:
    run, initial, lookups = runs[name]
    assert lookups == []  # offline: no font, version or settings look-ups
    epochs = _epochs(run)
    assert [int(e["epoch"]) for e in epochs] == list(range(1, EPOCHS + 1))
    assert all(np.isfinite(list(e.values())).all() for e in epochs)
    # gradient steps that help: the validation classification loss falls from the initial one
    assert epochs[-1]["val/cls_loss"] < epochs[0]["val/cls_loss"]

    best = YOLO(str(run / "weights" / "best.pt")).model
    ours = [m for m in best.modules() if type(m) is TRAINED[name]]
    assert ours, f"best.pt holds no {TRAINED[name].__name__}"
    trained = best.float().state_dict()
    block_keys = [
        k for k in trained if any(k.startswith(f"model.{m.i}.") for m in best.model if type(m) is TRAINED[name])
    ]
    assert block_keys and all(k in initial for k in block_keys)
    assert any(
        not torch.allclose(trained[k].float(), initial[k].float()) for k in block_keys if trained[k].is_floating_point()
    )


@pytest.mark.parametrize("name", TRAINED)
def test_val_of_best_pt_reproduces_the_trainers_final_validation(runs: dict, name: str) -> None:
    run, _, _ = runs[name]
    metrics = YOLO(str(run / "weights" / "best.pt")).val(
        data=str(runs["data"]), imgsz=yolo_support.IMGSZ, batch=8, workers=0, device="cpu", plots=False,
        verbose=False, project=str(runs["root"] / "val"), name=name, exist_ok=True,
    )  # fmt: skip
    assert metrics.box.nc == 10 and len(metrics.box.ap_class_index) > 0
    logged = _epochs(run)[-1]
    for key in ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert 0.0 <= metrics.results_dict[key] <= 1.0
        assert metrics.results_dict[key] == pytest.approx(logged[key], abs=1e-5)


def _val_images(runs: dict) -> list[str]:
    return sorted(str(p) for p in (runs["data"].parent / "images" / "val").glob("*.png"))


def _predict(model: YOLO, images: list[str]) -> list[np.ndarray]:
    # conf near zero: a briefly trained model is unsure, but its boxes are still its boxes
    results = model.predict(images, imgsz=yolo_support.IMGSZ, conf=0.001, device="cpu", verbose=False)
    return [
        np.concatenate([r.boxes.xyxy.numpy(), r.boxes.conf.numpy()[:, None], r.boxes.cls.numpy()[:, None]], 1)
        for r in results
    ]


def test_predict_gives_boxes_on_the_images(runs: dict) -> None:
    run, _, _ = runs["yolov8n-lska"]
    images = _val_images(runs)
    predictions = _predict(YOLO(str(run / "weights" / "best.pt")), images)
    assert len(predictions) == len(images) == yolo_support.VAL_SCENES
    assert any(len(p) for p in predictions)
    for p in predictions:
        assert (p[:, :4] >= -1e-3).all() and (p[:, :4] <= yolo_support.IMGSZ + 1e-3).all()
        assert ((p[:, 5] >= 0) & (p[:, 5] <= 9)).all() and (p[:, 4] >= 0.001).all()


FRESH = """
import json, sys
from ultralytics import YOLO  # Ultralytics alone: largekernel comes in only through unpickling
out = {}
for path in sys.argv[2:]:
    results = YOLO(path).predict(json.loads(sys.argv[1]), imgsz=64, conf=0.001, device="cpu", verbose=False)
    out[path] = [r.boxes.data.tolist() for r in results]
print(json.dumps({"predictions": out, "registered_by_unpickling": "largekernel.integrations.yolo" in sys.modules}))
"""


def test_best_pt_predicts_the_same_in_a_process_that_never_imports_largekernel(runs: dict) -> None:
    images = _val_images(runs)[:3]
    paths = [str(runs[name][0] / "weights" / "best.pt") for name in TRAINED]
    result = yolo_support.run_child(["-c", FRESH, json.dumps(images), *paths])
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["registered_by_unpickling"]
    for path in paths:
        here = _predict(YOLO(path), images)
        there = [np.asarray(boxes, dtype=np.float32).reshape(-1, 6) for boxes in child["predictions"][path]]
        for ours, theirs in zip(here, there, strict=True):
            np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", TRAINED)
def test_onnx_export_runs_in_onnxruntime_like_pytorch(runs: dict, name: str) -> None:
    import onnxruntime

    run, _, _ = runs[name]
    best = str(run / "weights" / "best.pt")
    exported = YOLO(best).export(format="onnx", imgsz=yolo_support.IMGSZ, simplify=False, device="cpu", verbose=False)
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, yolo_support.IMGSZ, yolo_support.IMGSZ, generator=torch.Generator().manual_seed(0))
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    net = YOLO(best).model.float().eval()  # unfused: the exporter fuses Conv+BN, so agreement is to float error
    with torch.no_grad():
        expected = net(x)[0]
    anchors = 8**2 + 4**2 + 2**2  # strides 8, 16, 32 at 64 px
    assert onnx_out.shape == tuple(expected.shape) == (1, 4 + 10, anchors)  # boxes + 10 classes
    np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-3, atol=1e-3)
