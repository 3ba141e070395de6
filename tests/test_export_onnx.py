"""ONNX export round trips (onnxruntime against PyTorch) for the modules and each model family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import largekernel as lk
from largekernel.cli import main
from largekernel.export import check_onnx, export_onnx

TINY = {
    "van_b0": {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "num_classes": 10},
    "van_lska_tiny": {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "num_classes": 10},
    "smt_t": {"embed_dims": (16, 32, 32, 64), "depths": (1, 1, 2, 1), "num_classes": 10},
}


class _Wrap(nn.Module):
    """A stem conv so a bare attention layer sees its channel count from a 3-channel image."""

    def __init__(self, layer: nn.Module, dim: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.stem(x))


def _round_trip(model: nn.Module, tmp_path, traced: int, checked: tuple[int, int, int, int]) -> None:
    path = export_onnx(model, tmp_path / "model.onnx", img_size=traced)
    result = check_onnx(path, model, input_shape=checked, repeats=1)
    assert result.input_shape == checked
    assert result.max_abs_diff <= 1e-4 * max(result.max_abs_output, 1.0), result


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_family_round_trip_with_other_batch_and_size(name, tmp_path):
    torch.manual_seed(0)
    model = lk.optimize_for_inference(lk.create_model(name, **TINY[name]), channels_last=False)
    _round_trip(model, tmp_path, traced=64, checked=(3, 3, 96, 64))


@pytest.mark.parametrize(
    "layer",
    [lambda: lk.LKA(8, 21), lambda: lk.LSKA(8, 23), lambda: lk.SAM(8, num_heads=2)],
    ids=["LKA", "LSKA", "SAM"],
)
def test_module_round_trip(layer, tmp_path):
    torch.manual_seed(1)
    _round_trip(_Wrap(layer(), 8), tmp_path, traced=24, checked=(2, 3, 31, 20))


def test_unsupported_operator_is_a_clear_error(tmp_path):
    class Spectral(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft2(x).abs()

    with pytest.raises(ValueError, match=r"fft_fft2.*no ONNX form"):
        export_onnx(Spectral(), tmp_path / "bad.onnx", img_size=16)


def test_cli_export_prints_difference_and_latencies(tmp_path, capsys, monkeypatch):
    # the CLI builds the registered model; shrink it so the test stays fast
    real_create = lk.create_model
    monkeypatch.setattr(lk, "create_model", lambda name, **kw: real_create(name, **{**TINY["van_lska_tiny"], **kw}))
    output = tmp_path / "out.onnx"
    code = main(["export", "--model", "van_lska_tiny", "--format", "onnx", "--img-size", "32", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert output.is_file()
    assert "max abs diff" in printed and "onnxruntime (CPU)" in printed and "PyTorch" in printed


def test_cli_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = main(["export", "--model", "van_b0", "--checkpoint", str(tmp_path / "nope.pth")])
    assert code == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_dynamo_exporter_round_trip(tmp_path):
    pytest.importorskip("onnxscript")
    torch.manual_seed(2)
    model = _Wrap(lk.LSKA(8, 23), 8)
    path = export_onnx(model, tmp_path / "dynamo.onnx", img_size=24, exporter="dynamo")
    result = check_onnx(path, model, input_shape=(2, 3, 31, 20), repeats=1)
    assert result.max_abs_diff <= 1e-4 * max(result.max_abs_output, 1.0), result
