"""Fast paths for the depthwise cascades of LKA / LSKA behind one switch.

The layers call :func:`large_kernel_attention` (``x * conv1(cascade(x))``) with their tensors;
the kernels know nothing of the layers. Backends: ``"torch"`` (plain PyTorch, what a chain of
``nn.Conv2d`` computes), ``"cpu_nhwc"`` (:mod:`largekernel.kernels.cpu`), ``"triton"`` (fused
kernels, :mod:`largekernel.kernels.triton_cascade`), and ``"auto"`` (the default), which times the
eligible ones the first time it sees a shape and keeps the fastest; see
:mod:`largekernel.kernels.dispatch` for the rules.

    from largekernel import kernels
    kernels.set_backend("torch")          # for the process; or LARGEKERNEL_BACKEND=torch
    with kernels.backend("cpu_nhwc"):     # for a block
        ...

The fast backends run as the operator ``largekernel::depthwise_cascade``
(:mod:`largekernel.kernels.ops`: fake implementation and autograd registered). Triton is imported
only when the Triton backend is considered for a tensor it can run on, so ``import largekernel``
never needs it.
"""

from __future__ import annotations

from .cpu_modules import optimize_for_cpu_training, swap_in_nhwc_modules
from .dispatch import (
    BACKENDS,
    autotune_choices,
    backend,
    clear_autotune_cache,
    depthwise_cascade,
    get_backend,
    large_kernel_attention,
    set_backend,
    triton_available,
)

__all__ = [
    "BACKENDS",
    "autotune_choices",
    "backend",
    "clear_autotune_cache",
    "depthwise_cascade",
    "get_backend",
    "large_kernel_attention",
    "optimize_for_cpu_training",
    "set_backend",
    "swap_in_nhwc_modules",
    "triton_available",
]
