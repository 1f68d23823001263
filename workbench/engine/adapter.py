"""CompiledAdapter: a compiled strategy (`workbench.engine.compiled`) as an engine Strategy.

    from workbench.engine.adapter import CompiledAdapter
    from workbench.engine.compiled import Quoter
    engine = Engine(config, strategy=CompiledAdapter(Quoter(0.001, 0.01), 0.1, 0.001))

Per batch (`on_events(book, batch)`, called by the engine after the book applied it): the
broker's news since the last batch reaches the gateway (fills from the Executor's fills, each
order's status from its broker `Order`: pending -> NONE with a NEW request, open -> NEW
(PARTIALLY_FILLED once partly filled), filled -> FILLED, cancelled -> CANCELED, rejected
(post-only would cross) or refused by the risk limits -> EXPIRED), `on_fill` runs for each
fill; then the book's top and the batch's last trade are written into the gateway, `on_feed`
runs (one compiled call), and the queued requests go out: new orders through
`Executor.submit` (tag `compiled:<order id>`), cancels through `Executor.cancel` (they take
effect when they reach the broker's exchange, after its latency). The broker's news reaches
the gateway as the tick backtester's responses do: what happened at exchange time t is known
at the first batch at or after t + response_ns (fills in order, and each order's status as
of that horizon: NONE until it arrived, then NEW or PARTIALLY_FILLED, then FILLED when its
last fill is known, CANCELED or EXPIRED when that happened). With response_ns 0 (the
default) that is all the broker did before the call, which is the kernel's 1 ns response
when batch times are distinct (nothing at T is done before the call at T: the engine
matches after it; `workbench.engine.broker`). The engine binds its Executor with
`bind_executor` when it is built. Times in the gateway are the batch's venue time (the
engine's market time).
"""

from __future__ import annotations

from collections import deque

import numba as nb
import numpy as np

from workbench.engine.broker import Fill
from workbench.engine.compiled import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    GF_LAST_PRICE,
    GF_LAST_QTY,
    GI_LAST_SIDE,
    GTX,
    INVALID_MAX,
    INVALID_MIN,
    MARKET,
    NEW,
    NONE,
    PARTIALLY_FILLED,
    REQ_CANCEL,
    SELL,
    Gateway,
)
from workbench.engine.strategy import OrderRequest
from workbench.errors import ConfigError, EngineError
from workbench.events import EVENT_DTYPE, K_TRADE, S_BUY, Side

TAG = "compiled:"


@nb.njit
def _step(strategy, gw, batch, ts, bid_tick, bid_qty, ask_tick, ask_qty
          ):  # pragma: no cover - compiled
    """One batch in one compiled call: the book's top and the last trade into the gateway,
    then on_feed; returns the requests queued."""
    for i in range(len(batch)):
        row = batch[i]
        if row.kind == K_TRADE:
            gw.gf[GF_LAST_PRICE] = row.price
            gw.gf[GF_LAST_QTY] = row.qty
            gw.gi[GI_LAST_SIDE] = BUY if row.side == S_BUY else SELL
    gw.set_book(ts, bid_tick, bid_qty, ask_tick, ask_qty)
    strategy.on_feed(gw)
    return gw.n_req


@nb.njit
def _fill(strategy, gw, oid, status, leaves, qty, tick, ts, fee, side, price
          ):  # pragma: no cover - compiled
    """One fill in one compiled call: the gateway's order updated, then on_fill."""
    gw.apply_response(oid, status, NONE, leaves, qty, tick, ts, fee, False, 0)
    strategy.on_fill(gw, oid, side, price, qty)


class CompiledAdapter:
    """An engine Strategy running a compiled strategy (module docstring). tick_size, lot_size:
    the instrument's (> 0). response_ns (>= 0, market time): the broker's news reaches the
    strategy that long after its exchange time (module docstring). Raises ConfigError for bad
    sizes or a negative response_ns, EngineError when used before an Executor was bound."""

    def __init__(self, strategy, tick_size: float, lot_size: float, response_ns: int = 0
                 ) -> None:
        if not tick_size > 0 or not lot_size > 0:
            raise ConfigError(f"CompiledAdapter: tick_size and lot_size must be > 0, got "
                              f"{tick_size}, {lot_size}")
        if response_ns < 0:
            raise ConfigError(f"CompiledAdapter: response_ns must be >= 0, got {response_ns}")
        self.response_ns = int(response_ns)
        self.strategy = strategy
        self.gw = Gateway(tick_size, lot_size)
        self.tick_size = tick_size
        self._executor = None
        self._orders: dict[int, object] = {}  # strategy order id -> broker Order (or None)
        self._ids: dict[int, int] = {}  # broker order id -> strategy order id
        self._fills_seen = 0
        self._held: deque[Fill] = deque()  # our fills not yet due at the strategy, oldest first
        self._filled: dict[int, float] = {}  # strategy order id -> qty of its fills delivered
        self._warm(strategy)

    def _warm(self, strategy) -> None:
        """Compile now what the first batch and the first fill would compile on the trading
        path (a strategy's on_fill compiled there took 174 ms of one batch): `_step` and
        `_fill` for these types (compiled, not run) and the gateway methods the adapter
        calls (run on a spare gateway)."""
        gw = Gateway(self.tick_size, self.gw.lot_size)
        i64, f64 = nb.int64, nb.float64
        _step.compile((nb.typeof(strategy), nb.typeof(gw), nb.typeof(np.zeros(1, EVENT_DTYPE)),
                       i64, i64, f64, i64, f64))
        _fill.compile((nb.typeof(strategy), nb.typeof(gw), i64, i64, f64, f64, i64, i64, f64,
                       i64, f64))
        gw.submit(1, BUY, self.tick_size, 1.0, 0, GTX)
        gw.apply_response(1, FILLED, NONE, 0.0, 1.0, 1, 1, 0.0, False, 0)
        gw.find(1)
        gw.n_req = 0

    def bind_executor(self, executor) -> None:
        """The engine's Executor: where orders go and fills come from."""
        self._executor = executor

    def on_events(self, book, batch: np.ndarray) -> list[OrderRequest]:
        executor = self._executor
        if executor is None:
            raise EngineError("CompiledAdapter: no Executor bound (the Engine binds it)")
        first = batch.item(0)
        now = first[0]
        if executor.fill_count != self._fills_seen or self._orders or self._held:
            self._sync(executor, now)
        tick = self.tick_size
        bid, ask = book.best_bid, book.best_ask
        if _step(self.strategy, self.gw, batch, now,
                 round(bid / tick) if bid == bid else INVALID_MIN,
                 book.best_bid_qty if bid == bid else 0.0,
                 round(ask / tick) if ask == ask else INVALID_MAX,
                 book.best_ask_qty if ask == ask else 0.0):
            self._send(executor, book.symbol_id, now, first[3])
        return []

    def _send(self, executor, symbol_id: int, now: int, seq: int) -> None:
        gw = self.gw
        n = gw.n_req
        kinds, ids = gw.r_kind[:n].copy(), gw.r_id[:n].copy()
        sides, ticks, qtys = gw.r_side[:n].copy(), gw.r_tick[:n].copy(), gw.r_qty[:n].copy()
        types, tifs = gw.r_type[:n].copy(), gw.r_tif[:n].copy()
        gw.n_req = 0
        broker = executor.broker
        for k in range(n):
            oid = int(ids[k])
            if kinds[k] == REQ_CANCEL:
                order = self._orders.get(oid)
                if order is not None:
                    executor.cancel(order.order_id, now, seq)
                continue
            market = types[k] == MARKET
            request = OrderRequest(symbol_id, Side.BUY if sides[k] == BUY else Side.SELL,
                                   float(qtys[k]), "market" if market else "limit",
                                   float("nan") if market else float(ticks[k]) * self.tick_size,
                                   bool(tifs[k] == GTX), f"{TAG}{oid}")
            self._orders[oid] = None
            if executor.submit([request], now, seq):
                order = next(o for o in reversed(broker.orders_active(symbol_id))
                             if o.request.tag == request.tag)
                self._orders[oid] = order
                self._ids[order.order_id] = oid

    def _sync(self, executor, now: int) -> None:
        """The broker's news due by now into the gateway: what happened at exchange times up to
        now - response_ns (fills in order, then each order's status as of then; module
        docstring)."""
        gw = self.gw
        horizon = now - self.response_ns
        count = executor.fill_count
        if count != self._fills_seen:
            new = list(executor.fills)[-(count - self._fills_seen):]
            self._fills_seen = count
            self._held.extend(f for f in new if f.order_id in self._ids)
        held = self._held
        while held and held[0].ts_ns <= horizon:
            fill = held.popleft()
            oid = self._ids[fill.order_id]
            filled = self._filled.get(oid, 0.0) + fill.qty
            self._filled[oid] = filled
            leaves = max(self._orders[oid].request.qty - filled, 0.0)
            _fill(self.strategy, gw, oid, FILLED if leaves <= 1e-12 else PARTIALLY_FILLED,
                  leaves, fill.qty, round(fill.price / self.tick_size), fill.ts_ns, fill.fee,
                  BUY if fill.side == Side.BUY else SELL, fill.price)
        for oid, order in list(self._orders.items()):
            if order is None:  # refused before the broker (risk limits)
                gw.apply_response(oid, EXPIRED, NONE, 0.0, 0.0, 0, 0, 0.0, False, 0)
                del self._orders[oid]
                continue
            status = self._status(oid, order, horizon)
            if status == NONE:
                continue
            filled = self._filled.get(oid, 0.0)
            i = gw.find(oid)
            if i >= 0 and (gw.o_status[i] != status or gw.o_req[i] == NEW):
                gw.apply_response(oid, status, NONE, max(order.request.qty - filled, 0.0), 0.0,
                                  0, 0, 0.0, False, 0)
            if status in (FILLED, CANCELED, EXPIRED):
                del self._orders[oid]
                self._ids.pop(order.order_id, None)
                self._filled.pop(oid, None)

    def _status(self, oid: int, order, horizon: int) -> int:
        """Order `oid`'s status as the strategy knows it at `horizon` (exchange time): NONE
        before it arrived; then CANCELED / EXPIRED once that happened (a cancel at its
        arrival, a market order's unfilled rest or a post-only reject at the order's),
        FILLED once its fills are all delivered, else NEW or PARTIALLY_FILLED."""
        if order.arrive_ns > horizon:
            return NONE
        if order.status == "rejected":
            return EXPIRED
        if order.status == "cancelled":
            at = order.cancel_ns if order.cancel_ns is not None else order.arrive_ns
            if at <= horizon:
                return CANCELED
        filled = self._filled.get(oid, 0.0)
        if filled >= order.request.qty - 1e-12:
            return FILLED
        return PARTIALLY_FILLED if filled > 0.0 else NEW
