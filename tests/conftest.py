import json
from pathlib import Path

import pytest
import torch

# copied from ../shared/reference so that a fresh clone runs every test
REFERENCE_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def official_state_dicts() -> dict:
    """The published variants' parameter counts and state_dict shapes (tests/data)."""
    return json.loads((REFERENCE_DIR / "official_state_dicts.json").read_text())
