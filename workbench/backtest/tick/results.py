"""TickResult: fills, orders and the equity/inventory record of a tick backtest, as polars.

Frames (times int64 ns; prices, quantities, fees float64 in venue units; side +1 buy / -1 sell):
- `fills`: order_id, side, price, qty, fee, maker, ts_exch_ns (executed at the exchange),
  ts_local_ns (the strategy learnt it), ts_sent_ns (the order left the strategy), mid (the
  exchange book's mid at the fill).
- `orders`: every order as it reached the exchange: order_id, side, price, qty, order_type,
  tif, ts_sent_ns, ts_exch_ns, status there (compiled.NEW resting, FILLED, EXPIRED, CANCELED),
  queue_ahead (the quantity ahead of it when it joined the queue, NaN for none).
- `records`: ts_ns, mid (local book), position, balance (cash), fees, equity (balance +
  position * mid - fees), bid/ask_queue_ahead (our first resting order's estimated queue).

PnL (quote units) and its split, exact by construction of the terms, each computed apart:
  total      = sum(-side * qty * price) - fees + position_end * mid_end
  spread     = sum(side * qty * (mid_at_fill - price))           (edge captured against mid;
               a fill with no mid, one side empty, takes the last mid before it)
  inventory  = sum over fills k of position_before_k * (mid_k - mid_{k-1})
               + position_end * (mid_end - mid_last_fill)        (mark-to-market of inventory)
  fees       = -sum(fee)
so total == spread + inventory + fees (up to float rounding). mid_end: the last record's mid.

`stats()`: annualised Sharpe and Sortino of the equity record's per-period PnL changes (periods
of `record_every_ns`, annualised by sqrt(periods per year), a year = 365 days of 24 h as crypto
trades), max drawdown of equity (quote units), win rate (fraction of round trips, FIFO matched,
that made money after fees), turnover (traded notional), fill ratio (fills / orders sent),
mean queue ahead at entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

YEAR_NS = 365 * 24 * 3600 * 1_000_000_000


@dataclass
class TickResult:
    """What `tick_backtest` returns (module docstring); frames built from the column dicts."""

    fill_columns: dict[str, np.ndarray]
    order_columns: dict[str, np.ndarray]
    record_columns: dict[str, np.ndarray]
    events: int
    feeds: int
    seconds: float
    position: float
    balance: float
    fees: float
    symbol: str
    tick_size: float
    lot_size: float

    @property
    def fills(self) -> pl.DataFrame:
        return pl.DataFrame(self.fill_columns)

    @property
    def orders(self) -> pl.DataFrame:
        return pl.DataFrame(self.order_columns)

    @property
    def records(self) -> pl.DataFrame:
        r = pl.DataFrame(self.record_columns)
        return r.with_columns((pl.col("balance") + pl.col("position") * pl.col("mid")
                               - pl.col("fees")).alias("equity"))

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    def mid_end(self) -> float:
        mids = self.record_columns["mid"]
        mids = mids[np.isfinite(mids)]
        if len(mids):
            return float(mids[-1])
        fm = self.fill_columns["mid"]
        return float(fm[-1]) if len(fm) else math.nan

    def pnl(self) -> dict[str, float]:
        """{"total", "spread", "inventory", "fees"} (module docstring)."""
        f = self.fill_columns
        side, qty, price, mid = f["side"], f["qty"], f["price"], _ffill(f["mid"])
        fees = float(f["fee"].sum())
        mid_end = self.mid_end()
        signed = side * qty
        pos_end = float(signed.sum())
        total = float((-signed * price).sum()) - fees + (pos_end * mid_end if pos_end else 0.0)
        spread = float((signed * (mid - price)).sum())
        pos_before = np.concatenate([[0.0], np.cumsum(signed)[:-1]])
        prev_mid = np.concatenate([[mid[0] if len(mid) else 0.0], mid[:-1]])
        inventory = float((pos_before * (mid - prev_mid)).sum())
        if len(mid) and pos_end:
            inventory += pos_end * (mid_end - mid[-1])
        return {"total": total, "spread": spread, "inventory": inventory, "fees": -fees}

    def stats(self) -> dict[str, Any]:
        """The summary (module docstring)."""
        rec = self.records
        eq = rec["equity"].fill_nan(None).drop_nulls().to_numpy()
        ts = rec["ts_ns"].to_numpy()
        out: dict[str, Any] = {"fills": len(self.fill_columns["qty"]),
                               "orders": len(self.order_columns["qty"]), **self.pnl()}
        rets = np.diff(eq) if len(eq) > 1 else np.zeros(0)
        period = float(np.median(np.diff(ts))) if len(ts) > 1 else math.nan
        per_year = YEAR_NS / period if period and period == period else math.nan
        sd = rets.std(ddof=1) if len(rets) > 1 else math.nan
        down = rets[rets < 0]
        dsd = math.sqrt((down ** 2).mean()) if len(down) else math.nan
        mean = rets.mean() if len(rets) else math.nan
        out["sharpe"] = mean / sd * math.sqrt(per_year) if sd and sd == sd else math.nan
        out["sortino"] = mean / dsd * math.sqrt(per_year) if dsd and dsd == dsd else math.nan
        out["annualisation"] = (f"sqrt({per_year:.0f} periods/year: {period / 1e6:.0f} ms "
                                f"periods, 365 x 24 h years") if per_year == per_year else ""
        out["max_drawdown"] = float((np.maximum.accumulate(eq) - eq).max()) if len(eq) else 0.0
        f = self.fill_columns
        out["turnover"] = float((f["price"] * f["qty"]).sum())
        out["win_rate"] = _win_rate(f["side"], f["qty"], f["price"], f["fee"])
        sent = len(self.order_columns["qty"])
        out["fill_ratio"] = len(np.unique(f["order_id"])) / sent if sent else math.nan
        q = self.order_columns["queue_ahead"]
        q = q[np.isfinite(q)]
        out["mean_queue_ahead"] = float(q.mean()) if len(q) else math.nan
        out["events_per_s"] = self.events_per_s
        return out


def _ffill(values: np.ndarray) -> np.ndarray:
    """NaNs replaced by the last finite value before them (leading NaNs by the first)."""
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(values)), -1))
    first = int(np.argmax(ok))
    return values[np.where(idx < 0, first, idx)]


def _win_rate(side: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray) -> float:
    """Fraction of FIFO-matched round trips with a positive PnL after their fees."""
    lots: list[list[float]] = []  # [signed qty, price, fee per unit]
    wins = trips = 0
    for s, q, p, f in zip(side.tolist(), qty.tolist(), price.tolist(), fee.tolist(),
                          strict=True):
        unit_fee = f / q if q else 0.0
        left = q
        while left > 1e-12 and lots and (lots[0][0] > 0) != (s > 0):
            lot = lots[0]
            take = min(left, abs(lot[0]))
            pnl = take * (p - lot[1]) * (1 if lot[0] > 0 else -1) - take * (lot[2] + unit_fee)
            trips += 1
            wins += pnl > 0
            lot[0] -= take if lot[0] > 0 else -take
            left -= take
            if abs(lot[0]) <= 1e-12:
                lots.pop(0)
        if left > 1e-12:
            lots.append([left * s, p, unit_fee])
    return wins / trips if trips else math.nan
