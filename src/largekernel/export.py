"""ONNX export with dynamic batch and image size, checked in onnxruntime against PyTorch.

``onnx``, ``onnxruntime`` (and ``onnxscript`` for the dynamo exporter) are the ``export`` extra;
they are imported only inside the functions.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .errors import ConfigurationError

__all__ = ["OnnxCheck", "check_onnx", "export_onnx"]

Exporter = Literal["torchscript", "dynamo"]
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "output"


def export_onnx(
    model: nn.Module,
    output: str | Path,
    img_size: int = 224,
    in_chans: int = 3,
    opset: int = DEFAULT_OPSET,
    exporter: Exporter = "torchscript",
) -> Path:
    """Write ``model`` (eval mode) as ONNX with dynamic batch, height and width.

    Args:
        model: the module; exported in eval mode (a copy is not made: ``model.eval()`` is called).
        output: the ``.onnx`` path to write.
        img_size: side of the square example input used for tracing (any size works afterwards).
        in_chans: channels of the example input.
        opset: ONNX opset version.
        exporter: ``'torchscript'`` (``torch.onnx.export(dynamo=False)``, fast) or ``'dynamo'``
            (``torch.export`` based; needs onnxscript; slower to export).

    Raises:
        ValueError: the model uses an operator the chosen exporter/opset cannot express (the
            message names it), or bad arguments.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx expects an nn.Module, got {type(model).__name__}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
        raise ConfigurationError(f"img_size must be an int >= 8, got {img_size!r}")
    if exporter not in ("torchscript", "dynamo"):
        raise ConfigurationError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.randn(1, in_chans, img_size, img_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints: the shapes are checked below
            if exporter == "torchscript":
                torch.onnx.export(
                    model,
                    (example,),
                    str(output),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
                )
            else:
                dim = torch.export.Dim.AUTO
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}},
                )
                if program is None:  # dynamo=True always returns one; None would be a torch bug
                    raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
                program.save(str(output))
    except Exception as error:  # the exporters raise many types; all mean "cannot express this model"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigurationError(
            f"ONNX export of {type(model).__name__} failed ({type(error).__name__}): {message}. "
            f"An operator in the model has no ONNX form in opset {opset} with the {exporter} exporter; "
            "try another --opset or --exporter, or replace that operator"
        ) from error
    return output


@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime against PyTorch on one random input."""

    input_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_output: float
    onnxruntime_ms: float
    pytorch_ms: float


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def check_onnx(
    path: str | Path,
    model: nn.Module,
    input_shape: tuple[int, int, int, int] = (2, 3, 256, 256),
    repeats: int = 5,
    seed: int = 0,
) -> OnnxCheck:
    """Run the ONNX file in onnxruntime and ``model`` in PyTorch on the same random input.

    Use an input shape different from the exported example to show the dynamic axes work.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    feed = {session.get_inputs()[0].name: x.numpy()}
    model.eval()
    with torch.no_grad():
        expected = model(x)
    if isinstance(expected, (list, tuple)):
        expected = expected[-1]
    got = torch.from_numpy(session.run(None, feed)[-1])
    if got.shape != expected.shape:
        raise RuntimeError(
            f"onnxruntime output shape {tuple(got.shape)} differs from PyTorch's {tuple(expected.shape)}"
        )
    with torch.no_grad():
        pytorch_ms = _median_ms(lambda: model(x), repeats)
    onnxruntime_ms = _median_ms(lambda: session.run(None, feed), repeats)
    return OnnxCheck(
        input_shape=tuple(input_shape),
        max_abs_diff=(got - expected).abs().max().item(),
        max_abs_output=expected.abs().max().item(),
        onnxruntime_ms=onnxruntime_ms,
        pytorch_ms=pytorch_ms,
    )
