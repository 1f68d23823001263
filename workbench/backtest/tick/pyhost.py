"""The Python `Strategy` protocol (`workbench.engine.strategy`) in the tick backtester.

An engine strategy (`on_events(book, batch) -> list[OrderRequest]`, e.g. `EmaCross`) runs
unchanged: at each feed the kernel returns (`kernel.FEED`), and `PythonHost.feed` calls the
strategy with `BookView`, the local book as the kernel keeps it (best bid / ask and their
quantities, mid, `depth(n)`, the symbol id), and the feed's rows (EVENT_DTYPE, the local rows
of that local time); its OrderRequests go into the gateway: market orders as MARKET/IOC,
limits as LIMIT/GTC or GTX when post_only, ids counting up from 1. Before each call the host
drops the gateway's finished orders (`Gateway.clear_inactive`, as the compiled strategies do
at the top of `on_feed`): the gateway holds at most MAX_ORDERS live orders, so without it a
run could send no more than that many orders in all. The engine gives a strategy no fills, so
neither does this host. The cost is a Python call per feed (the `tick.events_per_s`
benchmark prints the figure beside the compiled one).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.backtest.tick import kernel as k
from workbench.backtest.tick.events import TF_LOCAL
from workbench.engine.compiled import (
    BUY,
    GTC,
    GTX,
    INVALID_MAX,
    INVALID_MIN,
    IOC,
    LIMIT,
    MARKET,
    SELL,
    gw_clear_inactive,
    gw_submit,
)
from workbench.events import Side


class BookView:
    """The local book of the kernel, read as an engine strategy reads an L2Book."""

    def __init__(self, symbol_id: int, depth: np.ndarray, bst: np.ndarray, lb: int,
                 tick: float) -> None:
        self.symbol_id = symbol_id
        self.valid = True
        self._depth, self._bst, self._lb, self._tick = depth, bst, lb, tick

    def _side(self, s: int) -> tuple[float, float]:
        t = int(self._bst[1, s])
        if t in (INVALID_MIN, INVALID_MAX):
            return math.nan, math.nan
        return t * self._tick, float(self._depth[1, s, t - self._lb])

    @property
    def best_bid(self) -> float:
        return self._side(0)[0]

    @property
    def best_ask(self) -> float:
        return self._side(1)[0]

    @property
    def best_bid_qty(self) -> float:
        return self._side(0)[1]

    @property
    def best_ask_qty(self) -> float:
        return self._side(1)[1]

    @property
    def mid(self) -> float:
        return (self.best_bid + self.best_ask) * 0.5

    @property
    def spread(self) -> float:
        return self.best_ask - self.best_bid

    def depth(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bid prices, bid sizes, ask prices, ask sizes), best first, at most n levels each."""
        out = []
        for s, step in ((0, -1), (1, 1)):
            t = int(self._bst[1, s])
            prices, sizes = [], []
            side = self._depth[1, s]
            if t not in (INVALID_MIN, INVALID_MAX):
                i = t - self._lb
                while 0 <= i < len(side) and len(prices) < n:
                    if side[i] > 0:
                        prices.append((i + self._lb) * self._tick)
                        sizes.append(side[i])
                    i += step
            out += [np.array(prices), np.array(sizes)]
        return tuple(out)


class PythonHost:
    """Runs `strategy.on_events` at each FEED the kernel returns (module docstring)."""

    def __init__(self, strategy, rows: np.ndarray, sim, symbol_id: int, lb: int,
                 tick: float) -> None:
        self.strategy = strategy
        self.rows = rows
        self.sim = sim
        self.sid = symbol_id
        self.book = BookView(symbol_id, sim.depth, sim.bst, lb, tick)
        self.next_id = 1
        self.calls = 0

    def feed(self, gi, gf, oi, of, ri, rf) -> None:
        """One feed: the strategy's call, its requests into the gateway arrays (`Gateway`'s
        state, `workbench.engine.compiled.gateway_arrays`)."""
        st = self.sim.st
        start, stop = int(st[k.S_FEED_FROM]), int(st[k.S_LCUR])
        st[k.S_FEED_FROM] = stop
        rows = np.asarray(self.rows[start:stop])
        batch = rows[((rows["flags"] & TF_LOCAL) != 0) & (rows["symbol_id"] == self.sid)]
        self.calls += 1
        gw_clear_inactive(gi, oi, of)
        for req in self.strategy.on_events(self.book, batch) or ():
            market = req.order_type == "market"
            tif = IOC if market else (GTX if req.post_only else GTC)
            gw_submit(gi, gf, oi, of, ri, rf, self.next_id, BUY if req.side == Side.BUY else SELL,
                      0.0 if market else float(req.price), float(req.qty),
                      MARKET if market else LIMIT, tif)
            self.next_id += 1
