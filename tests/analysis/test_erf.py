"""Effective receptive fields: exact supports of known layers, area ratios of known maps, the CLI."""

import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from largekernel.analysis.erf import (
    area_ratios,
    effective_receptive_field,
    embedded_images,
    folder_images,
    log_scaled,
)
from largekernel.cli import main
from largekernel.layers import create_attention


def centred_square(size: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    start = size // 2 - side // 2
    mask[start : start + side, start : start + side] = True
    return mask


def positive_images(count: int, channels: int, size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(channels, size, size, generator=generator) + 0.1 for _ in range(count)]


@pytest.mark.parametrize("kernel_size", [3, 7, 13])
@pytest.mark.parametrize("gradient", ["abs", "relu"])
def test_all_ones_depthwise_conv_has_exactly_the_kernel_as_erf(kernel_size, gradient):
    channels, size = 3, 32
    conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
    nn.init.ones_(conv.weight)
    result = effective_receptive_field(conv, positive_images(2, channels, size), gradient=gradient)
    # d(sum_c out_c[centre])/dx = 1 on every channel's k x k window around the centre, 0 elsewhere
    expected = channels * centred_square(size, kernel_size).astype(np.float64)
    np.testing.assert_array_equal(result.contribution, expected)
    assert result.num_images == 2 and result.support_side() == kernel_size


@pytest.mark.parametrize("design", ["lska", "lka", "lska_trivial", "lka_trivial"])
@pytest.mark.parametrize("kernel_size", [7, 23, 53])
def test_attention_erf_support_is_exactly_its_receptive_field(design, kernel_size):
    dim, size = 2, 64
    layer = create_attention(design, dim, kernel_size)
    with torch.no_grad():  # positive weights and inputs: no cancellation can hide a pixel
        for parameter in layer.parameters():
            parameter.uniform_(0.5, 1.0)
    result = effective_receptive_field(layer, positive_images(1, dim, size), gradient="relu")
    side = layer.receptive_field
    assert side == kernel_size
    np.testing.assert_array_equal(result.contribution > 0, centred_square(size, side))


def test_area_ratios_of_known_maps():
    size = 11
    # a single hot pixel: the 1x1 centre square already holds everything
    point = np.zeros((size, size))
    point[size // 2, size // 2] = 5.0
    assert [(r.side, r.ratio) for r in area_ratios(point, (0.5, 0.99))] == [(1, 1 / 121)] * 2
    # uniform map: smallest odd s with s^2 / 121 > t: 25/121 = .21 > .2, 49/121 = .40 > .3,
    # 81/121 = .67 > .5, only 121/121 > .99
    uniform = np.ones((size, size))
    ratios = area_ratios(uniform, (0.2, 0.3, 0.5, 0.99), log_scale=False)
    assert [r.side for r in ratios] == [5, 7, 9, 11]
    assert ratios[2].ratio == pytest.approx(81 / 121)
    # the log scaling is log10(x + 1) / max
    np.testing.assert_allclose(log_scaled(np.array([[0.0, 9.0], [99.0, 0.0]])), [[0, 0.5], [1, 0]])


def test_area_ratios_reject_bad_input():
    with pytest.raises(ValueError, match="thresholds must lie in"):
        area_ratios(np.ones((5, 5)), (1.0,))
    with pytest.raises(ValueError, match="all zero"):
        area_ratios(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="2-D"):
        area_ratios(np.ones(5))


def test_erf_is_deterministic_and_rejects_pooled_outputs():
    layer = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.GELU(), nn.Conv2d(4, 4, 3, padding=1))
    images = positive_images(3, 3, 16)
    first = effective_receptive_field(layer, images).contribution
    second = effective_receptive_field(layer, images).contribution
    np.testing.assert_array_equal(first, second)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"spatial \(B, C, h, w\) feature map"):
        effective_receptive_field(pooled, images)


def test_embedded_and_folder_images(tmp_path):
    pytest.importorskip("PIL")
    count, images = embedded_images(3, 40)
    images = list(images)
    assert count == 3 and all(img.shape == (3, 40, 40) for img in images)
    assert not torch.equal(images[0], images[2])  # different digits
    assert torch.equal(images[1], list(embedded_images(3, 40)[1])[1])  # deterministic
    from PIL import Image

    for index in range(3):
        Image.fromarray(np.full((20, 30, 3), 60 * index, dtype=np.uint8)).save(tmp_path / f"img{index}.png")
    count, images = folder_images(tmp_path, 2, 24)
    images = list(images)
    assert count == 2 and images[0].shape == (3, 24, 24)
    # a constant black image normalises to -mean/std per channel
    assert images[0][0, 0, 0].item() == pytest.approx(-0.485 / 0.229, rel=1e-5)
    with pytest.raises(FileNotFoundError):
        folder_images(tmp_path / "missing", 1, 24)


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_erf_cli_writes_figure_and_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "erf.png"
    code = main(
        [
            "erf",
            "--attention",
            "lska",
            "lka",
            "--kernel-sizes",
            "7",
            "11",
            "--dim",
            "4",
            "--num-images",
            "2",
            "--img-size",
            "32",
            "--out",
            str(out),
            "--json",
            "--no-progress",
            "--gradient",
            "abs",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    labels = [r["label"] for r in payload["results"]]
    assert labels == ["lska k=7", "lska k=11", "lka k=7", "lka k=11"]
    for record in payload["results"]:
        # the 99% square of a single layer is its receptive field
        assert record["area_ratios"][-1]["side"] == record["kernel_size"]
        assert record["num_images"] == 2
    width, height = png_size(out)
    assert width > 4 * 150 and height > 150  # four panels side by side


def test_erf_cli_errors_are_clean(capsys):
    assert main(["erf", "--checkpoint", "x.pth"]) == 2
    assert "--checkpoint needs --model" in capsys.readouterr().err
    assert main(["erf", "--images", "/nonexistent/folder", "--num-images", "1", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
