"""hftbacktest 2.4 as a peer: the same converted rows and the same quoting logic in it.

For the parity check (tests/backtest/tick/test_peer.py) and the `tick` benchmark. hftbacktest
is a bench/test dependency (`pip install 'hftbacktest==2.4.*'`, the `bench` extra); importing
this module without it raises ImportError.

`to_hbt(rows, symbol_id)` maps converted rows 1:1 to hftbacktest's `event_dtype` (its docs,
"Data": `ev` = event kind | side | EXCH_EVENT / LOCAL_EVENT): BID/ASK levels -> DEPTH_EVENT
(DEPTH_SNAPSHOT_EVENT inside a snapshot) with BUY_EVENT / SELL_EVENT, SNAPSHOT_BEGIN ->
DEPTH_CLEAR_EVENT (both sides), TRADE -> TRADE_EVENT with the aggressor's side, any other kind
k -> the custom event 100 + k (seen by the feed, ignored by the books). `hbt_quoter` runs the
logic of `workbench.engine.compiled.Quoter` against hftbacktest's API and returns its fills.
"""

from __future__ import annotations

import numpy as np
from hftbacktest import (
    BUY_EVENT,
    DEPTH_CLEAR_EVENT,
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    EXCH_EVENT,
    GTX,
    LIMIT,
    LOCAL_EVENT,
    SELL_EVENT,
    TRADE_EVENT,
    BacktestAsset,
    ROIVectorMarketDepthBacktest,
)
from hftbacktest.binding import event_dtype
from numba import njit

from workbench.backtest.tick.events import TF_EXCH, TF_LOCAL
from workbench.events import F_SNAPSHOT, K_ASK, K_BID, K_SNAP_BEGIN, K_TRADE, S_BUY

FILLED = 3
NEW = 1
NONE = 0
END_OF_DATA = 1
FILL_COLUMNS = ("order_id", "side", "price_tick", "qty", "ts_exch_ns", "maker")


def to_hbt(rows: np.ndarray, symbol_id: int) -> np.ndarray:
    """hftbacktest event rows of `symbol_id`'s rows (module docstring), same order."""
    rows = rows[rows["symbol_id"] == symbol_id]
    kind, side, flags = rows["kind"], rows["side"], rows["flags"].astype(np.uint64)
    snap = (flags & F_SNAPSHOT) != 0
    ev = (100 + kind).astype(np.uint64)
    level = np.where(snap, DEPTH_SNAPSHOT_EVENT, DEPTH_EVENT)
    ev = np.where(kind == K_BID, level | BUY_EVENT, ev)
    ev = np.where(kind == K_ASK, level | SELL_EVENT, ev)
    ev = np.where(kind == K_SNAP_BEGIN, DEPTH_CLEAR_EVENT, ev)
    ev = np.where(kind == K_TRADE, TRADE_EVENT | np.where(side == S_BUY, BUY_EVENT, SELL_EVENT),
                  ev)
    ev = ev.astype(np.uint64)
    ev |= np.where(flags & TF_EXCH, np.uint64(EXCH_EVENT), np.uint64(0))
    ev |= np.where(flags & TF_LOCAL, np.uint64(LOCAL_EVENT), np.uint64(0))
    out = np.zeros(len(rows), event_dtype)
    out["ev"] = ev
    out["exch_ts"] = rows["ts_event_ns"]
    out["local_ts"] = rows["ts_recv_ns"]
    out["px"] = rows["price"]
    out["qty"] = rows["qty"]
    return out


def hbt_backtest(events: np.ndarray, tick_size: float, lot_size: float, roi: tuple[float, float],
                 entry_ns: int, response_ns: int, maker_fee: float = 0.0, taker_fee: float = 0.0):
    """An hftbacktest ROIVectorMarketDepthBacktest over `events` (to_hbt rows): linear asset,
    constant latency, risk-averse queue, no partial fills, trading-value fees. hftbacktest
    keeps a pointer to `events`, not a reference: keep the array alive while the backtest
    runs."""
    asset = (BacktestAsset().data(events).linear_asset(1.0)
             .constant_order_latency(entry_ns, response_ns).risk_adverse_queue_model()
             .no_partial_fill_exchange().trading_value_fee_model(maker_fee, taker_fee)
             .tick_size(tick_size).lot_size(lot_size).roi_lb(roi[0]).roi_ub(roi[1]))
    return ROIVectorMarketDepthBacktest([asset])


@njit
def _side(hbt, orders, buy, order_id, tick, tick_size, qty, allowed, next_id):
    if order_id != 0 and order_id in orders:
        o = orders.get(order_id)
        if o.status == NEW and o.req == NONE and o.price_tick != tick:
            hbt.cancel(0, order_id, False)
        return order_id, next_id
    if not allowed:
        return 0, next_id
    if buy:
        hbt.submit_buy_order(0, next_id, tick * tick_size, qty, GTX, LIMIT, False)
    else:
        hbt.submit_sell_order(0, next_id, tick * tick_size, qty, GTX, LIMIT, False)
    return next_id, next_id + 1


@njit
def hbt_quoter(hbt, qty, max_position, out):
    """Quoter's logic on hftbacktest, feed by feed (wait_next_feed without order responses).
    out: int64/float rows (n, 6) filled with FILL_COLUMNS; returns (fills, feeds)."""
    next_id = 1
    bid_id = 0
    ask_id = 0
    n = 0
    feeds = 0
    tick_size = hbt.depth(0).tick_size
    while hbt.wait_next_feed(False, 1_000_000_000_000_000) != END_OF_DATA:
        feeds += 1
        orders = hbt.orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            if o.status == FILLED:
                out[n, 0] = o.order_id
                out[n, 1] = o.side
                out[n, 2] = o.exec_price_tick
                out[n, 3] = o.exec_qty
                out[n, 4] = o.exch_timestamp
                out[n, 5] = 1 if o.arr[0].maker else 0
                n += 1
        hbt.clear_inactive_orders(0)
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb == -9223372036854775808 or ba == 9223372036854775807:
            continue
        pos = hbt.position(0)
        orders = hbt.orders(0)
        bid_id, next_id = _side(hbt, orders, True, bid_id, bb, tick_size, qty,
                                pos + qty <= max_position + 1e-12, next_id)
        ask_id, next_id = _side(hbt, orders, False, ask_id, ba, tick_size, qty,
                                pos - qty >= -max_position - 1e-12, next_id)
    return n, feeds
