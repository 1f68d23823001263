"""A sweep on a Dask LocalCluster equals the local run (processes and in-process)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from workbench.backtest.results import backtest
from workbench.backtest.strategies import TrueBreakout
from workbench.backtest.sweeps import METRICS, grid, sweep
from workbench.errors import ConfigError

GRID = {"lookback": [20, 60], "vol_mult": [2.0, 3.0]}


@pytest.fixture(scope="module")
def bars(binance_bars):
    return binance_bars.select(["BTC_USDT_USDT", "ADA_USDT_USDT", "SOL_USDT_USDT"]).days(5, 2)


def test_local_processes_equal_in_process_and_direct_backtests(bars) -> None:
    inproc = sweep(bars, TrueBreakout(), GRID, workers=1, progress=False)
    procs = sweep(bars, TrueBreakout(), GRID, workers=2, chunk=1, progress=False)
    assert_frame_equal(inproc, procs)
    assert inproc.height == 4 * 3
    assert inproc.columns[-len(METRICS):] == list(METRICS)
    one = inproc.filter((pl.col("lookback") == 60) & (pl.col("vol_mult") == 3.0))
    direct = backtest(bars, TrueBreakout(lookback=60, vol_mult=3.0))
    per = direct.per_symbol.sort("symbol")
    assert one.sort("symbol")["trades"].to_list() == per["trades"].to_list()
    assert one.sort("symbol")["pnl"].to_list() == pytest.approx(per["pnl"].to_list(), rel=1e-12)


def test_dask_local_cluster_equals_local_run(bars) -> None:
    distributed = pytest.importorskip("dask.distributed")
    local = sweep(bars, TrueBreakout(), GRID, workers=1, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout="20s") as client:
        remote = sweep(bars, TrueBreakout(), GRID, client=client, progress=False)
        by_address = sweep(bars, TrueBreakout(), {"lookback": [20]},
                           client=cluster.scheduler_address, progress=False)
    assert_frame_equal(local, remote)
    assert_frame_equal(local.filter((pl.col("lookback") == 20) & (pl.col("vol_mult") == 2.0)),
                       by_address)


def test_grid_refuses_unknown_parameters() -> None:
    assert len(grid(TrueBreakout(), GRID)) == 4
    with pytest.raises(ConfigError, match="no parameter"):
        grid(TrueBreakout(), {"confirm": [1, 2]})
