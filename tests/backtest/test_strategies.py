"""Hand-computed cases for TrueBreakout and Fakeout under the execution model, in every phase."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.backtest import kernels as k
from workbench.backtest.execution import ExecutionModel
from workbench.backtest.phases import PHASES, run_phase
from workbench.backtest.results import backtest
from workbench.backtest.strategies import Fakeout, TrueBreakout, pack_params
from workbench.errors import ConfigError

FLAT = (100.0, 100.5, 99.5, 100.0, 10.0)
FREE = ExecutionModel(fee_bp=0.0, slippage_bp=0.0, risk_per_trade=0.001)
BASE = dict(lookback=2, vol_window=2, vol_mult=1.5, stop_bp=100.0, target_bp=200.0, max_hold=10)


def trades_all_phases(bars, strategy, execution):
    """The trade records of every phase; asserts they are identical and returns one set."""
    p = pack_params(strategy, execution)
    runs = [run_phase(ph, bars, p) for ph in sorted(PHASES)]
    for ph, raw in enumerate(runs[1:], start=1):
        np.testing.assert_array_equal(raw.trades, runs[0].trades, err_msg=f"phase {ph}")
        np.testing.assert_array_equal(raw.mtm, runs[0].mtm, err_msg=f"phase {ph}")
    return runs[0]


def only_trade(raw):
    assert raw.trades.shape[0] == 1, raw.trades
    return dict(zip(("sym", "entry", "exit", "side", "entry_px", "exit_px", "reason", "held",
                     "pnl"), raw.trades[0].tolist(), strict=True))


def test_long_breakout_exits_at_target_next_open(make_bars):
    bars = make_bars([FLAT, FLAT,
                      (100.0, 101.2, 99.8, 101.0, 30.0),   # close > 100.5, 2 x 30 >= 1.5 x 20
                      (101.5, 102.0, 101.0, 102.0, 10.0),  # entry fill at the open: 101.5
                      (102.0, 104.5, 102.0, 104.0, 10.0),  # close 104 >= 101.5 x 1.02 = 103.53
                      (104.2, 104.5, 103.0, 103.5, 10.0),  # exit fill at the open: 104.2
                      (103.5, 103.6, 103.4, 103.5, 10.0)])
    raw = trades_all_phases(bars, TrueBreakout(**BASE), FREE)
    t = only_trade(raw)
    assert (t["entry"], t["exit"], t["side"], t["held"]) == (3, 5, 1.0, 2.0)
    assert (t["entry_px"], t["exit_px"]) == (101.5, 104.2)
    assert k.REASONS[int(t["reason"])] == "target"
    notional = 0.001 / 0.01
    assert t["pnl"] == pytest.approx(notional * 2.7 / 101.5, rel=1e-12)
    expected_mtm = notional / 101.5 * np.array([0, 0, 0, 0.5, 2.0, 0.2, 0])
    np.testing.assert_allclose(raw.mtm[0], expected_mtm, rtol=1e-12, atol=1e-15)
    res = backtest(bars, TrueBreakout(**BASE), FREE)
    assert res.trades["reason"].to_list() == ["target"]
    assert res.equity["equity"][-1] == pytest.approx(1.0 + t["pnl"], rel=1e-12)
    assert res.turnover == pytest.approx(2 * notional)


def test_short_breakout_stopped_with_fee_and_slippage_in_bp(make_bars):
    ex = ExecutionModel(fee_bp=10.0, slippage_bp=5.0, risk_per_trade=0.001)
    bars = make_bars([FLAT, FLAT,
                      (100.0, 100.2, 98.9, 99.0, 30.0),    # close 99 < 99.5: short
                      (98.8, 99.5, 98.5, 99.0, 10.0),      # sell at 98.8 x (1 - 5 bp)
                      (99.0, 100.0, 99.0, 99.9, 10.0),     # close 99.9 >= entry x 1.01: stop
                      (100.0, 100.2, 99.8, 100.0, 10.0),   # buy back at 100 x (1 + 5 bp)
                      (100.0, 100.1, 99.9, 100.0, 10.0)])
    t = only_trade(trades_all_phases(bars, TrueBreakout(**BASE), ex))
    entry, exit_ = 98.8 * (1 - 5e-4), 100.0 * (1 + 5e-4)
    assert (t["entry"], t["exit"], t["side"]) == (3, 5, -1.0)
    assert t["entry_px"] == pytest.approx(entry, rel=1e-15)
    assert t["exit_px"] == pytest.approx(exit_, rel=1e-15)
    assert k.REASONS[int(t["reason"])] == "stop"
    assert t["pnl"] == pytest.approx(0.1 * (-(exit_ - entry) / entry - 2 * 10e-4), rel=1e-12)
    res = backtest(bars, TrueBreakout(**BASE), ex)
    assert res.pnl == pytest.approx(t["pnl"], rel=1e-12)
    assert res.equity["equity"][-1] - 1.0 == pytest.approx(t["pnl"], rel=1e-9)


def test_time_exit_after_max_hold_bars(make_bars):
    quiet = (101.6, 101.7, 101.5, 101.6, 10.0)
    bars = make_bars([FLAT, FLAT, (100.0, 101.2, 99.8, 101.0, 30.0), quiet, quiet,
                      (101.7, 101.8, 101.6, 101.7, 10.0), quiet])
    t = only_trade(trades_all_phases(bars, TrueBreakout(**{**BASE, "max_hold": 2}), FREE))
    assert (t["entry"], t["exit"], t["held"], t["exit_px"]) == (3, 5, 2.0, 101.7)
    assert k.REASONS[int(t["reason"])] == "time"


def test_no_trade_without_volume_confirmation(make_bars):
    bars = make_bars([FLAT, FLAT, (100.0, 101.2, 99.8, 101.0, 14.0),  # 2 x 14 < 1.5 x 20
                      (101.5, 102.0, 101.0, 102.0, 10.0), FLAT])
    assert trades_all_phases(bars, TrueBreakout(**BASE), FREE).trades.shape[0] == 0


def test_fakeout_fades_a_break_that_closes_back_inside_and_ends_at_last_close(make_bars):
    rows = [FLAT, FLAT,
            (100.0, 101.2, 99.8, 101.0, 30.0),   # up break of 100.5
            (101.0, 101.1, 100.6, 100.8, 10.0),  # still above: 1 bar after the break
            (100.8, 100.9, 100.1, 100.2, 10.0),  # back below 100.5 within 2 bars: fade (short)
            (100.1, 100.2, 99.9, 100.0, 10.0),   # short fill at 100.1
            (100.0, 100.0, 99.7, 99.8, 10.0)]    # last bar: closed at its close (END)
    t = only_trade(trades_all_phases(make_bars(rows), Fakeout(**BASE, confirm=2), FREE))
    assert (t["entry"], t["exit"], t["side"], t["entry_px"], t["exit_px"]) == (5, 6, -1.0,
                                                                               100.1, 99.8)
    assert k.REASONS[int(t["reason"])] == "end"
    late = [*rows[:4],
            (100.8, 100.9, 100.6, 100.7, 10.0),  # 2 bars after: still above
            (100.7, 100.7, 100.1, 100.2, 10.0),  # back inside, but too late
            rows[6]]
    assert trades_all_phases(make_bars(late), Fakeout(**BASE, confirm=2), FREE).trades.size == 0
    # the same break, traded as a true breakout, goes long at the next open
    t = only_trade(trades_all_phases(make_bars(rows), TrueBreakout(**BASE), FREE))
    assert (t["entry"], t["side"], t["entry_px"]) == (3, 1.0, 101.0)


def test_fill_waits_for_the_next_bar_with_data(make_bars):
    rows = [FLAT, FLAT, (100.0, 101.2, 99.8, 101.0, 30.0), (101.5, 102.0, 101.0, 101.6, 10.0),
            (101.6, 101.7, 101.5, 101.6, 10.0)]
    bars = make_bars(rows, minutes=[0, 1, 2, 5, 6])  # a 2-minute pause after the signal
    assert not bars.has_data[0, 3:5].any()
    t = only_trade(trades_all_phases(bars, TrueBreakout(**BASE), FREE))
    assert (t["entry"], t["entry_px"], t["exit"]) == (5, 101.5, 6)


def test_invalid_parameters_are_refused(make_bars):
    with pytest.raises(ConfigError, match="lookback"):
        TrueBreakout(lookback=0)
    with pytest.raises(ConfigError, match="confirm"):
        Fakeout(confirm=0)
    with pytest.raises(ConfigError, match="fee_bp"):
        ExecutionModel(fee_bp=-1)
    with pytest.raises(ConfigError, match="phase"):
        run_phase(7, make_bars([FLAT]), pack_params(TrueBreakout(), FREE))
