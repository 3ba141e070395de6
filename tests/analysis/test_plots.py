"""The PNG helpers: files are real PNGs of the expected size; bad input is a clear error."""

import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from largekernel.analysis.plots import save_erf_grid, save_metric_lines


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_metric_lines_and_erf_grid_write_pngs(tmp_path):
    rows = [{"k": k, "design": d, "cost": k * (2 if d == "a" else 1), "time": None} for k in (3, 5) for d in "ab"]
    path = save_metric_lines(
        rows, tmp_path / "lines.png", x="k", metrics={"cost": "cost", "time": "time"}, group="design"
    )
    # "time" has no values: one subplot only (4.2 in wide at 100 dpi)
    assert png_size(path) == (420, 330)
    grid = save_erf_grid(
        {"a": np.eye(8), "b": np.ones((8, 8)), "c": np.zeros((8, 8))}, tmp_path / "grid.png", columns=3
    )
    width, height = png_size(grid)
    assert width > height > 100


def test_plot_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"ending in \.png"):
        save_erf_grid({"a": np.eye(4)}, tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="rows lack"):
        save_metric_lines([{"k": 1}], tmp_path / "x.png", x="k", metrics={"cost": "c"}, group="design")
    with pytest.raises(ValueError, match="no maps"):
        save_erf_grid({}, tmp_path / "grid.png")
