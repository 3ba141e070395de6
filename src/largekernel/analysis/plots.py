"""PNG pictures for the analysis commands.

matplotlib is imported inside the functions and drawn through its Agg canvas directly (no pyplot,
no global backend switch), so these work headless and never disturb a user's interactive session.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import ConfigurationError

__all__ = ["save_erf_grid", "save_metric_lines"]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigurationError(f"pictures are written as PNG; give a path ending in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def save_erf_grid(
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    columns: int | None = None,
    title: str | None = None,
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Side-by-side ERF heatmaps, one panel per entry of ``maps`` (label -> (H, W) map in [0, 1]).

    The maps should already be log-scaled (:func:`largekernel.analysis.erf.log_scaled`); they share
    one colour scale, RepLKNet's ``RdYlGn``.
    """
    if not maps:
        raise ConfigurationError("save_erf_grid: no maps to draw")
    count = len(maps)
    columns = columns or min(count, 4)
    rows = math.ceil(count / columns)
    figure = _new_figure(3.2 * columns + 0.8, 3.3 * rows + (0.4 if title else 0))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    image = None
    for axis, (label, data) in zip(axes, maps.items()):
        image = axis.imshow(np.asarray(data), cmap="RdYlGn", vmin=0.0, vmax=1.0, interpolation="nearest")
        caption = (captions or {}).get(label)
        axis.set_title(label if caption is None else f"{label}\n{caption}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes[count:]:
        axis.axis("off")
    figure.colorbar(image, ax=list(axes[:count]), shrink=0.8, label="log10(grad + 1), rescaled")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def save_metric_lines(
    rows: Sequence[Mapping[str, object]],
    path: str | Path,
    *,
    x: str,
    metrics: Mapping[str, str],
    group: str,
    title: str | None = None,
    log_x: bool = False,
    log_y: bool | Collection[str] = False,
    x_label: str | None = None,
) -> Path:
    """One subplot per metric (key -> axis label) against ``x``, one line per value of ``group``.

    ``log_y`` is ``True`` for every subplot or the metric keys whose axis is logarithmic.

    Rows missing a metric (``None``) are left out of that subplot, so partial measurements plot.
    """
    if not rows:
        raise ConfigurationError("save_metric_lines: no rows to plot")
    missing = [key for key in (x, group) if key not in rows[0]]
    if missing:
        raise ConfigurationError(f"save_metric_lines: rows lack {missing}; they have {sorted(rows[0])}")
    metrics = {key: label for key, label in metrics.items() if any(row.get(key) is not None for row in rows)}
    if not metrics:
        raise ConfigurationError("save_metric_lines: none of the requested metrics has a value")
    count = len(metrics)
    columns = min(count, 3)
    row_count = math.ceil(count / columns)
    figure = _new_figure(4.2 * columns, 3.3 * row_count + (0.4 if title else 0))
    axes = np.atleast_1d(figure.subplots(row_count, columns, squeeze=False)).ravel()
    groups = list(dict.fromkeys(row[group] for row in rows))
    for axis, (key, label) in zip(axes, metrics.items()):
        for name in groups:
            points = sorted((row[x], row[key]) for row in rows if row[group] == name and row.get(key) is not None)
            if points:
                xs, ys = zip(*points)
                axis.plot(xs, ys, marker="o", markersize=4, label=str(name))
        axis.set_xlabel(x_label or x)
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3, which="both")
        if log_x:
            axis.set_xscale("log", base=2)
            ticks = sorted(cast("set[float]", {row[x] for row in rows}))  # a log axis: x values are numbers
            axis.set_xticks(ticks, [str(tick) for tick in ticks])
            axis.xaxis.set_minor_locator(_null_locator())  # only the measured resolutions
        if log_y is True or (not isinstance(log_y, bool) and key in log_y):
            axis.set_yscale("log")
    for axis in axes[count:]:
        axis.axis("off")
    axes[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)
