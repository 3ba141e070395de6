"""Fast paths beside the plain PyTorch layers (CPU: :mod:`largekernel.kernels.cpu`)."""

from .cpu import (
    fast_cpu_path,
    fast_cpu_path_enabled,
    set_fast_cpu_path,
    use_fast_cpu_path,
)
from .cpu_modules import optimize_for_cpu_training

__all__ = ["fast_cpu_path", "fast_cpu_path_enabled", "optimize_for_cpu_training", "set_fast_cpu_path", "use_fast_cpu_path"]
