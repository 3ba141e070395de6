import json
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def official_state_dicts() -> dict:
    """The published variants' parameter counts and state_dict shapes (../shared/reference)."""
    path = REFERENCE_DIR / "official_state_dicts.json"
    if not path.exists():
        pytest.skip(f"reference file not found: {path}")
    return json.loads(path.read_text())
