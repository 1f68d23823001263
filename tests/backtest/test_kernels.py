"""The kernels: the O(1) running volume mean against polars; phase 3's walk (volume flags 4
symbols at a time, flag-to-flag jumps when flat, the tight holding loop, every mtm element
written) against phase 2, which applies the same rules bar by bar in the interpreter."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workbench.backtest import kernels as k
from workbench.backtest.bars import MINUTE_NS, align
from workbench.backtest.execution import ExecutionModel
from workbench.backtest.kernels import volume_mean
from workbench.backtest.phases import run_phase
from workbench.backtest.strategies import Fakeout, TrueBreakout, pack_params

T0 = 1_700_000_040 * 1_000_000_000  # a minute boundary (2023-11-14)
FREE = ExecutionModel(fee_bp=0.0, slippage_bp=0.0, risk_per_trade=0.001)
SMALL = dict(lookback=2, vol_window=2, vol_mult=1.5, stop_bp=100.0, target_bp=200.0,
             max_hold=10)


def test_volume_mean_equals_polars_rolling_mean(binance_bars) -> None:
    s = binance_bars.symbols.index("SOL_USDT_USDT")
    for m in (1, 20, 60):
        ours = volume_mean(binance_bars.volume[s], binance_bars.has_data[s], m)
        mask = binance_bars.has_data[s]
        ref = pl.Series(binance_bars.volume[s, mask]).rolling_mean(m).shift(1).to_numpy()
        np.testing.assert_allclose(ours[mask], ref, rtol=1e-9, equal_nan=True)
        assert np.isnan(ours[~mask]).all()


def test_volume_mean_skips_bars_without_data() -> None:
    rng = np.random.default_rng(7)
    v = rng.lognormal(3.0, 1.5, 5_000)
    mask = rng.random(5_000) > 0.3
    ours = volume_mean(v, mask, 25)
    ref = pl.Series(v[mask]).rolling_mean(25).shift(1).to_numpy()
    np.testing.assert_allclose(ours[mask], ref, rtol=1e-9, equal_nan=True)


def _kernel_on_garbage(bars, p):
    """Phase 3 with mtm pre-filled with NaN: the walk must write every element."""
    mtm = np.full((bars.n_symbols, bars.n_bars), np.nan)
    trades = k.run_serial(bars.open, bars.high, bars.low, bars.close, bars.volume,
                          bars.has_data, bars.last_t, p, np.zeros((bars.n_symbols, k.N_STATE)),
                          mtm)
    return trades, mtm


@pytest.mark.parametrize("strategy", [TrueBreakout(), Fakeout(lookback=30, confirm=3)],
                         ids=["breakout", "fakeout"])
def test_walk_equals_phase_2_on_real_bars_and_writes_every_mtm(binance_bars, strategy) -> None:
    # 16 symbols x 1 day from the first minute: some start later (not gap-free from bar 0)
    bars = binance_bars.window(0, 1440)
    p = pack_params(strategy, ExecutionModel())
    ref = run_phase(2, bars, p)
    trades, mtm = _kernel_on_garbage(bars, p)
    assert trades.shape[0] > 100
    np.testing.assert_array_equal(trades, ref.trades)
    np.testing.assert_array_equal(mtm, ref.mtm)


def test_four_lane_flags_equal_one_symbol_flags(binance_bars) -> None:
    bars = binance_bars.days(0, 30)
    p = pack_params(TrueBreakout(), ExecutionModel())
    mask = bars.has_data
    first = np.argmax(mask, axis=1)
    gap_free = [s for s in range(bars.n_symbols)
                if mask[s].sum() == bars.last_t[s] - first[s] + 1][:4]
    assert len(gap_free) == 4 and len({int(first[s]) for s in gap_free}) > 1
    four = np.zeros((4, bars.n_bars), dtype=np.bool_)
    ready = k.volume_flags4(
        tuple(bars.volume[s] for s in gap_free), tuple(four[i] for i in range(4)),
        tuple(int(first[s]) for s in gap_free), tuple(int(bars.last_t[s]) for s in gap_free),
        p, tuple(bars.close[s] for s in gap_free))
    for i, s in enumerate(gap_free):
        one = np.empty(bars.n_bars, dtype=np.bool_)
        r = k.symbol_flags(bars.open[s], bars.high[s], bars.low[s], bars.close[s],
                           bars.volume[s], mask[s], np.empty(bars.n_bars), p, one)
        assert ready[i] == r
        np.testing.assert_array_equal(four[i], one, err_msg=f"symbol {s}")
        assert one.sum() > 1000


def _bar(o: float, c: float, v: float, hi: float | None = None, lo: float | None = None):
    return (o, hi if hi is not None else max(o, c) + 0.1, lo if lo is not None else
            min(o, c) - 0.1, c, v)


def _frame(rows, minutes):
    return pl.DataFrame({"ts_ns": [T0 + m * MINUTE_NS for m in minutes],
                         **{col: [float(r[i]) for r in rows]
                            for i, col in enumerate(("open", "high", "low", "close", "volume"))}})


def test_hand_built_edges_walk_equals_phase_2_and_hand_values() -> None:
    flat = _bar(100.0, 100.0, 10.0)
    brk = _bar(100.0, 101.0, 40.0)  # close 101 > 100.1, 2 x 40 >= 1.5 x 20
    hold = _bar(101.5, 101.6, 10.0)
    frames = {
        # a gap at minute 2, inside the volume window of the bar at minute 3; the break is on
        # the first bar after warm-up (the third bar with data), the position is still open on
        # the symbol's last bar (END at its close)
        "GAP": _frame([flat, flat, brk, hold, hold, _bar(101.6, 101.8, 10.0)], [0, 1, 3, 4, 5, 6]),
        # four gap-free symbols starting at different minutes (the 4-lane flags), each breaking
        # on its first ready bar, the last one also on its last bar (no fill: END needs a
        # position, a decision there has no next bar)
        **{f"L{i}": _frame([flat, flat, brk, hold, hold, hold, flat, flat, brk],
                           list(range(i, i + 9))) for i in range(4)},
    }
    bars = align(frames)
    assert not bars.has_data[0, 2] and bars.has_data[1:, :].sum() == 36
    p = pack_params(TrueBreakout(**SMALL), FREE)
    ref = run_phase(2, bars, p)
    trades, mtm = _kernel_on_garbage(bars, p)
    np.testing.assert_array_equal(trades, ref.trades)
    np.testing.assert_array_equal(mtm, ref.mtm)
    gap = trades[trades[:, 0] == 0]
    assert gap.shape[0] == 1
    _, entry, exit_, side, entry_px, exit_px, reason, held, _ = gap[0].tolist()
    assert (entry, exit_, side, entry_px, exit_px) == (4, 6, 1.0, 101.5, 101.8)
    assert k.REASONS[int(reason)] == "end" and held == 3.0
    for i in range(4):
        mine = trades[trades[:, 0] == i + 1]
        assert mine[:, 1 + k.T_ENTRY].tolist() == [i + 3]  # none from the last-bar break
        assert mtm[i + 1, i + 8] == 0.0
