"""The analysis commands print their results and nothing of torch's or kineto's own chatter.

With a CUDA build of torch on a machine without a GPU, ``torch.profiler`` (kineto) writes
``USDT ... profiler_start``/``profiler_stop`` and ``ERROR ... gpuGetDeviceCount failed`` straight to
file descriptor 2, and importing ``torch.utils.benchmark`` logs ``No CUDA runtime is found``. Only a
separate process shows what a user's terminal gets, so the commands run in one child process.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

NOISE = re.compile(r"USDT|profiler_start|profiler_stop|gpuGetDeviceCount|No CUDA runtime|kineto|CUPTI", re.IGNORECASE)

SCRIPT = """
import json, sys
from largekernel.cli import main
commands = json.loads(sys.argv[1])
for command in commands:
    print("=== " + " ".join(command), flush=True)
    code = main(command)
    print("=== exit", code, flush=True)
"""


def test_profile_erf_and_models_print_no_profiler_or_cuda_lines(tmp_path):
    commands = [
        # whole model with memory: the CPU peak runs through torch.profiler
        [
            "profile",
            "--model",
            "van_lska_tiny",
            "--kernel-sizes",
            "7",
            "--designs",
            "lska",
            "--resolution",
            "64",
            "--min-run-time",
            "0.01",
            "--json",
        ],
        # modules alone: torch.utils.benchmark's timer
        [
            "profile",
            "--kernel-sizes",
            "7",
            "--designs",
            "lska",
            "--dim",
            "8",
            "--resolution",
            "8",
            "--min-run-time",
            "0.01",
        ],
        [
            "erf",
            "--attention",
            "lska",
            "--kernel-sizes",
            "7",
            "--num-images",
            "1",
            "--img-size",
            "32",
            "--no-progress",
            "--out",
            str(tmp_path / "erf.png"),
        ],
        ["models", "van_b0", "--macs"],
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("=== exit 0") == len(commands), result.stdout[-2000:] + result.stderr[-2000:]
    noisy = [line for line in (result.stdout + result.stderr).splitlines() if NOISE.search(line)]
    assert not noisy, noisy
    # the memory column is still measured (not dropped to keep the output clean)
    profile_json = result.stdout.split("=== profile --model")[1].split("\n", 1)[1].split("=== exit")[0]
    (row,) = json.loads(profile_json)
    assert row["peak_memory_mib"] > 1 and row["memory_method"] == "torch.profiler allocation events"
