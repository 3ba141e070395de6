"""CPU speed of the attention layers and models: fast paths against plain PyTorch, side by side.

Usage::

    PYTHONPATH=src python benchmarks/cpu_speed.py                 # module + model tables
    PYTHONPATH=src python benchmarks/cpu_speed.py --part modules  # only the module table
    PYTHONPATH=src python benchmarks/cpu_speed.py --threads 2 --repeats 7
    PYTHONPATH=src python benchmarks/cpu_speed.py --part inference  # batch-1 CPU inference paths side by side

Every ratio compares variants timed in the same run, interleaved round-robin (so a busy machine
slows all of them alike), as the median of ``--repeats`` wall-clock timings after a warm-up.

Module table: dim 64, 56x56, batch 8, NCHW in and out. "naive" is the composition of ``nn.Conv2d``
layers written out below in NCHW (the layer's own plain path computes the same thing); "auto" is
the layer as users call it (backend "auto", timed on first sight); "cpu_nhwc" forces that backend.
Model table: "plain NCHW" is the model with backend "torch"; "fast NCHW" the same model as users
get it (backend "auto"); "optimized" is ``optimize_for_inference(model)`` (folded, channels_last) for
inference and ``optimize_for_cpu_training(model)`` (channels_last, NHWC-friendly modules, same
parameters) with channels_last input for the training step (SGD step included).
Inference table (batch 1): plain eager (backend "torch"), our eager path ("auto"),
``optimize_for_inference``, ``torch.compile`` (default inductor, after its compile) and our ONNX
export in onnxruntime (CPU provider, same thread count), timed side by side.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import largekernel as lk
from largekernel import kernels
from largekernel.kernels import optimize_for_cpu_training


class NaiveLSKA(nn.Module):
    """LSKA as five ``nn.Conv2d`` layers in NCHW, sharing the given module's parameters."""

    def __init__(self, module: lk.LSKA) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v, module.conv1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = x
        for conv in self.convs:
            attn = F.conv2d(attn, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return x * attn


class NaiveLKA(nn.Module):
    """LKA as three ``nn.Conv2d`` layers in NCHW, sharing the given module's parameters."""

    def __init__(self, module: lk.LKA) -> None:
        super().__init__()
        self.convs = nn.ModuleList([module.conv0, module.conv_spatial, module.conv1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = x
        for conv in self.convs:
            attn = F.conv2d(attn, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return x * attn


def time_side_by_side(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall-clock ms per variant, the variants interleaved round-robin."""
    for fn in variants.values():
        fn()  # warm-up (oneDNN primitive creation, allocator)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return module(x)

    return run


def _forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        inp = x.detach().requires_grad_()
        out = module(inp)
        out.backward(torch.ones_like(out))
        module.zero_grad(set_to_none=True)
        return None

    return run


def _fast(fn: Callable[[], object], enabled: bool | str) -> Callable[[], object]:
    """``fn`` under a backend: True = "auto" (what users get), False = "torch", or a backend name."""
    name = {True: "auto", False: "torch"}.get(enabled, enabled) if isinstance(enabled, bool) else enabled

    def run() -> object:
        with kernels.backend(name):
            return fn()

    return run


def module_table(repeats: int, kernel_sizes: list[int], batch: int = 8, dim: int = 64, size: int = 56) -> str:
    torch.manual_seed(0)
    x = torch.randn(batch, dim, size, size)
    lines = [
        f"### Modules: dim {dim}, {size}x{size}, batch {batch}, NCHW in/out (median ms; ratio = naive / auto)",
        "",
        "| layer | k | fwd naive | fwd cpu_nhwc | fwd auto | fwd ratio | fwd+bwd naive | fwd+bwd cpu_nhwc "
        "| fwd+bwd auto | fwd+bwd ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cls, naive_cls in [("LSKA", lk.LSKA, NaiveLSKA), ("LKA", lk.LKA, NaiveLKA)]:
        for k in kernel_sizes:
            module = cls(dim, k)
            naive = naive_cls(module)
            fwd = time_side_by_side(
                {
                    "naive": _forward(naive, x),
                    "nhwc": _fast(_forward(module, x), "cpu_nhwc"),
                    "fast": _fast(_forward(module, x), True),
                },
                repeats,
            )
            both = time_side_by_side(
                {
                    "naive": _forward_backward(naive, x),
                    "nhwc": _fast(_forward_backward(module, x), "cpu_nhwc"),
                    "fast": _fast(_forward_backward(module, x), True),
                },
                repeats,
            )
            lines.append(
                f"| {name} | {k} | {fwd['naive']:.1f} | {fwd['nhwc']:.1f} | {fwd['fast']:.1f} "
                f"| **{fwd['naive'] / fwd['fast']:.2f}x** | {both['naive']:.1f} | {both['nhwc']:.1f} | {both['fast']:.1f} "
                f"| **{both['naive'] / both['fast']:.2f}x** |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer):
    def run() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return None

    return run


def model_table(repeats: int, names: list[str], batches: list[int], train_batch: int, size: int = 224) -> str:
    lines = [
        f"### Models at {size}x{size} (median ms; ratios against plain NCHW)",
        "",
        "| model | task | batch | plain NCHW | fast NCHW | fast channels_last / optimized | ratio fast NCHW | ratio best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        torch.manual_seed(0)
        model = lk.create_model(name).eval()
        optimized = lk.optimize_for_inference(model)
        for batch in batches:
            x = torch.randn(batch, 3, size, size)
            t = time_side_by_side(
                {
                    "plain": _fast(_forward(model, x), False),
                    "fast": _fast(_forward(model, x), True),
                    "optimized": _fast(_forward(optimized, x), True),
                },
                repeats,
            )
            lines.append(
                f"| {name} | inference | {batch} | {t['plain']:.1f} | {t['fast']:.1f} | {t['optimized']:.1f} (optimized) "
                f"| {t['plain'] / t['fast']:.2f}x | **{t['plain'] / t['optimized']:.2f}x** |"
            )
            print(lines[-1], flush=True)
        # training: plain NCHW vs the fast path in NCHW vs the fast path with a channels_last model
        model_nchw = lk.create_model(name).train()
        model_cl = optimize_for_cpu_training(lk.create_model(name).train())
        model_cl.load_state_dict(model_nchw.state_dict())
        x = torch.randn(train_batch, 3, size, size)
        target = torch.randint(0, 1000, (train_batch,))
        sgd = {"lr": 1e-4, "momentum": 0.9}
        t = time_side_by_side(
            {
                "plain": _fast(
                    _train_step(model_nchw, x, target, torch.optim.SGD(model_nchw.parameters(), **sgd)), False
                ),
                "fast": _fast(
                    _train_step(model_nchw, x, target, torch.optim.SGD(model_nchw.parameters(), **sgd)), True
                ),
                "cl": _fast(
                    _train_step(
                        model_cl,
                        x.contiguous(memory_format=torch.channels_last),
                        target,
                        torch.optim.SGD(model_cl.parameters(), **sgd),
                    ),
                    True,
                ),
            },
            repeats,
        )
        lines.append(
            f"| {name} | train step | {train_batch} | {t['plain']:.1f} | {t['fast']:.1f} | {t['cl']:.1f} (optimize_for_cpu_training) "
            f"| {t['plain'] / t['fast']:.2f}x | **{t['plain'] / t['cl']:.2f}x** |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def inference_table(repeats: int, names: list[str], threads: int, size: int = 224) -> str:
    """Batch-1 CPU inference: every path a user can take, timed side by side in one run."""
    import tempfile
    from pathlib import Path

    lines = [
        f"### CPU inference paths, batch 1, {size}x{size} (median ms; speed-up against plain eager)",
        "",
        "| model | plain eager | our eager (auto) | optimize_for_inference | torch.compile | ONNX (onnxruntime) |",
        "|---|---|---|---|---|---|",
    ]
    x = torch.randn(1, 3, size, size)
    for name in names:
        torch.manual_seed(0)
        model = lk.create_model(name).eval()
        optimized = lk.optimize_for_inference(model)
        variants = {
            "plain": _fast(_forward(model, x), False),
            "auto": _fast(_forward(model, x), True),
            "optimized": _fast(_forward(optimized, x), True),
        }
        try:
            compiled = torch.compile(model)
            _fast(_forward(compiled, x), True)()  # compile outside the timing
            variants["compile"] = _fast(_forward(compiled, x), True)
        except Exception as error:  # noqa: BLE001 - no C++ compiler, an inductor failure: say so in the table
            print(f"torch.compile failed for {name}: {type(error).__name__}: {error}", flush=True)
        try:
            import onnxruntime

            from largekernel.export import export_onnx

            path = export_onnx(optimized_copy(model), Path(tempfile.mkdtemp()) / f"{name}.onnx", img_size=size)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            # onnxruntime's threads spin after each run by default, stealing the cores from the torch
            # paths timed next in the interleaved loop (plain eager read 2x slower than in the model table)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            variants["onnx"] = lambda session=session, feed=feed: session.run(None, feed)
        except ImportError as error:
            print(f"ONNX column skipped: {error}", flush=True)
        t = time_side_by_side(variants, repeats)

        def cell(key: str, t: dict[str, float] = t) -> str:
            return f"{t[key]:.1f} ({t['plain'] / t[key]:.2f}x)" if key in t else "n/a"

        lines.append(
            f"| {name} | {t['plain']:.1f} | {cell('auto')} | {cell('optimized')} | {cell('compile')} | {cell('onnx')} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def optimized_copy(model: nn.Module) -> nn.Module:
    """What ``largekernel export`` writes: folded, NCHW."""
    return lk.optimize_for_inference(model, channels_last=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "modules", "models", "inference"], default="all")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[23, 35, 53])
    parser.add_argument("--models", nargs="+", default=["van_b0", "van_lska_tiny"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--train-batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
        f"median of {args.repeats} interleaved runs, load average {open('/proc/loadavg').read().split()[0]} at start"
    )
    print(header, flush=True)
    tables = [header]
    if args.part in ("all", "modules"):
        tables.append(module_table(args.repeats, args.kernel_sizes))
    if args.part in ("all", "models"):
        tables.append(model_table(args.repeats, args.models, args.batches, args.train_batch))
    if args.part in ("all", "inference"):
        tables.append(inference_table(args.repeats, args.models, args.threads))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
