"""Every phase gives identical trades on the real 16-symbol Binance set; result invariants."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workbench.backtest.execution import ExecutionModel
from workbench.backtest.phases import python_bars, run_phase
from workbench.backtest.results import backtest
from workbench.backtest.strategies import Fakeout, TrueBreakout, pack_params

STRATEGIES = [TrueBreakout(), Fakeout(lookback=30, vol_mult=2.5, confirm=3)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["breakout", "fakeout"])
def test_all_phases_identical_on_real_bars(binance_bars, strategy) -> None:
    start = int(binance_bars.first_t.max())  # ADA starts last: from there all 16 trade
    bars = binance_bars.window(start, start + 24 * 60)
    p = pack_params(strategy, ExecutionModel())
    pb = python_bars(bars)
    runs = {ph: run_phase(ph, bars, p, pb) for ph in range(5)}
    ref = runs[3]
    traded = set(ref.trades[:, 0].astype(int).tolist())
    assert traded == set(range(16)), f"symbols without trades: {set(range(16)) - traded}"
    for ph, raw in runs.items():
        np.testing.assert_array_equal(raw.trades, ref.trades, err_msg=f"phase {ph}")
        np.testing.assert_array_equal(raw.mtm, ref.mtm, err_msg=f"phase {ph}")


def test_kernel_phases_identical_on_30_days_and_results_add_up(binance_bars) -> None:
    bars = binance_bars.days(0, 30)
    strat = Fakeout()
    p = pack_params(strat, ExecutionModel())
    a, b = run_phase(3, bars, p), run_phase(4, bars, p)
    np.testing.assert_array_equal(a.trades, b.trades)
    np.testing.assert_array_equal(a.mtm, b.mtm)
    res = backtest(bars, strat, phase=4)
    tr = res.trades
    assert tr.height == a.trades.shape[0] > 1000
    assert (tr["exit_time"] >= tr["entry_time"]).all()
    assert set(tr["reason"].unique()) <= {"stop", "target", "time", "end"}
    # at most one open position per symbol: trades of a symbol never overlap
    overlap = tr.sort("symbol", "entry_time").with_columns(
        prev_exit=pl.col("exit_time").shift(1).over("symbol"))
    assert (overlap["prev_exit"].is_null() | (overlap["entry_time"] > overlap["prev_exit"])).all()
    assert res.equity["equity"][-1] - 1.0 == pytest.approx(tr["pnl"].sum(), rel=1e-9)
    by_sym = tr.group_by("symbol").agg(pl.col("pnl").sum()).sort("symbol")
    per = res.per_symbol.filter(pl.col("trades") > 0).sort("symbol")
    np.testing.assert_allclose(per["pnl"].to_numpy(), by_sym["pnl"].to_numpy(), rtol=1e-12)
    eq = res.equity["equity"]
    dd = ((eq.cum_max() - eq) / eq.cum_max()).max()
    assert res.max_drawdown == pytest.approx(dd)
    assert res.turnover == pytest.approx(2 * tr["notional"].sum())
    step = np.diff(np.concatenate([[1.0], eq.to_numpy()]))
    assert res.sharpe == pytest.approx(step.mean() / step.std(ddof=1) * np.sqrt(525_600))
