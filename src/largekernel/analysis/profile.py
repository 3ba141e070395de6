"""Side-by-side cost of the attention designs: parameters, MACs and measured latency.

This is the LSKA paper's central comparison (LKA-trivial, LKA, LSKA-trivial, LSKA as the kernel
grows), measured on the machine at hand rather than read off a figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils import benchmark

from ..layers import create_attention
from .complexity import count_macs, count_parameters

__all__ = ["DESIGNS", "PAPER_KERNEL_SIZES", "ModuleProfile", "profile_module", "profile_modules", "measure_latency"]

DESIGNS: tuple[str, ...] = ("lka_trivial", "lka", "lska_trivial", "lska")
PAPER_KERNEL_SIZES: tuple[int, ...] = (7, 11, 23, 35, 41, 53)


@dataclass(frozen=True)
class ModuleProfile:
    """Cost of one attention module at one setting."""

    design: str
    kernel_size: int
    dilation: int | None  # None for the undilated trivial designs
    dim: int
    resolution: int
    batch: int
    params: int
    macs: int  # one forward pass of the whole batch
    latency_ms: float  # median forward time of the whole batch

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(fn, min_run_time: float = 0.2) -> float:
    """Median seconds of ``fn()`` with PyTorch's benchmark timer (warm-up and blocking handled)."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def profile_module(
    design: str,
    kernel_size: int,
    dim: int = 64,
    resolution: int = 56,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.2,
) -> ModuleProfile:
    """Parameters, MACs and forward latency of one attention module (dense NCHW input)."""
    module: nn.Module = create_attention(design, dim, kernel_size).to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, dim, resolution, resolution, device=device, dtype=dtype)
    macs = count_macs(module, inputs=x)

    def forward() -> None:
        with torch.inference_mode():
            module(x)
        if x.is_cuda:
            torch.cuda.synchronize()

    decomposition = getattr(module, "decomposition", None)
    return ModuleProfile(
        design=design,
        kernel_size=kernel_size,
        dilation=decomposition.dilation if decomposition is not None else None,
        dim=dim,
        resolution=resolution,
        batch=batch,
        params=count_parameters(module),
        macs=macs,
        latency_ms=measure_latency(forward, min_run_time) * 1e3,
    )


def profile_modules(
    designs: Iterable[str] = DESIGNS,
    kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES,
    progress: bool = True,
    **settings,
) -> list[ModuleProfile]:
    """:func:`profile_module` for every (kernel size, design) pair, with a progress bar."""
    from tqdm.auto import tqdm

    pairs = [(k, d) for k in kernel_sizes for d in designs]
    results = []
    for kernel_size, design in tqdm(pairs, desc="profiling", disable=not progress, leave=False):
        results.append(profile_module(design, kernel_size, **settings))
    return results
