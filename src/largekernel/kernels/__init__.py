"""Fast paths beside the plain PyTorch layers (CPU: :mod:`largekernel.kernels.cpu`)."""

from .cpu import fast_cpu_path, fast_cpu_path_enabled, set_fast_cpu_path, use_fast_cpu_path
from .cpu_modules import optimize_for_cpu_training

__all__ = ["optimize_for_cpu_training", "fast_cpu_path", "fast_cpu_path_enabled", "set_fast_cpu_path", "use_fast_cpu_path"]
