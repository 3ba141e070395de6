"""Fast paths: fused Triton kernels for the LSKA / LKA depthwise cascades (CUDA), and the NHWC CPU path
(:mod:`largekernel.kernels.cpu`, :mod:`largekernel.kernels.cpu_modules`).

The layers call :func:`fused_cascade`; it returns ``None`` (use the plain PyTorch convolutions)
unless the fused kernels are enabled, Triton imports, and the input is a CUDA tensor (or a CPU
tensor while ``TRITON_INTERPRET=1``, Triton's interpreter, used by the tests). Triton is imported
only when the fused path actually runs, so ``import largekernel`` never needs it.

Turn the fused path off with :func:`set_fused_kernels(False) <set_fused_kernels>`, the context
manager :func:`use_fused_kernels`, or the environment variable ``LARGEKERNEL_FUSED=0``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .cpu import fast_cpu_path, fast_cpu_path_enabled, set_fast_cpu_path, use_fast_cpu_path
from .cpu_modules import optimize_for_cpu_training

__all__ = [
    "fast_cpu_path",
    "fast_cpu_path_enabled",
    "fused_available",
    "fused_cascade",
    "fused_kernels_enabled",
    "optimize_for_cpu_training",
    "set_fast_cpu_path",
    "set_fused_kernels",
    "use_fast_cpu_path",
    "use_fused_kernels",
]

_enabled: bool = os.environ.get("LARGEKERNEL_FUSED", "1") != "0"


def set_fused_kernels(enabled: bool) -> None:
    """Turn the fused Triton path of LKA / LSKA on or off for this process."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_fused_kernels: enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    _enabled = enabled


def fused_kernels_enabled() -> bool:
    """Whether LKA / LSKA may use the fused Triton path (they still need :func:`fused_available`)."""
    return _enabled


@contextmanager
def use_fused_kernels(enabled: bool) -> Iterator[None]:
    """Context manager that sets :func:`set_fused_kernels` inside the block and restores it after."""
    previous = _enabled
    set_fused_kernels(enabled)
    try:
        yield
    finally:
        set_fused_kernels(previous)


@functools.cache
def _triton_importable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: a stubbed-out sys.modules["triton"] = None
        return False


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fused_available(tensor: torch.Tensor) -> bool:
    """True if the fused kernels can run on ``tensor``'s device: CUDA with Triton, or CPU under the interpreter."""
    if not _triton_importable():
        return False
    if tensor.is_cuda:
        return not _interpreter_on()
    return tensor.device.type == "cpu" and _interpreter_on()


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _cuda_autocast_dtype() -> torch.dtype | None:
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def _module_stages(module: nn.Module) -> tuple[list[nn.Conv2d], list[int]] | None:
    # Imported here: layers import this package, not the other way round at module load.
    from ..layers.lka import LKA
    from ..layers.lska import LSKA

    if isinstance(module, LSKA):
        d = module.decomposition.dilation
        return [module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v], [1, 1, d, d]
    if isinstance(module, LKA):
        return [module.conv0, module.conv_spatial], [1, module.decomposition.dilation]
    return None


def fused_cascade(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The module's depthwise cascade through the fused kernels, or ``None`` to take the plain path.

    ``None`` when disabled, unavailable (no Triton, not CUDA), while scripting / tracing /
    ``torch.compile`` (those see the plain convolutions), or for inputs the kernels do not take.
    """
    if not _enabled or not fused_available(x):
        return None
    if torch.jit.is_scripting() or torch.jit.is_tracing() or _compiling():
        return None
    found = _module_stages(module)
    if found is None:
        return None
    convs, dilations = found
    if any(conv.bias is None for conv in convs):
        return None
    if x.is_cuda and _cuda_autocast_dtype() is not None:
        # what autocast would feed the convolutions; weights stay fp32 (accumulation is fp32 anyway)
        x = x.to(_cuda_autocast_dtype())
    from . import triton_cascade

    stages = [(conv.weight.shape[2], conv.weight.shape[3], d) for conv, d in zip(convs, dilations)]
    if not triton_cascade.supports(x, stages):
        return None
    return triton_cascade.depthwise_cascade(
        x, [conv.weight for conv in convs], [conv.bias for conv in convs], dilations
    )
