"""Order slicing with jitter, measured in the tick backtester (issue 16, item 7).

The source design: an order of at least 0.5 BTC is split into 10 children sent with random
5-15 ms delays, claimed to improve fill rates. `ParentOrders` is a compiled strategy that, every
`every_s` seconds of local time, decides a parent order of `qty` (buy and sell in turn) at the
touch and works it post-only for `horizon_s`: either whole (children=1) or as `children` equal
children, the first at once and each next one `delay` after the previous, delay uniform in
[delay_min_ns, delay_max_ns] (xorshift64 from `seed`, so runs repeat), each priced at the touch
when it goes out; what is still open at the horizon is cancelled. Order ids are parent * 1000 +
child; `decision_mid` holds the mid at each parent's decision.

`slicing_report(result, strategy)` reads the fills: per parent, fill ratio (filled / qty) and
slippage in bps of the decision mid (side * (vwap - mid) / mid * 1e4: positive is worse);
returned as means over parents (a parent with no fill counts 0 to the fill ratio and is left
out of the slippage).
"""

from __future__ import annotations

import numpy as np
from numba import float64, int64
from numba.experimental import jitclass

from workbench.backtest.tick.results import TickResult
from workbench.engine.compiled import BUY, GTX, INVALID_MAX, INVALID_MIN, LIMIT, NEW, NONE, SELL

MAX_PARENTS = 100_000


@jitclass([("qty", float64), ("children", int64), ("every_ns", int64), ("horizon_ns", int64),
           ("delay_min_ns", int64), ("delay_max_ns", int64), ("state", int64),
           ("parent", int64), ("side", int64), ("sent", int64), ("next_due", int64),
           ("start_ns", int64), ("next_parent_ns", int64), ("decision_mid", float64[:]),
           ("parent_side", int64[:])])
class ParentOrders:
    """Parents worked whole or sliced with jittered delays (module docstring)."""

    def __init__(self, qty, children, every_s, horizon_s, delay_min_ns, delay_max_ns, seed):
        self.qty = qty
        self.children = children
        self.every_ns = int64(every_s * 1e9)
        self.horizon_ns = int64(horizon_s * 1e9)
        self.delay_min_ns = delay_min_ns
        self.delay_max_ns = delay_max_ns
        self.state = seed * 2654435761 + 88172645463325252
        self.parent = 0
        self.side = SELL
        self.sent = 0
        self.next_due = 0
        self.start_ns = 0
        self.next_parent_ns = 0
        self.decision_mid = np.full(MAX_PARENTS, np.nan)
        self.parent_side = np.zeros(MAX_PARENTS, np.int64)

    def _rand(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.state = x
        return (x >> 11) & ((1 << 53) - 1)

    def _delay(self):
        span = self.delay_max_ns - self.delay_min_ns
        return self.delay_min_ns + (self._rand() % (span + 1) if span > 0 else 0)

    def on_feed(self, gw):
        gw.clear_inactive()
        now = gw.ts_ns
        if gw.best_bid_tick == INVALID_MIN or gw.best_ask_tick == INVALID_MAX:
            return
        if self.parent and now >= self.start_ns + self.horizon_ns:
            for i in range(gw.n_orders):
                if gw.o_status[i] == NEW and gw.o_req[i] == NONE:
                    gw.cancel(gw.o_id[i])
            if gw.n_orders == 0:
                self.sent = self.children  # the parent is done
        if self.sent < self.children and self.parent and now >= self.next_due \
                and now < self.start_ns + self.horizon_ns:
            self._child(gw)
            return
        if now >= self.next_parent_ns and gw.n_orders == 0 and self.parent + 1 < MAX_PARENTS:
            self.parent += 1
            self.side = BUY if self.side == SELL else SELL
            self.decision_mid[self.parent] = gw.mid()
            self.parent_side[self.parent] = self.side
            self.start_ns = now
            self.next_parent_ns = now + self.every_ns
            self.sent = 0
            self.next_due = now
            self._child(gw)

    def _child(self, gw):
        price = gw.best_bid if self.side == BUY else gw.best_ask
        child_qty = self.qty / self.children
        gw.submit(self.parent * 1000 + self.sent, self.side, price, child_qty, LIMIT, GTX)
        self.sent += 1
        self.next_due = gw.ts_ns + self._delay()

    def on_fill(self, gw, order_id, side, price, qty):
        pass


def slicing_report(result: TickResult, strategy) -> dict[str, float]:
    """Mean fill ratio and slippage (bps) over the parents (module docstring)."""
    f = result.fill_columns
    parents = int(strategy.parent)
    mids = strategy.decision_mid[:parents + 1]
    sides = strategy.parent_side[:parents + 1]
    owner = f["order_id"] // 1000
    filled = np.bincount(owner, weights=f["qty"], minlength=parents + 1)[1:]
    notional = np.bincount(owner, weights=f["qty"] * f["price"], minlength=parents + 1)[1:]
    ratio = filled / strategy.qty
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = notional / filled
        slip = sides[1:] * (vwap - mids[1:]) / mids[1:] * 1e4
    slip = slip[filled > 0]
    return {"parents": parents, "fill_ratio": float(ratio.mean()) if parents else np.nan,
            "slippage_bps": float(slip.mean()) if len(slip) else np.nan,
            "fully_filled": float((ratio >= 1 - 1e-9).mean()) if parents else np.nan}
