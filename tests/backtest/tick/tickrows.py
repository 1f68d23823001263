"""Hand-written tick rows and a scripted compiled strategy for the tick kernel tests."""

from __future__ import annotations

import numpy as np
from numba import float64, int64
from numba.experimental import jitclass

from workbench.backtest.tick.events import TickData, TickMeta, merge_rows
from workbench.events import EVENT_DTYPE, F_SNAPSHOT, K_ASK, K_BID, K_SNAP_BEGIN, K_TRADE

SID = 7


def rows_of(spec: list[tuple]) -> TickData:
    """TickData of hand-written rows: (kind, side, price, qty, exch_ns[, local_ns]) with kind
    one of 'snap', 'bid', 'ask', 'trade' (side 1 buy / 2 sell aggressor); tick and lot 1.0."""
    kinds = {"snap": K_SNAP_BEGIN, "bid": K_BID, "ask": K_ASK, "trade": K_TRADE}
    rows = np.zeros(len(spec), EVENT_DTYPE)
    for i, item in enumerate(spec):
        kind, side, price, qty, exch = item[:5]
        rows[i] = (exch, item[5] if len(item) > 5 else exch, 0, i, 0, SID, kinds[kind], side,
                   F_SNAPSHOT if kind == "snap" else 0, price, qty)
    prices = rows["price"][rows["price"] > 0]
    meta = TickMeta(source="test", venue="test", rows=len(rows), symbols={str(SID): ["t", "X"]},
                    tick_size={str(SID): 1.0}, lot_size={str(SID): 1.0},
                    price_min={str(SID): float(prices.min())},
                    price_max={str(SID): float(prices.max())}, events={str(SID): len(rows)},
                    price_median={str(SID): float(np.median(prices))})
    return TickData.in_memory(merge_rows(rows), meta)


@jitclass([("at", int64[:]), ("oid", int64[:]), ("side", int64[:]), ("price", float64[:]),
           ("qty", float64[:]), ("otype", int64[:]), ("tif", int64[:]), ("feed", int64),
           ("fills", int64)])
class Scripted:
    """Sends order k at its feed number at[k] (1-based): oid, side (1/-1, or 0: cancel oid),
    price, qty, order type, time in force. Counts the fills it is told of."""

    def __init__(self, at, oid, side, price, qty, otype, tif):
        self.at = at
        self.oid = oid
        self.side = side
        self.price = price
        self.qty = qty
        self.otype = otype
        self.tif = tif
        self.feed = 0
        self.fills = 0

    def on_feed(self, gw):
        self.feed += 1
        for k in range(len(self.at)):
            if self.at[k] == self.feed:
                if self.side[k] == 0:
                    gw.cancel(self.oid[k])
                else:
                    gw.submit(self.oid[k], self.side[k], self.price[k], self.qty[k],
                              self.otype[k], self.tif[k])

    def on_fill(self, gw, order_id, side, price, qty):
        self.fills += 1


def scripted(orders: list[tuple]) -> Scripted:
    """A Scripted strategy from (feed, order_id, side, price, qty, order_type, tif) tuples."""
    cols = list(zip(*orders, strict=True)) if orders else [[]] * 7
    return Scripted(np.array(cols[0], np.int64), np.array(cols[1], np.int64),
                    np.array(cols[2], np.int64), np.array(cols[3], np.float64),
                    np.array(cols[4], np.float64), np.array(cols[5], np.int64),
                    np.array(cols[6], np.int64))


