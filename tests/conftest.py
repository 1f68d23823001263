"""Shared fixtures: the real recordings, found through workbench.shared_data only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.shared_data import shared_data_dir


def _need_shared() -> Path:
    root = shared_data_dir()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the shared data directory is missing")
        pytest.skip("real recordings (../shared/data) not on this machine")
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real recordings; fails under CI when absent, skips otherwise."""
    return _need_shared()
