"""Side-by-side cost of the attention designs: parameters, MACs, latency, throughput and memory.

This is the LSKA paper's central comparison (LKA-trivial, LKA, LSKA-trivial, LSKA as the kernel
grows), measured on the machine at hand rather than read off a figure: for the modules alone
(:func:`profile_modules`), inside whole models (:func:`profile_models`), and against input
resolution next to SMT's self-attention (:func:`profile_scaling`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils import benchmark

from ..layers import create_attention
from .complexity import count_macs, count_parameters
from .defaults import DESIGNS, PAPER_KERNEL_SIZES, SCALING_RESOLUTIONS

__all__ = [
    "DESIGNS",
    "PAPER_KERNEL_SIZES",
    "SCALING_RESOLUTIONS",
    "ModelProfile",
    "ModuleProfile",
    "count_macs_with_attention",
    "measure_latency",
    "measure_peak_memory",
    "profile_model",
    "profile_models",
    "profile_module",
    "profile_modules",
    "profile_scaling",
    "stage3_mixers",
]


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


# -- whole models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    """Cost of one model (or token mixer) at one input resolution.

    ``macs`` counts convolutions and linear layers per image, the papers' FLOPs (SMT's published
    numbers leave the attention matmuls out); ``macs_with_attention`` adds the softmax attention's
    ``QK^T`` and ``AV`` matmuls, which grow quadratically with the number of tokens. Timings are
    medians for the whole batch; memory is the peak of live tensor bytes during one
    forward+backward step above what was live before it (``memory_method`` says how it was read).
    """

    label: str
    model: str
    attention: str | None
    kernel_size: int | None
    resolution: int
    batch: int
    device: str
    dtype: str
    params: int
    macs: int
    macs_with_attention: int
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    throughput: float | None = None  # images per second, forward
    peak_memory_mib: float | None = None
    memory_method: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def count_macs_with_attention(module: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """``(macs, macs_with_attention)`` of one forward pass.

    ``scaled_dot_product_attention`` runs on its math path while counting: PyTorch's flop counter
    has formulas for the fused CUDA attention kernels but not for the CPU flash kernel, so on CPU
    the attention matmuls would silently count as zero (and on CUDA they would count). On the math
    path ``QK^T`` and ``AV`` are batched matmuls (``aten.bmm``, ``N^2 * C`` MACs each), counted as
    such; ``macs`` leaves them out (convolutions and linear layers only, the published convention).
    The models here use batched matmuls only inside attention.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(inputs)
    finally:
        module.train(was_training)
    ops = counter.get_flop_counts().get("Global", {})
    total = sum(ops.values()) // 2
    attention = sum(count for op, count in ops.items() if str(op) == "aten.bmm") // 2
    return total - attention, total


def measure_peak_memory(step, device: torch.device) -> tuple[float | None, str]:
    """Peak MiB of live tensors during ``step()`` above what was live before it, and how it was read.

    CUDA: ``torch.cuda.max_memory_allocated`` (exact for PyTorch's allocator). CPU: PyTorch has no
    allocator statistics, so the step runs once under ``torch.profiler`` with memory profiling and
    the peak is read from its memory timeline (every allocation and free of a tensor in the step);
    allocations outside PyTorch's allocator (e.g. oneDNN scratch space) are not included.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "torch.cuda.max_memory_allocated"
    import json
    import tempfile
    import warnings
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
            # the timeline's first point comes after the first event: make that a 1-byte marker so
            # the first point is what was live before the step
            marker = torch.empty(1, dtype=torch.uint8)
            del marker
            step()
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of a CUDA-only API
            path = Path(folder) / "timeline.json"
            prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - an unavailable profiler feature must not stop a profile
        return None, "unavailable"
    if not sizes:
        return 0.0, "torch.profiler memory timeline"
    # the timeline includes what was live when the step began; report the growth above it
    totals = [sum(point) for point in sizes]
    return (max(totals) - totals[0]) / 2**20, "torch.profiler memory timeline"


def _forward_backward(model: nn.Module, x: torch.Tensor):
    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        out.float().mean().backward()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    return step


def _profile_built(
    label: str,
    model_name: str,
    model: nn.Module,
    *,
    attention: str | None,
    kernel_size: int | None,
    input_shape: tuple[int, ...],
    resolution: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    min_run_time: float,
    timing: bool,
    memory: bool,
) -> ModelProfile:
    # MACs depend only on shapes: count on the meta device (no arithmetic, instant even at 1024 px)
    macs, macs_with_attention = count_macs_with_attention(
        copy.deepcopy(model).to("meta"), torch.empty(1, *input_shape[1:], device="meta")
    )
    model = model.to(device=device, dtype=dtype)
    forward_ms = forward_backward_ms = throughput = peak = None
    method = None
    if timing or memory:
        x = torch.randn(*input_shape, device=device, dtype=dtype)
        model.train()
        step = _forward_backward(model, x)
        try:
            step()  # warm-up: lazy initialisation and allocator growth stay out of the numbers
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            raise ValueError(
                f"{label}: forward+backward runs in training mode, where BatchNorm needs more than one value "
                f"per channel; the last feature map at {resolution}px with batch {batch} is too small "
                "(use a larger resolution or batch, or --macs-only)"
            ) from error
        if memory:
            model.zero_grad(set_to_none=True)  # so the last step's gradients are not counted as live before
            peak, method = measure_peak_memory(step, device)
        if timing:
            forward_backward_ms = measure_latency(step, min_run_time) * 1e3
            model.eval()

            def forward() -> None:
                with torch.inference_mode():
                    model(x)
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)

            forward_ms = measure_latency(forward, min_run_time) * 1e3
            throughput = batch / (forward_ms / 1e3)
        model.zero_grad(set_to_none=True)
    return ModelProfile(
        label=label,
        model=model_name,
        attention=attention,
        kernel_size=kernel_size,
        resolution=resolution,
        batch=batch,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        params=count_parameters(model),
        macs=macs,
        macs_with_attention=macs_with_attention,
        forward_ms=forward_ms,
        forward_backward_ms=forward_backward_ms,
        throughput=throughput,
        peak_memory_mib=peak,
        memory_method=method,
    )


def profile_model(
    name: str,
    attention: str | None = None,
    kernel_size: int | None = None,
    resolution: int = 224,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.2,
    timing: bool = True,
    memory: bool = True,
    **overrides,
) -> ModelProfile:
    """Parameters, MACs, latency (forward; forward+backward), throughput and peak memory of a registered model.

    Args:
        name: a :func:`largekernel.create_model` name, e.g. ``'van_lska_tiny'`` or ``'smt_t'``.
        attention, kernel_size: overrides of the model's attention design and kernel size.
        resolution: square input side; MACs are per image, timings for the whole ``batch``.
        timing, memory: ``False`` skips those measurements (MACs and parameters only).
        **overrides: further constructor arguments for the model.
    """
    from ..models import create_model

    if attention is not None:
        overrides["attention"] = attention
    if kernel_size is not None:
        overrides["kernel_size"] = kernel_size
    model = create_model(name, **overrides)
    label = " ".join(str(part) for part in (name, attention, kernel_size and f"k={kernel_size}") if part)
    return _profile_built(
        label, name, model,
        attention=getattr(model, "attention", attention), kernel_size=getattr(model, "kernel_size", kernel_size),
        input_shape=(batch, 3, resolution, resolution), resolution=resolution, batch=batch,
        device=torch.device(device), dtype=dtype, min_run_time=min_run_time, timing=timing, memory=memory,
    )


def profile_models(
    name: str,
    designs: Iterable[str] = DESIGNS,
    kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES,
    progress: bool = True,
    **settings,
) -> list[ModelProfile]:
    """:func:`profile_model` for every (kernel size, design) pair of one model, with a progress bar."""
    from tqdm.auto import tqdm

    pairs = [(k, d) for k in kernel_sizes for d in designs]
    return [
        profile_model(name, attention=design, kernel_size=kernel_size, **settings)
        for kernel_size, design in tqdm(pairs, desc=f"profiling {name}", disable=not progress, leave=False)
    ]


class _TokenMixer(nn.Module):
    """Runs a token-form mixer (SMT's ``forward_tokens(x, H, W)``) on an NCHW map."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.mixer.forward_tokens(x.flatten(2).transpose(1, 2), height, width)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def stage3_mixers(dim: int = 256) -> dict[str, nn.Module]:
    """The token mixers that compete at SMT-T's stage 3 (stride 16, ``dim`` channels), NCHW in and out.

    VAN's LKA (k=21) and VAN-LSKA's LSKA (k=23) in their spatial-gating sub-layer, SMT's SAM
    (4 heads, expand 2) and SMT's multi-head self-attention (8 heads), all at the same width.
    """
    from ..layers import SAM, SpatialGatingAttention
    from ..layers.mhsa import MSA

    return {
        "LKA k=21 (VAN)": SpatialGatingAttention(dim, "lka", 21),
        "LSKA k=23 (VAN-LSKA)": SpatialGatingAttention(dim, "lska", 23),
        "SAM (SMT)": _TokenMixer(SAM(dim, num_heads=4, expand_ratio=2)),
        "MSA (SMT, 8 heads)": _TokenMixer(MSA(dim, num_heads=8, qkv_bias=True)),
    }


def profile_scaling(
    resolutions: Sequence[int] = SCALING_RESOLUTIONS,
    models: Sequence[str] = ("van_lska_tiny", "smt_t"),
    dim: int = 256,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.2,
    timing: bool = True,
    memory: bool = True,
    progress: bool = True,
) -> list[ModelProfile]:
    """Cost against input resolution: whole models, and the stage-3 token mixers (stride 16).

    The stage-3 rows show where linear-cost convolutional attention beats quadratic self-attention;
    their ``resolution`` is the *input image* side (the mixer sees ``resolution // 16``).
    """
    from tqdm.auto import tqdm

    from ..models import create_model

    device = torch.device(device)
    jobs = [("model", name, r) for r in resolutions for name in models]
    jobs += [("mixer", label, r) for r in resolutions for label in stage3_mixers(8)]
    rows = []
    for kind, name, resolution in tqdm(jobs, desc="scaling", disable=not progress, leave=False):
        if kind == "model":
            module = create_model(name)
            shape: tuple[int, ...] = (batch, 3, resolution, resolution)
            label = name
        else:
            module = stage3_mixers(dim)[name]
            side = resolution // 16
            shape = (batch, dim, side, side)
            label = f"stage 3: {name}"
        rows.append(
            _profile_built(
                label, name, module, attention=getattr(module, "attention", None),
                kernel_size=getattr(module, "kernel_size", None), input_shape=shape, resolution=resolution,
                batch=batch, device=device, dtype=dtype, min_run_time=min_run_time, timing=timing, memory=memory,
            )
        )
    return rows
