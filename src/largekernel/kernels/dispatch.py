"""One backend switch for the depthwise cascades, and ``"auto"``: measured, not assumed.

Backends:

* ``"torch"``: plain PyTorch, exactly what a chain of ``nn.Conv2d`` computes (always available).
* ``"cpu_nhwc"``: :mod:`largekernel.kernels.cpu` (CPU, float32/bfloat16).
* ``"triton"``: :mod:`largekernel.kernels.triton_cascade` (CUDA with Triton; CPU tensors only
  under Triton's interpreter, ``TRITON_INTERPRET=1``).
* ``"auto"`` (the default): the first time a key (device, dtype, memory format, shape, kernel
  sizes, dilations, forward or training) is seen, every eligible backend is timed for a few
  iterations on copies of the inputs (CUDA events on a GPU, ``perf_counter`` on the CPU) and the
  fastest is kept for the process, like ``torch.backends.cudnn.benchmark``. A backend that raises
  is dropped for that key with one warning, and the plain path runs.

Where ``auto`` does not time (deterministic choices): while tracing or compiling
(``torch.compile``, ``torch.export``, ``torch.jit.trace``, ONNX export), inside ``torch.func``
transforms and under dispatch modes (FLOP counters, fake tensors) it is ``"torch"``, so
compilers and exporters see plain convolutions; with ``torch.use_deterministic_algorithms(True)``
(Lightning's ``deterministic=True``) it is ``"cpu_nhwc"`` on the CPU and ``"torch"`` elsewhere,
so repeated runs take the same code path. A forced backend (``set_backend("cpu_nhwc")``) is used
wherever it is eligible (device, dtype, kernel shapes), ``"torch"`` elsewhere; under
``torch.compile`` / ``torch.export`` it appears as the single op ``largekernel::depthwise_cascade``;
ONNX export, ``torch.jit.trace``, ``torch.func`` and dispatch modes always get ``"torch"``.

Choose with :func:`set_backend`, the context manager :func:`backend`, or the environment variable
``LARGEKERNEL_BACKEND``. Set ``LARGEKERNEL_AUTOTUNE_CACHE`` to a file path (or ``1`` for
``~/.cache/largekernel/autotune.json``) to keep ``auto``'s choices across processes (off by default).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import _python_dispatch

from ..errors import ConfigurationError
from . import ops

__all__ = [
    "BACKENDS",
    "autotune_choices",
    "backend",
    "clear_autotune_cache",
    "depthwise_cascade",
    "get_backend",
    "large_kernel_attention",
    "set_backend",
]

BACKENDS = ("auto", "torch", "triton", "cpu_nhwc")
ENV_VAR = "LARGEKERNEL_BACKEND"
CACHE_ENV_VAR = "LARGEKERNEL_AUTOTUNE_CACHE"
_OLD_ENV_VARS = ("LARGEKERNEL_FUSED", "LARGEKERNEL_FAST_CPU")
# Timed runs per candidate at first sight, after TUNE_WARMUP untimed ones; the minimum is kept. Three
# were too few on a shared CPU: a slow spell during the plain path's runs once made auto pick a backend
# 1.8x slower than plain for LSKA k=23 (benchmarks/cpu_speed.py, docs/speed.md run 5).
TUNE_WARMUP = 2
TUNE_ITERATIONS = 10


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ConfigurationError(f"{where}: backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return name


def _initial_backend() -> str:
    for old in _OLD_ENV_VARS:
        if old in os.environ:
            warnings.warn(f"{old} is no longer read; use {ENV_VAR}=torch|auto|cpu_nhwc|triton", stacklevel=2)
    return _check_name(os.environ.get(ENV_VAR, "auto"), f"environment variable {ENV_VAR}")


_backend: str = _initial_backend()
# key -> chosen backend; the process-wide autotune cache
_choices: dict[tuple, str] = {}
_persisted_loaded = False
# key (without the forward/training part) -> fast backends that can run it
_eligible_memo: dict[tuple, list[str]] = {}


def set_backend(name: str) -> None:
    """Use ``name`` (``"auto"``, ``"torch"``, ``"triton"`` or ``"cpu_nhwc"``) for LKA/LSKA in this process."""
    global _backend
    _backend = _check_name(name, "set_backend")
    _eligible_memo.clear()


def get_backend() -> str:
    """The backend set by :func:`set_backend` / :func:`backend` / ``LARGEKERNEL_BACKEND``."""
    return _backend


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager: ``with kernels.backend("torch"): ...`` runs the block with that backend, then restores."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def autotune_choices() -> dict[tuple, str]:
    """A copy of ``auto``'s decisions so far: key -> backend."""
    return dict(_choices)


def clear_autotune_cache() -> None:
    """Forget ``auto``'s decisions (the next call of each key is timed again)."""
    _choices.clear()
    _eligible_memo.clear()


# ----------------------------------------------------------------------------------------------
# eligibility


@functools.cache
def _triton_importable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: a stubbed-out sys.modules["triton"] = None
        return False


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(x: Tensor) -> bool:
    """Whether Triton can run on ``x``'s device: CUDA with Triton, or CPU under the interpreter."""
    if not _triton_importable():
        return False
    if x.is_cuda:
        return not _interpreter_on()
    return x.device.type == "cpu" and _interpreter_on()


def _eligible(name: str, x: Tensor, dtype: torch.dtype, weights: Sequence[Tensor], dilations: Sequence[int]) -> bool:
    if name == "cpu_nhwc":
        from . import cpu

        return (
            x.device.type == "cpu"
            and dtype in cpu.DTYPES
            and all(cpu.stage_supported(w.shape[2], w.shape[3]) for w in weights)
        )
    if name == "triton":
        if not triton_available(x):
            return False
        from . import triton_cascade

        stages = [(w.shape[2], w.shape[3], d) for w, d in zip(weights, dilations)]
        return triton_cascade.supports(x.to(dtype) if x.dtype != dtype else x, stages)
    return name == "torch"


def _tracing() -> bool:
    """Inside a tracer, exporter, functorch transform or dispatch mode: plain convolutions only.

    (ONNX's TorchScript exporter traces, so ``torch.jit.is_tracing()`` covers it; its dynamo
    exporter, like ``torch.export``, is caught by ``torch.compiler.is_compiling()`` in the caller.)
    """
    if torch.jit.is_tracing() or _python_dispatch._get_current_dispatch_mode() is not None:
        return True
    return torch._C._functorch.peek_interpreter_stack() is not None


def _key(
    kind: str, x: Tensor, dtype: torch.dtype, weights: Sequence[Tensor], dilations: Sequence[int], training: bool
) -> tuple:
    # built on every call: kept cheap (no string formatting of shapes)
    if x.is_contiguous():
        layout = "nchw"
    else:
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) else "strided"
    return (
        kind,
        str(x.device),
        str(dtype),
        layout,
        tuple(x.shape),
        tuple([tuple(w.shape[2:]) for w in weights]),
        tuple(dilations),
        "train" if training else "forward",
    )


def _eligible_backends(
    key: tuple, x: Tensor, dtype: torch.dtype, weights: Sequence[Tensor], dilations: Sequence[int]
) -> list[str]:
    """The fast backends that can run ``key`` (memoised: it depends on the key alone)."""
    found = _eligible_memo.get(key[:7])
    if found is None:
        found = [name for name in ("cpu_nhwc", "triton") if _eligible(name, x, dtype, weights, dilations)]
        _eligible_memo[key[:7]] = found
    return found


# ----------------------------------------------------------------------------------------------
# timing


def _measure(name: str, run: Callable[[], object], device: torch.device) -> float:
    """Seconds one ``run()`` takes with backend ``name``: the minimum of a few after a warm-up (the run least
    disturbed by other processes on a shared machine). Tests replace this with fake timings."""
    for _ in range(TUNE_WARMUP):  # oneDNN primitives, Triton compilation, the allocator's first pages
        run()
    if device.type == "cuda":
        times = []
        for _ in range(TUNE_ITERATIONS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return min(times)
    times = []
    for _ in range(TUNE_ITERATIONS):
        start_s = time.perf_counter()
        run()
        times.append(time.perf_counter() - start_s)
    return min(times)


def _warn_dropped(name: str, key: tuple, error: BaseException) -> None:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    warnings.warn(
        f"largekernel: backend {name!r} failed for {key} ({type(error).__name__}: {first}); "
        "dropped for this shape, the plain PyTorch path runs instead",
        RuntimeWarning,
        stacklevel=4,
    )


def _tune(key: tuple, candidates: list[str], run: Callable[[str], object], device: torch.device) -> str:
    times: dict[str, float] = {}
    for name in candidates:
        try:
            times[name] = _measure(name, functools.partial(run, name), device)
        except Exception as error:  # any failure of a fast backend: drop it for this key
            if name == "torch":
                raise
            _warn_dropped(name, key, error)
    return min(times, key=times.__getitem__)


# ----------------------------------------------------------------------------------------------
# persisted choices (opt-in)


def _cache_path() -> Path | None:
    value = os.environ.get(CACHE_ENV_VAR, "")
    if value in ("", "0"):
        return None
    if value == "1":
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "largekernel" / "autotune.json"
    return Path(value)


def _machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return f"torch {torch.__version__}; {platform.machine()} {platform.processor()}; {gpu}; threads {torch.get_num_threads()}"


def _load_persisted() -> None:
    global _persisted_loaded
    _persisted_loaded = True
    path = _cache_path()
    if path is None or not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
        if data.get("machine") == _machine():
            for entry in data.get("choices", []):
                if entry["backend"] in BACKENDS:
                    _choices.setdefault(_freeze(entry["key"]), entry["backend"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"largekernel: ignoring unreadable autotune cache {path}: {error}", RuntimeWarning, stacklevel=2)


def _freeze(value):
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _save_persisted() -> None:
    path = _cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(
            json.dumps(
                {"machine": _machine(), "choices": [{"key": list(k), "backend": v} for k, v in _choices.items()]}
            )
        )
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as error:
        warnings.warn(f"largekernel: cannot write autotune cache {path}: {error}", RuntimeWarning, stacklevel=2)


# ----------------------------------------------------------------------------------------------
# the computations and the choice


def _compute(
    name: str,
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    dilations: Sequence[int],
    proj: tuple[Tensor, Tensor | None] | None,
) -> Tensor:
    """The cascade (``proj`` None) or ``x * conv1x1(cascade(x))`` through backend ``name``."""
    if name == "torch":
        attn = ops.plain_cascade(x, weights, biases, dilations)
        return attn if proj is None else x * F.conv2d(attn, proj[0], proj[1])
    xc, params = ops.autocast_inputs(x, [*weights, *biases])
    n = len(weights)
    attn = ops.depthwise_cascade_op(xc, params[:n], params[n:], list(dilations), name)[0]
    if proj is None:
        # the plain path's layout: a channels_last input gives channels_last, else NCHW
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return attn.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    if name == "cpu_nhwc":
        from . import cpu

        return cpu.gate(x, attn, proj[0], proj[1])
    return x * F.conv2d(attn, proj[0], proj[1])


def _timed_run(name: str, training: bool, x: Tensor, weights, biases, dilations, proj) -> None:
    """One forward (or forward + backward) on detached copies: the user's tensors and graph are not touched."""
    leaves = [t.detach().requires_grad_(t.requires_grad) for t in (x, *weights, *biases)]
    proj_leaves: tuple[Tensor, Tensor | None] | None = None
    if proj is not None:
        proj_leaves = (
            proj[0].detach().requires_grad_(proj[0].requires_grad),
            None if proj[1] is None else proj[1].detach().requires_grad_(proj[1].requires_grad),
        )
    n = len(weights)
    if not training:
        with torch.no_grad():
            _compute(name, leaves[0], leaves[1 : 1 + n], leaves[1 + n :], dilations, proj_leaves)
        return
    with torch.enable_grad():
        out = _compute(name, leaves[0], leaves[1 : 1 + n], leaves[1 + n :], dilations, proj_leaves)
        wanted = [t for t in [*leaves, *(proj_leaves or ())] if t is not None and t.requires_grad]
        torch.autograd.grad(out, wanted, torch.ones_like(out))


def _choose(kind: str, x: Tensor, weights, biases, dilations, proj) -> tuple[str, tuple | None]:
    """(backend to run, autotune key or None when the choice was not ``auto``'s to make)."""
    requested = _backend
    if requested == "torch":
        return "torch", None
    compiling = torch.compiler.is_compiling()
    if not compiling and _tracing():
        return "torch", None
    if x.dim() != 4 or x.numel() == 0 or not x.is_floating_point():
        return "torch", None
    cast = ops.autocast_dtype(x.device.type)
    dtype = cast or x.dtype
    if cast is None and any(w.dtype != x.dtype for w in weights):
        return "torch", None  # mixed dtypes without autocast: the plain path gives PyTorch's own error
    if compiling:
        if requested == "auto":
            return "torch", None
        return (requested if _eligible(requested, x, dtype, weights, dilations) else "torch"), None
    training = torch.is_grad_enabled() and (
        x.requires_grad
        or any(p.requires_grad for p in weights)
        or any(p.requires_grad for p in biases)
        or (proj is not None and (proj[0].requires_grad or (proj[1] is not None and proj[1].requires_grad)))
    )
    key = _key(kind, x, dtype, weights, dilations, training)
    eligible = _eligible_backends(key, x, dtype, weights, dilations)
    if requested != "auto":
        return (requested if requested in eligible else "torch"), None
    if not eligible:
        return "torch", None
    if torch.are_deterministic_algorithms_enabled():
        return ("cpu_nhwc" if "cpu_nhwc" in eligible else "torch"), None
    choice = _choices.get(key)
    if choice is None:
        if not _persisted_loaded:
            _load_persisted()
            choice = _choices.get(key)
    if choice is None:
        choice = _tune(
            key,
            ["torch", *eligible],
            lambda name: _timed_run(name, training, x, weights, biases, dilations, proj),
            x.device,
        )
        _choices[key] = choice
        _save_persisted()
    return choice, key


def _dispatch(kind: str, x: Tensor, weights, biases, dilations, proj) -> Tensor:
    name, key = _choose(kind, x, weights, biases, dilations, proj)
    if name == "torch" or key is None:
        return _compute(name, x, weights, biases, dilations, proj)
    try:
        return _compute(name, x, weights, biases, dilations, proj)
    except Exception as error:  # noqa: BLE001 - auto's choice failed at run time (any way): drop it for this key, run plain
        _warn_dropped(name, key, error)
        _choices[key] = "torch"
        return _compute("torch", x, weights, biases, dilations, proj)


def _check_args(
    where: str, x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], dilations: Sequence[int]
) -> list[Tensor]:
    if not isinstance(x, Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ConfigurationError(f"{where}: x must be a 4-D (batch, channels, height, width) tensor, got {got}")
    if not (len(weights) == len(biases) == len(dilations)) or not weights:
        raise ConfigurationError(
            f"{where}: need one weight, bias and dilation per stage, got {len(weights)} weights, "
            f"{len(biases)} biases, {len(dilations)} dilations"
        )
    channels = x.shape[1]
    filled = []
    for s, (w, b, d) in enumerate(zip(weights, biases, dilations)):
        if (
            not isinstance(w, Tensor)
            or w.dim() != 4
            or w.shape[0] != channels
            or w.shape[1] != 1
            or w.shape[2] % 2 == 0
            or w.shape[3] % 2 == 0
        ):
            raise ConfigurationError(
                f"{where}: stage {s} weight must be a depthwise ({channels}, 1, odd, odd) tensor, "
                f"got {tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}"
            )
        if b is not None and tuple(b.shape) != (channels,):
            raise ConfigurationError(f"{where}: stage {s} bias must have shape ({channels},), got {tuple(b.shape)}")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigurationError(f"{where}: stage {s} dilation must be an int >= 1, got {d!r}")
        filled.append(w.new_zeros(channels) if b is None else b)  # the op takes one bias per stage
    return filled


def depthwise_cascade(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], dilations: Sequence[int]
) -> Tensor:
    """A chain of 'same'-padded, stride-1 depthwise convolutions through the current backend.

    Equal to ``F.conv2d(h, w_s, b_s, padding=d_s * (k - 1) // 2, dilation=d_s, groups=C)`` for each
    stage in turn (the attention map of LKA / LSKA before ``conv1``). Differentiable in every
    tensor; weights have the ``nn.Conv2d`` depthwise shape ``(C, 1, KH, KW)``, odd ``KH`` and ``KW``.
    """
    biases = _check_args("depthwise_cascade", x, weights, biases, dilations)
    return _dispatch("cascade", x, list(weights), biases, [int(d) for d in dilations], None)


def large_kernel_attention(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    dilations: Sequence[int],
    proj_weight: Tensor,
    proj_bias: Tensor | None,
) -> Tensor:
    """``x * conv1x1(depthwise_cascade(x))``: the whole LKA / LSKA layer through the current backend.

    ``proj_weight`` is the 1x1 convolution's ``(C, C, 1, 1)`` weight. Same result, dtype and layout
    (NCHW in, NCHW out; channels_last in, channels_last out) as the plain ``nn.Conv2d`` layers.
    """
    biases = _check_args("large_kernel_attention", x, weights, biases, dilations)
    channels = x.shape[1]
    if not isinstance(proj_weight, Tensor) or tuple(proj_weight.shape) != (channels, channels, 1, 1):
        got = tuple(proj_weight.shape) if isinstance(proj_weight, Tensor) else type(proj_weight).__name__
        raise ConfigurationError(
            f"large_kernel_attention: proj_weight must be ({channels}, {channels}, 1, 1), got {got}"
        )
    return _dispatch("attention", x, list(weights), biases, [int(d) for d in dilations], (proj_weight, proj_bias))
