"""benchmarks/gpu_check.py is correct by construction: its dry run (CPU, tiny sizes) writes the table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_dry_run_writes_one_markdown_table(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.md"
    assert module.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert "dry run: not a GPU figure" in text
    cascade = [line for line in text.splitlines() if line.startswith("| 4 | 9 | 7 | fp32 |")]
    assert len(cascade) == 1 and cascade[0].count("|") == 15
    model = [line for line in text.splitlines() if line.startswith("| van_lska_tiny |")]
    assert len(model) == 1 and "auto chose" in model[0]
