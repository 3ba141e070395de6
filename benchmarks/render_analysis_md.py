"""Writes docs/analysis.md from the files benchmarks/make_analysis_figures.sh produced (no measuring here)."""

from __future__ import annotations

import csv
import platform
import sys
from pathlib import Path

import torch

DOCS = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")


def rows(name: str) -> list[dict]:
    with (DOCS / name).open() as handle:
        return list(csv.DictReader(handle))


def number(value: str, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value in ("", "None") else f"{float(value) / scale:.{digits}f}"


def profile_table() -> str:
    lines = [
        "| kernel | design | params (M) | GMACs @224 | forward ms | fwd+bwd ms | images/s | peak MiB (fwd+bwd) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows("profile_van_tiny.csv"):
        lines.append(
            f"| {r['kernel_size']} | {r['attention']} | {number(r['params'], 1e6, 3)} | {number(r['macs'], 1e9, 3)} "
            f"| {number(r['forward_ms'])} | {number(r['forward_backward_ms'])} | {number(r['throughput'])} "
            f"| {number(r['peak_memory_mib'], digits=0)} |"
        )
    return "\n".join(lines)


def scaling_table() -> str:
    lines = [
        "| input | model / stage-3 mixer | params | GMACs | GMACs incl. attention matmuls | forward ms | fwd+bwd ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows("scaling.csv"):
        lines.append(
            f"| {r['resolution']} | {r['label']} | {int(r['params']):,} | {number(r['macs'], 1e9, 3)} "
            f"| {number(r['macs_with_attention'], 1e9, 3)} | {number(r['forward_ms'])} | {number(r['forward_backward_ms'])} |"
        )
    return "\n".join(lines)


def text(name: str) -> str:
    return (DOCS / name).read_text().strip()


def main() -> None:
    first = rows("profile_van_tiny.csv")[0]
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    setting = f"{first['device']} {first['dtype']}, batch {first['batch']}, torch {torch.__version__}, {machine}"
    page = f"""# Analysis: cost, scaling and effective receptive fields

Regenerate everything on this page (tables, CSVs, PNGs) with one command from the repository root:

```bash
bash benchmarks/make_analysis_figures.sh            # DEVICE=cuda for a GPU
```

Measured on: {setting}. Latency figures are medians of single-threaded
`torch.utils.benchmark` runs on the machine at hand; they were taken on a small shared CPU, so read
their *ratios* and trends, not their absolute values. Parameters and MACs are exact (the papers'
FLOPs are MACs).

## VAN-Tiny with each attention design as the kernel grows

`largekernel profile --model van_lska_tiny --kernel-sizes 7 23 53 101` (the LSKA paper's
size/speed-versus-kernel comparison, extended to k=101, which the reference code cannot build).
The parameter and MAC columns equal ARCHITECTURES.md's VAN-Tiny table for k = 7, 23, 53 (a test
checks this). Peak memory is the most that PyTorch's allocator had handed out at once during one
forward+backward step, above what was allocated before it: activations, tensors saved for backward,
gradients, and the buffers operators allocate for themselves (the backward pass of dense large
kernels allocates large temporary ones, which is most of LKA-trivial's extra memory). CUDA reads
`torch.cuda.max_memory_allocated`. On the CPU PyTorch keeps no allocator statistics, so the step runs
once more under `torch.profiler` with `profile_memory=True` (no stacks or shapes recorded: it costs
about one more step) and the peak of the running sum of its allocation and free events is taken;
kineto's start/stop log lines are kept off the terminal. Not counted: memory allocated outside
PyTorch's allocator (oneDNN's and BLAS's own scratch space, NumPy) and memory the allocator keeps
cached. Every measurement of a row (warm-up, memory step, timings) runs at `--threads` intra-op
threads, default 1 (`torch.utils.benchmark`'s default, for repeatable timings); memory can grow with
threads where an operator allocates a buffer per thread (LKA-trivial at k=53: 100 MiB at 1 thread,
112 MiB at 2). `--no-memory` skips the measurement. Tests check the number against a step whose peak
can be counted by hand (Linear-ReLU-Linear: four activations) and against all tensors a VAN saves
for backward (a lower bound).

On a CPU the forward pass of the attention layers runs the library's channels-last path, so even
LKA-trivial's dense 101x101 kernels stay within a few times LSKA's forward time; the backward pass
of dense large kernels does not, and forward+backward is where LSKA's linear cost shows most.

![VAN-Tiny profile](profile_van_tiny.png)

{profile_table()}

## Cost against input resolution: convolutional attention against self-attention

`largekernel profile --scaling --resolutions 224 512 1024`: whole models, and the token mixers of
SMT-T's stage 3 (stride 16, 256 channels) side by side: VAN's LKA (k=21), VAN-LSKA's LSKA (k=23),
SMT's SAM and SMT's multi-head self-attention (MSA). "GMACs" follows the published convention
(convolutions and linear layers; SMT's published 2.4 G leaves the attention matmuls out);
"incl. attention matmuls" adds `QK^T` and `AV`, which grow with the square of the token count.
Every convolutional mixer's MACs grow 4x per doubling of the side; MSA's attention matmuls grow 16x.

![scaling](scaling.png)

{scaling_table()}

## Effective receptive fields

`largekernel erf` follows RepLKNet's method (gradient of the central point of the last feature map
with respect to the input, relu'd, summed over channels and averaged over images, shown as
`log10(x + 1)` rescaled); the area ratio for `t` is the area of the smallest centred square that
holds more than `t` of that map, over the input area. The models below are at random
initialisation (no trained weights ship offline; `--checkpoint` gives trained ones). At
initialisation VAN's residual branches are scaled by a layer scale of 0.01, so the map is dominated
by the square footprint of the patch-embedding convolutions, and the kernel size changes it little:
the comparison the LSKA paper draws (larger kernels, larger ERF) needs trained weights
(`largekernel erf --model van_b0 --checkpoint van_b0.pth --images DIR`).

![ERF of VAN-Tiny](erf_van_tiny.png)

```
{text("erf_van_tiny.txt")}
```

Single attention layers (random weights): the support is exactly `k x k` for every design, which
the tests check with positive weights.

![ERF of single layers](erf_layers.png)

```
{text("erf_layers.txt")}
```
"""
    (DOCS / "analysis.md").write_text(page)
    print(f"wrote {DOCS / 'analysis.md'}")


if __name__ == "__main__":
    main()
