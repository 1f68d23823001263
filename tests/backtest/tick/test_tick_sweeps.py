"""Tick sweeps: the grid times days as one frame, the same wherever it runs."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.backtest.tick import ConstantLatency, TickConfig, convert
from workbench.backtest.tick.sweeps import run_task, tick_sweep
from workbench.errors import ConfigError

FUTURES = "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst"


@pytest.fixture(scope="module")
def day(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "fut.npy"
    convert(shared_data / FUTURES, out)
    return str(out)


def test_grid_times_days_in_process_and_on_processes(day):
    cfg = TickConfig(symbol="SUSHIUSDT", latency=ConstantLatency(500_000, 500_000))
    grid = {"qty": [1.0, 2.0], "queue": ["risk_averse", "power"]}
    here = tick_sweep([day, day], "quoter", grid, {"max_position": 10.0}, cfg, workers=1,
                      progress=False)
    assert here.height == 8
    assert set(here.columns) >= {"qty", "queue", "day", "fills", "total", "sharpe"}
    spread = here.group_by("qty", "queue").agg(pl.col("total").n_unique())
    assert spread["total"].to_list() == [1] * 4  # the same day twice: the same result
    assert here.filter(pl.col("qty") == 1.0)["orders"].min() > 0
    away = tick_sweep([day, day], "quoter", grid, {"max_position": 10.0}, cfg, workers=2,
                      progress=False)
    assert away.drop("events_per_s").equals(here.drop("events_per_s"))


def test_unknown_strategy_or_parameter(day):
    with pytest.raises(ConfigError, match="unknown strategy"):
        run_task(day, "nope", {}, TickConfig())
    with pytest.raises(ConfigError, match="quoter"):
        run_task(day, "quoter", {"bogus": 1}, TickConfig(symbol="SUSHIUSDT"))
