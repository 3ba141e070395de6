"""Fixtures for the model tests: the published reference facts."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def official(official_state_dicts: dict) -> dict:
    return official_state_dicts
