"""Data-frame phases on the real Binance bookTicker quotes and trades.

- frames.lazy_query: a book analytics query (per-second spread, microprice, imbalance, last mid
  from the quotes, joined with per-second trade VWAP and volume) as one polars lazy chain vs the
  same steps run eagerly one by one. Claimed: lazy 20-40% faster (time ratio 1.25-1.67, i.e.
  20-40% less wall time). Equal frames (rtol 1e-9) are the check.
- frames.rolling_zscore_vwap: a rolling z-score of the mid (window 200 quotes) and a rolling
  VWAP (window 200 trades) as polars expressions vs pandas `rolling`. The mid is centred on the
  first mid before rolling (a z-score is shift-invariant; it keeps the rolling variance clear of
  cancellation at 60,000-level prices). Equal within rtol 1e-4 / atol 1e-4 (pandas' online
  rolling variance drifts: ~1e-6 std on constant windows, ~1e-5 relative on the z-scores) with
  NaN where the window is not full or the std is under 1e-3 is the check. No number claimed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from polars.testing import assert_frame_equal

from workbench.bench import recorded
from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.errors import PhaseMismatch

QUICK_MESSAGES = 30_000
FULL_MESSAGES = None  # the whole recording
WINDOW = 200
# price units: above pandas' rolling-std drift (~1e-6), below one half-tick move (~3.5e-3)
MIN_STD = 1e-3


QUOTE_COLUMNS = ["local_ns", "event_ms", "update_id", "bid", "bid_qty", "ask", "ask_qty"]
TRADE_COLUMNS = ["local_ns", "trade_ms", "trade_id", "price", "qty", "buyer_is_maker"]


def _frames(quick: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    quotes, trades = recorded.quotes_and_trades(QUICK_MESSAGES if quick else FULL_MESSAGES)
    q = pl.DataFrame(quotes, schema=QUOTE_COLUMNS, orient="row")
    t = pl.DataFrame(trades, schema=TRADE_COLUMNS, orient="row")
    return (q.with_columns(symbol=pl.lit("BTCUSDT")), t.with_columns(symbol=pl.lit("BTCUSDT")))


# -- lazy vs eager ---------------------------------------------------------------------------

def _quote_cols() -> list[pl.Expr]:
    depth = pl.col("bid_qty") + pl.col("ask_qty")
    return [
        ((pl.col("bid") + pl.col("ask")) / 2).alias("mid"),
        (pl.col("ask") - pl.col("bid")).alias("spread"),
        ((pl.col("bid") * pl.col("ask_qty") + pl.col("ask") * pl.col("bid_qty")) / depth)
        .alias("microprice"),
        ((pl.col("bid_qty") - pl.col("ask_qty")) / depth).alias("imbalance"),
        (pl.col("event_ms") // 1000).alias("second"),
    ]


QUOTE_AGGS = [
    pl.col("spread").mean().alias("spread_mean"), pl.col("spread").max().alias("spread_max"),
    pl.col("mid").last().alias("mid_last"), pl.col("microprice").std().alias("micro_std"),
    pl.col("imbalance").mean().alias("imbalance_mean"), pl.len().alias("quotes"),
]
TRADE_AGGS = [
    (pl.col("notional").sum() / pl.col("qty").sum()).alias("vwap"),
    pl.col("qty").sum().alias("volume"),
    pl.col("qty").filter(~pl.col("buyer_is_maker")).sum().alias("buy_volume"),
    pl.len().alias("trades"),
]
TRADE_COLS = [(pl.col("price") * pl.col("qty")).alias("notional"),
              (pl.col("trade_ms") // 1000).alias("second")]
FINAL_COLS = [(pl.col("vwap") - pl.col("mid_last")).alias("vwap_minus_mid")]


def _eager(frames: tuple[pl.DataFrame, pl.DataFrame]) -> Outcome:
    quotes, trades = frames
    q = quotes.with_columns(_quote_cols())
    q = q.filter(pl.col("spread") > 0)
    q = q.group_by("second", maintain_order=True).agg(QUOTE_AGGS)
    t = trades.with_columns(TRADE_COLS)
    t = t.group_by("second", maintain_order=True).agg(TRADE_AGGS)
    out = q.join(t, on="second", how="left")
    out = out.with_columns(FINAL_COLS)
    out = out.sort("second")
    return Outcome(out, items=quotes.height + trades.height)


def _lazy(frames: tuple[pl.DataFrame, pl.DataFrame]) -> Outcome:
    quotes, trades = frames
    t = trades.lazy().with_columns(TRADE_COLS).group_by("second", maintain_order=True).agg(
        TRADE_AGGS)
    out = (quotes.lazy().with_columns(_quote_cols()).filter(pl.col("spread") > 0)
           .group_by("second", maintain_order=True).agg(QUOTE_AGGS)
           .join(t, on="second", how="left").with_columns(FINAL_COLS).sort("second")
           .collect())
    return Outcome(out, items=quotes.height + trades.height)


def _check_frames(a: pl.DataFrame, b: pl.DataFrame) -> None:
    try:
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9)
    except AssertionError as exc:
        raise PhaseMismatch(f"query results differ: {exc}") from exc


register(Phase(
    name="frames.lazy_query", topic="frames",
    claim=Claim("a polars lazy chained query is 20-40% faster than eager step by step",
                1 / 0.8, 1 / 0.6),
    prepare=_frames, baseline=_eager, optimized=_lazy, check=_check_frames,
    baseline_label="polars eager steps", optimized_label="polars lazy chain",
))


# -- rolling z-score and VWAP: polars vs pandas ----------------------------------------------

def _prepare_rolling(quick: bool) -> dict[str, Any]:
    quotes, trades = recorded.quotes_and_trades(QUICK_MESSAGES if quick else FULL_MESSAGES)
    q, t = _frames(quick)
    return {"pl_quotes": q, "pl_trades": t, "mid0": (quotes[0][3] + quotes[0][5]) / 2,
            "pd_quotes": pd.DataFrame(quotes, columns=QUOTE_COLUMNS),
            "pd_trades": pd.DataFrame(trades, columns=TRADE_COLUMNS)}


def _rolling_polars(data: dict[str, Any]) -> Outcome:
    mid = (pl.col("bid") + pl.col("ask")) / 2 - data["mid0"]
    std = mid.rolling_std(WINDOW)
    z = data["pl_quotes"].select(
        pl.when(std > MIN_STD).then((mid - mid.rolling_mean(WINDOW)) / std).otherwise(None)
        .alias("z"))["z"].to_numpy()
    vwap = data["pl_trades"].select(
        ((pl.col("price") * pl.col("qty")).rolling_sum(WINDOW)
         / pl.col("qty").rolling_sum(WINDOW)).alias("vwap"))["vwap"].to_numpy()
    return Outcome((z, vwap), items=len(z) + len(vwap))


def _rolling_pandas(data: dict[str, Any]) -> Outcome:
    q, t = data["pd_quotes"], data["pd_trades"]
    mid = (q["bid"] + q["ask"]) / 2 - data["mid0"]
    roll = mid.rolling(WINDOW)
    std = roll.std()
    z = ((mid - roll.mean()) / std).where(std > MIN_STD).to_numpy(dtype=np.float64)
    vwap = ((t["price"] * t["qty"]).rolling(WINDOW).sum()
            / t["qty"].rolling(WINDOW).sum()).to_numpy(dtype=np.float64)
    return Outcome((z, vwap), items=len(z) + len(vwap))


def _check_rolling(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    for name, x, y in zip(("z-score", "vwap"), a, b, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            raise PhaseMismatch(f"{name}: {x.shape} values vs {y.shape}")
        close = np.isclose(x, y, rtol=1e-4, atol=1e-4, equal_nan=True)
        if not close.all():
            i = int(np.argmin(close))
            raise PhaseMismatch(f"{name}: first difference at row {i}: {x[i]!r} != {y[i]!r}")


register(Phase(
    name="frames.rolling_zscore_vwap", topic="frames",
    claim=Claim("rolling z-score and VWAP as polars expressions beat pandas (no number given)"),
    prepare=_prepare_rolling, baseline=_rolling_pandas, optimized=_rolling_polars,
    check=_check_rolling, baseline_label="pandas rolling", optimized_label="polars expressions",
))
