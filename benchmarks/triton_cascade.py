"""Fused Triton depthwise cascade vs PyTorch eager vs torch.compile, side by side on one GPU.

    PYTHONPATH=src python benchmarks/triton_cascade.py                 # LSKA, all shapes/kernels/dtypes
    PYTHONPATH=src python benchmarks/triton_cascade.py --attention lka --dtypes bf16 --kernel-sizes 23

Per shape (batch 32; VAN's stages: dim 64/128/320/512 at 56/28/14/7), kernel size and dtype it
times the depthwise cascade (the part the kernels replace, before conv1) forward and
forward+backward (gradients of input, weights and biases) with ``triton.testing.do_bench``
(L2 flushed between runs), and prints the speed-ups and the achieved memory bandwidth as a fraction
of the GPU's peak. The bandwidth counts the unavoidable traffic only: forward reads x and writes
the output (2 tensors), forward+backward additionally reads x and grad_out and writes grad_x
(5 tensors in all); weights are negligible.

Model training throughput (eager vs auto) is in ``benchmarks/gpu_check.py``. Needs a CUDA GPU and
triton; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import sys

import torch

# Peak DRAM bandwidth (GB/s) by device-name fragment, most specific first.
PEAK_GBPS = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5
    ("GH200", 4000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("RTX 4090", 1008.0),
]
SHAPES = [(64, 56), (128, 28), (320, 14), (512, 7)]  # VAN-b0 / VAN-LSKA-Tiny stages
DEVICE = "cuda"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def peak_bandwidth_gbps(name: str) -> float | None:
    for fragment, gbps in PEAK_GBPS:
        if fragment.lower() in name.lower():
            return gbps
    return None


def _cascade_params(attention: str, dim: int, kernel_size: int, device: str, dtype: torch.dtype):
    from largekernel import LKA, LSKA

    module = (LSKA if attention == "lska" else LKA)(dim, kernel_size).to(device)
    if attention == "lska":
        convs = [module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v]
        d = module.decomposition.dilation
        dilations = [1, 1, d, d]
    else:
        convs = [module.conv0, module.conv_spatial]
        dilations = [1, module.decomposition.dilation]
    # parameters in the activation dtype, as autocast would run the eager convolutions
    weights = [c.weight.detach().to(dtype).requires_grad_() for c in convs]
    biases = [c.bias.detach().to(dtype).requires_grad_() for c in convs]
    return weights, biases, dilations


def _bench_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100))


def _time_impl(impl, x, weights, biases, dilations, grad_out) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of one cascade implementation."""
    leaves = [x, *weights, *biases]

    def forward():
        with torch.no_grad():
            return impl(x, weights, biases, dilations)

    def forward_backward():
        return torch.autograd.grad(impl(x, weights, biases, dilations), leaves, grad_out)

    return _bench_ms(forward), _bench_ms(forward_backward)


def _cells(times: dict[str, float], min_gb: float, peak_gbps: float | None) -> str:
    """eager / compile / ours times, speed-ups of ours, and ours' bandwidth as % of peak."""
    bw = f"{100 * min_gb / (times['ours'] / 1e3) / peak_gbps:5.0f}" if peak_gbps else "  n/a"
    comp = times.get("compile", float("nan"))
    return (
        f"{times['eager']:9.3f} {comp:8.3f} {times['ours']:8.3f} "
        f"{times['eager'] / times['ours']:5.2f} {comp / times['ours']:5.2f} {bw}"
    )


def bench_cascades(args) -> None:
    from largekernel.kernels.triton_cascade import depthwise_cascade, plain_cascade

    name = torch.cuda.get_device_name()
    peak = args.peak_gbps or peak_bandwidth_gbps(name)
    print(f"device: {name}; peak DRAM bandwidth: {f'{peak:.0f} GB/s' if peak else 'unknown (use --peak-gbps)'}")
    print(
        f"{args.attention.upper()} depthwise cascade, batch {args.batch}; times in ms (median), "
        f"speed-up = eager / ours and compile / ours; BW% = minimum traffic / time / peak"
    )
    header = (
        f"{'dim':>4} {'HxW':>6} {'k':>3} {'dtype':>5} | {'fwd eager':>9} {'compile':>8} {'ours':>8} "
        f"{'xE':>5} {'xC':>5} {'BW%':>5} | {'f+b eager':>9} {'compile':>8} {'ours':>8} {'xE':>5} {'xC':>5} "
        f"{'BW%':>5}"
    )
    print(header)
    print("-" * len(header))
    for dim, res in SHAPES:
        for kernel_size in args.kernel_sizes:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                torch.manual_seed(0)
                weights, biases, dilations = _cascade_params(args.attention, dim, kernel_size, DEVICE, dtype)
                x = torch.randn(args.batch, dim, res, res, device=DEVICE, dtype=dtype)
                if args.channels_last:
                    x = x.to(memory_format=torch.channels_last)
                x.requires_grad_(True)
                grad_out = torch.randn_like(x)
                impls = {"eager": plain_cascade, "ours": depthwise_cascade}
                if not args.no_compile:
                    torch._dynamo.reset()  # a fresh compile per configuration, no recompile limit hit
                    impls["compile"] = torch.compile(plain_cascade, dynamic=False)
                fwd, fwd_bwd = {}, {}
                for impl_name, impl in impls.items():
                    fwd[impl_name], fwd_bwd[impl_name] = _time_impl(impl, x, weights, biases, dilations, grad_out)
                tensor_gb = x.numel() * x.element_size() / 1e9
                print(
                    f"{dim:>4} {f'{res}x{res}':>6} {kernel_size:>3} {dtype_name:>5} | "
                    f"{_cells(fwd, 2 * tensor_gb, peak)} | {_cells(fwd_bwd, 5 * tensor_gb, peak)}",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", choices=["lska", "lka"], default="lska")
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[7, 23, 35, 53])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16", "fp32"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels-last", action="store_true", help="time channels_last inputs")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--peak-gbps", type=float, default=None, help="override the detected peak bandwidth")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/triton_cascade.py needs CUDA (a GPU); none is available here.", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401 - only to check that triton is installed
    except ImportError:
        print("benchmarks/triton_cascade.py needs triton: pip install triton", file=sys.stderr)
        return 2
    bench_cascades(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
