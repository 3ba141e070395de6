"""The command's help is built without importing torch (or any heavy library)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from largekernel.cli import SUBCOMMANDS

HEAVY = ("torch", "lightning", "timm", "ultralytics", "onnxruntime", "matplotlib")

PROBE = """
import sys
from largekernel.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("imported:", ",".join(name for name in {heavy!r} if name in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in SUBCOMMANDS]], ids=" ".join)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "imported:", (
        f"largekernel {' '.join(argv)} imported: {result.stdout}"
    )


def test_import_largekernel_imports_no_torch() -> None:
    code = "import sys, largekernel; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
