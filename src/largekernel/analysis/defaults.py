"""What the analysis tools compare by default; importable without torch (the CLI's help uses it)."""

from __future__ import annotations

__all__ = ["DESIGNS", "PAPER_KERNEL_SIZES", "SCALING_RESOLUTIONS"]

# the LSKA paper's four designs, undecomposed baselines first
DESIGNS: tuple[str, ...] = ("lka_trivial", "lka", "lska_trivial", "lska")
# the kernel sizes of the LSKA paper's tables
PAPER_KERNEL_SIZES: tuple[int, ...] = (7, 11, 23, 35, 41, 53)
SCALING_RESOLUTIONS: tuple[int, ...] = (224, 512, 1024)
