#!/usr/bin/env bash
# The prepared GPU check (issue 12): on a CUDA machine, under 8 minutes, nothing installed beyond
# the project's own extras. Runs the CUDA tests, then benchmarks/gpu_check.py, which writes one
# markdown table (default gpu_check.md; first argument overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.md}"
python -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'" || {
    echo "gpu_check.sh needs a CUDA GPU, torch with CUDA and triton (pip install -e '.[test]')" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
timeout 470 python benchmarks/gpu_check.py --out "$out"
