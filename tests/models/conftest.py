"""Fixtures for the model tests: the published reference facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_state_dicts.json"
if not REFERENCE.is_file():  # worktrees live beside /work/shared; a main checkout may sit elsewhere
    REFERENCE = Path("/work/shared/reference/official_state_dicts.json")


@pytest.fixture(scope="session")
def official() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"reference file {REFERENCE} not available")
    return json.loads(REFERENCE.read_text())
