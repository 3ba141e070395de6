#!/usr/bin/env bash
# Regenerates every table and picture in docs/analysis.md (CPU by default; DEVICE=cuda for a GPU).
# Run from the repository root:  bash benchmarks/make_analysis_figures.sh
set -euo pipefail
export PYTHONPATH="${PYTHONPATH:-}:src"
DEVICE="${DEVICE:-cpu}"
OUT="${OUT:-docs}"
mkdir -p "$OUT"
lk() { python -m largekernel "$@"; }

# 1. VAN-Tiny with each attention design as the kernel grows (the LSKA paper's size/speed figure)
lk profile --model van_lska_tiny --kernel-sizes 7 23 53 101 --resolution 224 --device "$DEVICE" \
    --min-run-time 0.1 --csv "$OUT/profile_van_tiny.csv" --plot "$OUT/profile_van_tiny.png" | tee "$OUT/profile_van_tiny.txt"

# 2. cost against input resolution: whole models and SMT-T's stage-3 token mixers. On a CPU the
#    peak-memory step is one more forward+backward per row (tens of seconds at 1024 px): skipped there.
SCALING_MEMORY=""
if [ "$DEVICE" = cpu ]; then SCALING_MEMORY="--no-memory"; fi
lk profile --scaling --resolutions 224 512 1024 --scaling-models van_lska_tiny smt_t --device "$DEVICE" \
    --min-run-time 0.1 $SCALING_MEMORY --csv "$OUT/scaling.csv" --plot "$OUT/scaling.png" | tee "$OUT/scaling.txt"

# 3. effective receptive fields of VAN-Tiny with LSKA and LKA at growing kernels (random init: no
#    trained weights ship offline; pass --checkpoint for trained ones)
lk erf --model van_lska_tiny --attention lska lka --kernel-sizes 7 23 53 --images embedded --num-images 8 \
    --img-size 224 --device "$DEVICE" --no-progress --out "$OUT/erf_van_tiny.png" | tee "$OUT/erf_van_tiny.txt"

# 4. ERF of single attention layers: the support is exactly k x k for every design
lk erf --attention lska lka lska_trivial lka_trivial --kernel-sizes 7 23 53 --dim 8 --images embedded \
    --num-images 4 --img-size 96 --device "$DEVICE" --no-progress --out "$OUT/erf_layers.png" | tee "$OUT/erf_layers.txt"

# 5. the page that shows them
python benchmarks/render_analysis_md.py "$OUT"
