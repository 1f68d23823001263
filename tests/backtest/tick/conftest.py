"""Tick backtest fixtures: the converted Binance USD-M recording."""

from __future__ import annotations

import pytest

from workbench.backtest.tick.events import TickData, events_for

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"


@pytest.fixture(scope="session")
def usdm_events(shared_data, tmp_path_factory) -> TickData:
    """The converted Binance USD-M BTCUSDT recording (converted once per session)."""
    return events_for(shared_data / USDM, directory=tmp_path_factory.mktemp("tick"))
