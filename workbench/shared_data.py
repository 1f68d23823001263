"""The one place that finds the real recorded exchange data.

`$WORKBENCH_SHARED_DATA` if set, else `../shared/data` beside the repository root. Tests and
benchmarks go through `shared_data_dir()` / `shared_path()`; the data is never copied into the
repository. Under CI (`CI` set) a missing directory is an error, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import SharedDataMissing

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared data directory, or None when it is not on this machine."""
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def shared_path(relative: str) -> Path:
    """Absolute path of `relative` (e.g. 'binance/hftbacktest/usdm/btcusdt_20240808.gz').

    Raises SharedDataMissing naming the directory or file that is not there.
    """
    root = shared_data_dir()
    if root is None:
        env = os.environ.get("WORKBENCH_SHARED_DATA")
        where = env or str(REPO_ROOT.parent / "shared" / "data")
        raise SharedDataMissing(
            f"real recordings not found at {where} (set WORKBENCH_SHARED_DATA to the directory)"
        )
    path = root / relative
    if not path.exists():
        raise SharedDataMissing(f"{path} is not in the shared data directory {root}")
    return path
