"""Helpers for the backtest tests: tiny hand-made bar sets and the real 16-symbol set."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from workbench.backtest.bars import MINUTE_NS, Bars, align, load_bars

T0 = 1_746_000_000 // 60 * 60 * 1_000_000_000  # a minute boundary (2025-04-30)


def _make_bars(rows: list[tuple[float, float, float, float, float]], symbol: str = "X",
              minutes: list[int] | None = None) -> Bars:
    """One symbol's (open, high, low, close, volume) rows at consecutive minutes from T0 (or at
    the given minute offsets)."""
    minutes = minutes if minutes is not None else list(range(len(rows)))
    df = pl.DataFrame(
        {"ts_ns": [T0 + m * MINUTE_NS for m in minutes],
         **{c: [float(r[i]) for r in rows]
            for i, c in enumerate(("open", "high", "low", "close", "volume"))}}
    )
    return align({symbol: df})


@pytest.fixture(scope="session")
def make_bars():
    """Build one symbol's aligned Bars from (open, high, low, close, volume) rows."""
    return _make_bars


@pytest.fixture(scope="session")
def binance_bars(shared_data: Path) -> Bars:
    """The real 16-symbol Binance USD-M 1-minute set, aligned."""
    return load_bars(shared_data / "bars" / "binance_usdm_futures_1m")
