"""Backtest results: trades as a polars DataFrame, per-symbol and portfolio PnL, equity curve,
Sharpe, max drawdown and turnover, from a phase's raw output; and `backtest`, the one call.

Units: PnL and equity are in units of initial capital (equity starts at 1.0; PnL is not
compounded). Sharpe is annualized from per-bar equity changes over the whole clock:
mean / std x sqrt(bars per year), crypto trading all 365 days (Sharpe 1966; Lo 2002 for the
sqrt-of-time scaling with i.i.d. returns). Max drawdown is the largest fall of equity from its
running peak, as a fraction of that peak. Turnover is traded notional (both fills of every
trade) over initial capital.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from workbench.backtest import kernels as k
from workbench.backtest.bars import Bars
from workbench.backtest.execution import ExecutionModel
from workbench.backtest.phases import PyBars, RawRun, run_phase
from workbench.backtest.strategies import Strategy, pack_params

_NS_PER_YEAR = 365 * 86_400 * 1_000_000_000


@dataclass(frozen=True)
class BacktestResult:
    """Everything one backtest produced.

    trades: one row per trade: symbol (str), side (1 long, -1 short), entry_time, exit_time
      (Datetime ns UTC, bar open of the fill bar; an END exit fills at that bar's close),
      entry_price, exit_price (fills incl. slippage), reason (stop|target|time|end),
      bars_held, notional, pnl (capital units, fees incl.), return_bp (side x price move, bp).
    per_symbol: symbol, trades, pnl, win_rate, turnover.
    equity: time (Datetime ns UTC), equity (1 + cumulative marked-to-market PnL at bar close).
    pnl, sharpe, max_drawdown, turnover: portfolio figures (see the module docstring).
    bar_steps: symbols x clock bars run.
    """

    trades: pl.DataFrame
    per_symbol: pl.DataFrame
    equity: pl.DataFrame
    pnl: float
    sharpe: float
    max_drawdown: float
    turnover: float
    bar_steps: int


def trades_frame(bars: Bars, raw: RawRun, notional: float) -> pl.DataFrame:
    """The raw trade records as a polars DataFrame (columns in `BacktestResult.trades`)."""
    tr = raw.trades
    sym = tr[:, 0].astype(np.int64)
    entry_t = tr[:, 1 + k.T_ENTRY].astype(np.int64)
    exit_t = tr[:, 1 + k.T_EXIT].astype(np.int64)
    side = tr[:, 1 + k.T_SIDE]
    entry_px, exit_px = tr[:, 1 + k.T_ENTRY_PX], tr[:, 1 + k.T_EXIT_PX]
    names = np.array(["", *(k.REASONS[i] for i in sorted(k.REASONS))], dtype=object)
    reasons = names[tr[:, 1 + k.T_REASON].astype(np.int64)]
    return pl.DataFrame(
        {
            "symbol": np.array(bars.symbols, dtype=object)[sym] if len(sym) else [],
            "side": side.astype(np.int8),
            "entry_time": pl.Series(bars.ts_ns[entry_t]).cast(pl.Datetime("ns", "UTC")),
            "exit_time": pl.Series(bars.ts_ns[exit_t]).cast(pl.Datetime("ns", "UTC")),
            "entry_price": entry_px,
            "exit_price": exit_px,
            "reason": pl.Series(reasons, dtype=pl.String),
            "bars_held": tr[:, 1 + k.T_HELD].astype(np.int64),
            "notional": np.full(len(sym), notional),
            "pnl": tr[:, 1 + k.T_PNL],
            "return_bp": side * (exit_px - entry_px) / entry_px * 1e4,
        },
        schema_overrides={"symbol": pl.String},
    )


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from the running peak as a fraction of the peak (0 when equity only rises)."""
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max((peak - equity) / peak))


def sharpe(bar_pnl: np.ndarray, bar_ns: int) -> float:
    """Annualized Sharpe of per-bar PnL (capital units): mean/std x sqrt(bars per year);
    NaN when the PnL never varies."""
    std = float(np.std(bar_pnl, ddof=1)) if bar_pnl.size > 1 else 0.0
    if std == 0.0:
        return math.nan
    return float(np.mean(bar_pnl)) / std * math.sqrt(_NS_PER_YEAR / bar_ns)


def summarize(bars: Bars, raw: RawRun, notional: float) -> BacktestResult:
    """Turn a phase's raw output into a BacktestResult."""
    trades = trades_frame(bars, raw, notional)
    bar_pnl = raw.mtm.sum(axis=0)
    equity = 1.0 + np.cumsum(bar_pnl)
    per_symbol = (
        pl.DataFrame({"symbol": list(bars.symbols)})
        .join(
            trades.group_by("symbol").agg(
                pl.len().alias("trades"),
                pl.col("pnl").sum(),
                (pl.col("pnl") > 0).mean().alias("win_rate"),
                (pl.col("notional").sum() * 2).alias("turnover"),
            ),
            on="symbol",
            how="left",
        )
        .with_columns(pl.col("trades").fill_null(0).cast(pl.Int64),
                      pl.col("pnl", "turnover").fill_null(0.0))
    )
    return BacktestResult(
        trades=trades,
        per_symbol=per_symbol,
        equity=pl.DataFrame({"time": pl.Series(bars.ts_ns).cast(pl.Datetime("ns", "UTC")),
                             "equity": equity}),
        pnl=float(trades["pnl"].sum()) if trades.height else 0.0,
        sharpe=sharpe(bar_pnl, bars.bar_ns),
        max_drawdown=max_drawdown(equity),
        turnover=2.0 * notional * trades.height,
        bar_steps=bars.bar_steps,
    )


def backtest(bars: Bars, strategy: Strategy, execution: ExecutionModel | None = None, *,
             phase: int = 3, python_bars: PyBars | None = None) -> BacktestResult:
    """Backtest `strategy` on `bars` with the execution model (default `ExecutionModel()`),
    using one of the phases 0-4 (all give identical trades; 3 is the numba kernel, 4 its
    parallel-over-symbols form). Raises ValueError for an unknown phase."""
    execution = execution or ExecutionModel()
    p = pack_params(strategy, execution)
    raw = run_phase(phase, bars, p, python_bars)
    return summarize(bars, raw, float(p[k.P_NOTIONAL]))
