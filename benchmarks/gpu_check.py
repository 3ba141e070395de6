"""The prepared GPU check of issue 12: CUDA tests, then the cascade grid and model training, one markdown table.

    python benchmarks/gpu_check.py --out gpu_check.md           # on a CUDA machine (bash benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --dry-run --out /tmp/x.md    # CPU, tiny sizes: checks the script itself

Cascade grid (the part the fused kernels replace, before conv1): batch 32; dim 64/128/320/512 at
56/28/14/7; LSKA k 7, 23, 35, 53; fp32 and bf16; eager (``F.conv2d`` chain) vs ``torch.compile`` of
that chain vs the fused Triton op; forward and forward+backward; achieved bandwidth of the fused op
as a fraction of peak (unavoidable traffic only: forward reads x and writes the output, forward +
backward additionally reads x and grad_out and writes grad_x). Then VAN-LSKA-Tiny and VAN-B0
training images/s at 224, bf16 autocast, SGD step: backend ``torch`` (eager) vs ``auto``.
A time budget (``--budget-s``, default 420 s) drops the ``torch.compile`` column first, then rows,
so the whole check stays under 8 minutes; what was skipped is written in the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_cascade import _cascade_params, peak_bandwidth_gbps

SHAPES = [(64, 56), (128, 28), (320, 14), (512, 7)]
KERNELS = [7, 23, 35, 53]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODELS = ["van_lska_tiny", "van_b0"]


def _timer(device: str):
    if device == "cuda":
        import triton.testing

        return lambda fn: float(triton.testing.do_bench(fn, warmup=10, rep=40))

    def cpu_ms(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return cpu_ms


def run_cuda_tests() -> str:
    """The GPU-marked tests plus the kernel suite; returns pytest's summary line."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels", "tests/layers"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    print("\n".join(lines[-15:]), flush=True)
    return (lines[-1] if lines else "no output") + f" (exit {result.returncode})"


def cascade_rows(args, device: str, deadline: float) -> list[str]:
    from largekernel import kernels
    from largekernel.kernels.ops import plain_cascade

    bench = _timer(device)
    fused = "triton" if device == "cuda" else "cpu_nhwc"  # the dry run exercises the same code with the CPU op

    def ours(x, weights, biases, dilations):
        with kernels.backend(fused):
            return kernels.depthwise_cascade(x, weights, biases, dilations)

    peak = args.peak_gbps or (peak_bandwidth_gbps(torch.cuda.get_device_name()) if device == "cuda" else None)
    rows = []
    for dim, res in args.shapes:
        for k in args.kernel_sizes:
            for dtype_name in args.dtypes:
                if time.monotonic() > deadline:
                    rows.append(f"| {dim} | {res} | {k} | {dtype_name} | skipped: time budget | | | | | | | | |")
                    continue
                dtype = DTYPES[dtype_name]
                torch.manual_seed(0)
                weights, biases, dilations = _cascade_params("lska", dim, k, device, dtype)
                x = torch.randn(args.batch, dim, res, res, device=device, dtype=dtype, requires_grad=True)
                grad_out = torch.randn_like(x)
                leaves = [x, *weights, *biases]
                impls = {"eager": plain_cascade, "ours": ours}
                compile_left = time.monotonic() < deadline - args.compile_reserve_s
                if compile_left and not args.no_compile:
                    torch._dynamo.reset()
                    impls["compile"] = torch.compile(plain_cascade, dynamic=False)
                fwd, both = {}, {}
                for name, impl in impls.items():
                    # this iteration's tensors bound as defaults (B023), though both run before it ends
                    def forward(impl=impl, x=x, weights=weights, biases=biases, dilations=dilations):
                        with torch.no_grad():
                            return impl(x, weights, biases, dilations)

                    def forward_backward(
                        impl=impl,
                        x=x,
                        weights=weights,
                        biases=biases,
                        dilations=dilations,
                        leaves=leaves,
                        grad_out=grad_out,
                    ):
                        return torch.autograd.grad(impl(x, weights, biases, dilations), leaves, grad_out)

                    fwd[name], both[name] = bench(forward), bench(forward_backward)
                gb = x.numel() * x.element_size() / 1e9

                def bw(ms: float, tensors: int, gb: float = gb) -> str:
                    return f"{100 * tensors * gb / (ms / 1e3) / peak:.0f}%" if peak else "n/a"

                comp_f = f"{fwd['compile']:.3f}" if "compile" in fwd else "skipped"
                comp_b = f"{both['compile']:.3f}" if "compile" in both else "skipped"
                rows.append(
                    f"| {dim} | {res} | {k} | {dtype_name} | {fwd['eager']:.3f} | {comp_f} | {fwd['ours']:.3f} "
                    f"| {fwd['eager'] / fwd['ours']:.2f}x | {bw(fwd['ours'], 2)} | {both['eager']:.3f} | {comp_b} "
                    f"| {both['ours']:.3f} | {both['eager'] / both['ours']:.2f}x | {bw(both['ours'], 5)} |"
                )
                print(rows[-1], flush=True)
    return rows


def model_rows(args, device: str, deadline: float) -> list[str]:
    import largekernel as lk
    from largekernel import kernels

    rows = []
    for name in args.models:
        if time.monotonic() > deadline:
            rows.append(f"| {name} | skipped: time budget | | |")
            continue
        torch.manual_seed(0)
        build = {} if not args.dry_run else {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "num_classes": 10}
        model = lk.create_model(name, **build).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        images = torch.randn(args.model_batch, 3, args.image_size, args.image_size, device=device)
        labels = torch.randint(0, 10, (args.model_batch,), device=device)

        def step(model=model, images=images, labels=labels, optimizer=optimizer):  # bound: B023
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        speed = {}
        for label in ("torch", "auto"):
            with kernels.backend(label):
                for _ in range(args.warmup_steps):
                    step()
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                if device == "cuda":
                    torch.cuda.synchronize()
                speed[label] = args.steps * args.model_batch / (time.perf_counter() - start)
        chosen = sorted(set(kernels.autotune_choices().values()))
        rows.append(
            f"| {name} | {speed['torch']:.1f} | {speed['auto']:.1f} | {speed['auto'] / speed['torch']:.2f}x "
            f"(auto chose: {', '.join(chosen) or 'nothing timed'}) |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no tests: checks the script")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument(
        "--compile-reserve-s",
        type=float,
        default=150.0,
        help="stop adding torch.compile columns when less than this is left",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-gbps", type=float, default=None)
    args = parser.parse_args(argv)
    start = time.monotonic()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        args.shapes, args.kernel_sizes, args.dtypes, args.batch = [(4, 9)], [7], ["fp32"], 2
        args.models, args.model_batch, args.image_size, args.steps, args.warmup_steps = ["van_lska_tiny"], 2, 32, 1, 1
        args.no_compile = True
    else:
        args.shapes, args.kernel_sizes, args.dtypes, args.batch = SHAPES, KERNELS, list(DTYPES), 32
        args.models, args.model_batch, args.image_size, args.steps, args.warmup_steps = MODELS, 64, 224, 10, 3
    deadline = start + args.budget_s
    tests = "skipped (dry run)" if args.dry_run or args.skip_tests else run_cuda_tests()
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: not a GPU figure)"
    lines = [
        f"## GPU check: {name}, torch {torch.__version__}",
        "",
        f"Tests (tests/kernels, tests/layers): {tests}",
        "",
        f"### LSKA depthwise cascade, batch {args.batch} (median ms; speed-up = eager / fused; BW = fused vs peak)",
        "",
        "| dim | HxW | k | dtype | fwd eager | fwd compile | fwd fused | fwd speed-up | fwd BW | "
        "f+b eager | f+b compile | f+b fused | f+b speed-up | f+b BW |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += cascade_rows(args, device, deadline)
    lines += [
        "",
        f"### Training, {args.image_size}x{args.image_size}, bf16 autocast, batch {args.model_batch} (images/s)",
        "",
        "| model | eager (backend torch) | auto | auto / eager |",
        "|---|---|---|---|",
    ]
    lines += model_rows(args, device, deadline + 60)
    lines += ["", f"Total {time.monotonic() - start:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
