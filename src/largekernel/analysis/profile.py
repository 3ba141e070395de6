"""Side-by-side cost of the attention designs: parameters, MACs, latency, throughput and memory.

This is the LSKA paper's central comparison (LKA-trivial, LKA, LSKA-trivial, LSKA as the kernel
grows), measured on the machine at hand rather than read off a figure: for the modules alone
(:func:`profile_modules`), inside whole models (:func:`profile_models`), and against input
resolution next to SMT's self-attention (:func:`profile_scaling`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError
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
    threads: int = 1  # intra-op CPU threads while timing

    def as_dict(self) -> dict:
        return asdict(self)


def _benchmark():
    """``torch.utils.benchmark``, imported without its import-time log line.

    It imports ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found, using
    CUDA_HOME=..." with a CUDA build of torch on a machine without a GPU. The timer never compiles
    C++ (only its Callgrind mode does), so that line says nothing about what we run.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def measure_latency(fn, min_run_time: float = 0.2, threads: int = 1) -> float:
    """Median seconds of ``fn()`` with PyTorch's benchmark timer (warm-up and blocking handled).

    ``threads``: intra-op CPU threads while timing (the timer's default is 1, for repeatable numbers).
    """
    timer = _benchmark().Timer(stmt="fn()", globals={"fn": fn}, num_threads=_check_threads(threads))
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _check_threads(threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(f"threads must be a positive integer, got {threads!r}")
    return threads


@contextlib.contextmanager
def _intra_op_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous value restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(_check_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def profile_module(
    design: str,
    kernel_size: int,
    dim: int = 64,
    resolution: int = 56,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.2,
    threads: int = 1,
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
        latency_ms=measure_latency(forward, min_run_time, threads) * 1e3,
        threads=threads,
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
    medians for the whole batch; memory is the peak of what PyTorch's allocator has handed out during
    one forward+backward step, above what was allocated before it (see :func:`measure_peak_memory`;
    ``memory_method`` says how it was read).
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
    threads: int = 1  # intra-op CPU threads for every measurement of the row

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
    """Peak MiB allocated during ``step()`` above what was allocated before it, and how it was read.

    Both devices count what PyTorch's allocator hands out: every tensor (activations, tensors saved
    for backward, gradients) and every buffer an operator allocates for itself (e.g. the column
    buffers of a large convolution's backward), each from its allocation to its free.
    CUDA: ``torch.cuda.max_memory_allocated``. CPU: PyTorch's CPU allocator keeps no statistics, so
    the step runs once under ``torch.profiler`` with ``profile_memory=True`` (no stacks, no shapes:
    the cost is about one more step) and the peak of the running sum of its allocation and free
    events is taken. Memory allocated outside PyTorch's allocator (e.g. by oneDNN's own scratch-pad
    allocator, or NumPy) is not included; what the allocator keeps cached is not counted either.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "torch.cuda.max_memory_allocated"
    peak = _cpu_allocation_peak(step)
    return (None, "unavailable") if peak is None else (peak / 2**20, "torch.profiler allocation events")


def _cpu_allocation_peak(step) -> int | None:
    """Peak bytes of the running sum of the CPU allocator's allocation/free events during ``step()``."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    try:
        with _kineto_lines_dropped():
            prof.start()
    except Exception:  # noqa: BLE001 - a profiler this torch build lacks must not stop a profile
        return None
    try:
        step()
    finally:
        with _kineto_lines_dropped():
            prof.stop()
    try:
        cpu = torch.autograd.DeviceType.CPU
        # torch's private kineto results (their API moves between versions; guarded by the except below)
        profiler: Any = prof.profiler
        events = [e for e in profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == cpu]
    except (AttributeError, RuntimeError):  # the raw event API moved in this torch version
        return None
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):  # sorted() is stable: same-time events keep their order
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


# kineto's own log lines: "LEVEL:YYYY-MM-DD HH:MM:SS pid:tid file.cpp:line] message"
_KINETO_LINE = re.compile(r"^(?:USDT|STAGE|INFO|WARNING|ERROR):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \S+\.cpp:\d+\]")


@contextlib.contextmanager
def _kineto_lines_dropped() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; write back every line that is not kineto's log.

    Starting and stopping the profiler makes kineto (C++) write straight to fd 2: a ``USDT ...
    profiler_start`` / ``profiler_stop`` pair every time and, with a CUDA build of torch on a
    machine without a GPU, ``ERROR ... gpuGetDeviceCount failed``. ``warnings``/``logging`` cannot
    catch C++ writes; only the profiler's own start and stop run captured, never the user's step.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (e.g. a windowed app): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _KINETO_LINE.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


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
    threads: int,
) -> ModelProfile:
    # MACs depend only on shapes: count on the meta device (no arithmetic, instant even at 1024 px)
    macs, macs_with_attention = count_macs_with_attention(
        copy.deepcopy(model).to("meta"), torch.empty(1, *input_shape[1:], device="meta")
    )
    model = model.to(device=device, dtype=dtype)
    with _intra_op_threads(threads):
        forward_ms, forward_backward_ms, peak, method = _measure(
            label,
            model,
            x_shape=input_shape,
            resolution=resolution,
            batch=batch,
            device=device,
            dtype=dtype,
            min_run_time=min_run_time,
            timing=timing,
            memory=memory,
            threads=threads,
        )
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
        throughput=None if forward_ms is None else batch / (forward_ms / 1e3),
        peak_memory_mib=peak,
        memory_method=method,
        threads=threads,
    )


def _measure(
    label: str,
    model: nn.Module,
    *,
    x_shape: tuple[int, ...],
    resolution: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    min_run_time: float,
    timing: bool,
    memory: bool,
    threads: int,
) -> tuple[float | None, float | None, float | None, str | None]:
    """``(forward_ms, forward_backward_ms, peak_memory_mib, memory_method)``, every one at the same thread count."""
    forward_ms = forward_backward_ms = peak = None
    method = None
    if timing or memory:
        x = torch.randn(*x_shape, device=device, dtype=dtype)
        model.train()
        step = _forward_backward(model, x)
        try:
            step()  # warm-up: lazy initialisation and allocator growth stay out of the numbers
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            raise ConfigurationError(
                f"{label}: forward+backward runs in training mode, where BatchNorm needs more than one value "
                f"per channel; the last feature map at {resolution}px with batch {batch} is too small "
                "(use a larger resolution or batch, or --macs-only)"
            ) from error
        if memory:
            model.zero_grad(set_to_none=True)  # so the last step's gradients are not counted as live before
            peak, method = measure_peak_memory(step, device)
        if timing:
            forward_backward_ms = measure_latency(step, min_run_time, threads) * 1e3
            model.eval()

            def forward() -> None:
                with torch.inference_mode():
                    model(x)
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)

            forward_ms = measure_latency(forward, min_run_time, threads) * 1e3
        model.zero_grad(set_to_none=True)
    return forward_ms, forward_backward_ms, peak, method


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
    threads: int = 1,
    **overrides,
) -> ModelProfile:
    """Parameters, MACs, latency (forward; forward+backward), throughput and peak memory of a registered model.

    Args:
        name: a :func:`largekernel.create_model` name, e.g. ``'van_lska_tiny'`` or ``'smt_t'``.
        attention, kernel_size: overrides of the model's attention design and kernel size.
        resolution: square input side; MACs are per image, timings for the whole ``batch``.
        timing, memory: ``False`` skips those measurements (MACs and parameters only).
        threads: intra-op CPU threads for the warm-up, the memory step and the timings alike. Memory
            can grow with it: some operators allocate a temporary buffer per thread.
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
        label,
        name,
        model,
        attention=getattr(model, "attention", attention),
        kernel_size=getattr(model, "kernel_size", kernel_size),
        input_shape=(batch, 3, resolution, resolution),
        resolution=resolution,
        batch=batch,
        device=torch.device(device),
        dtype=dtype,
        min_run_time=min_run_time,
        timing=timing,
        memory=memory,
        threads=threads,
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
        # forward_tokens: a method of the SMT mixers, untyped on nn.Module (the mypy ignore stays last
        # on its line: TorchScript reads such comments and wants them to end the line)
        tokens = self.mixer.forward_tokens(x.flatten(2).transpose(1, 2), height, width)  # type: ignore[operator]
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
    threads: int = 1,
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
                label,
                name,
                module,
                attention=getattr(module, "attention", None),
                kernel_size=getattr(module, "kernel_size", None),
                input_shape=shape,
                resolution=resolution,
                batch=batch,
                device=device,
                dtype=dtype,
                min_run_time=min_run_time,
                timing=timing,
                memory=memory,
                threads=threads,
            )
        )
    return rows
