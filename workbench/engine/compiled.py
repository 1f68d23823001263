"""The compiled strategy API: one numba strategy for the tick backtester and the live engine.

A compiled strategy is a numba `jitclass` with two entry points, both compiled (no Python call
per message on either host):

    on_feed(self, gw)                                  after each feed message (book or trade)
    on_fill(self, gw, order_id, side, price, qty)      when a fill reaches the strategy

`gw` is a `Gateway` (below), the same jitclass in both worlds: the host writes the market view
into it (local time `ts_ns`, best bid/ask in ticks and prices, their quantities, the last
trade, the position) and the strategy reads it, and sends orders by calling `gw.submit(...)`
and `gw.cancel(...)`, which queue requests the host drains after the call. The strategy's own
orders are in the gateway's order table (`o_*` arrays, `n_orders` live slots), updated by the
host when responses arrive (status and request codes below). Hosts:

- the tick backtester (`workbench.backtest.tick`): local time is the feed's local timeline,
  requests reach its simulated exchange after the order-entry latency, responses come back
  after the response latency;
- the live/paper engine: `CompiledAdapter` is an engine `Strategy` (`on_events(book, batch)`)
  that fills the gateway from the L2 book, calls `on_feed` through one compiled function, and
  turns the queued requests into OrderRequests (new orders) and broker cancels.

Codes (the values of hftbacktest's `order.py`, so a strategy ported from it reads the same
numbers; nkaz001/hftbacktest, py-hftbacktest/hftbacktest/order.py): side BUY=1, SELL=-1;
status NONE=0, NEW=1, EXPIRED=2, FILLED=3, CANCELED=4, PARTIALLY_FILLED=5, REJECTED=6 (`o_req`:
the request in flight, NONE when none); time in force GTC=0, GTX=1 (post-only), IOC=3;
order type LIMIT=0, MARKET=1. Prices are in ticks on the order path (`price_tick = round(price /
tick_size)`), quantities in base units.

Example (a one-level quoter: joins the best bid and ask with `qty`, post-only, re-quotes when
the touch moves, keeps |position| <= max_position): `Quoter` below; usage:

    from workbench.engine.compiled import Quoter
    strategy = Quoter(0.001, 0.01)          # the same object for the backtester and the engine
"""

from __future__ import annotations

import numpy as np
from numba import float64, int8, int64
from numba.experimental import jitclass

BUY = 1
SELL = -1
NONE = 0
NEW = 1
EXPIRED = 2
FILLED = 3
CANCELED = 4
PARTIALLY_FILLED = 5
REJECTED = 6
GTC = 0
GTX = 1
IOC = 3
LIMIT = 0
MARKET = 1
REQ_NEW = 1
REQ_CANCEL = 2
INVALID_MIN = -(2**62)  # best bid tick of an empty bid side
INVALID_MAX = 2**62  # best ask tick of an empty ask side
MAX_ORDERS = 256  # live orders a strategy may hold in the gateway
MAX_REQUESTS = 256  # requests one call may queue

_GATEWAY_SPEC = [
    ("ts_ns", int64), ("tick_size", float64), ("lot_size", float64),
    ("best_bid_tick", int64), ("best_ask_tick", int64),
    ("best_bid", float64), ("best_ask", float64), ("bid_qty", float64), ("ask_qty", float64),
    ("last_trade_price", float64), ("last_trade_qty", float64), ("last_trade_side", int64),
    ("position", float64), ("fees", float64), ("n_fills", int64),
    ("n_orders", int64), ("o_id", int64[:]), ("o_side", int8[:]), ("o_tick", int64[:]),
    ("o_qty", float64[:]), ("o_leaves", float64[:]), ("o_exec_qty", float64[:]),
    ("o_exec_tick", int64[:]), ("o_status", int8[:]), ("o_req", int8[:]), ("o_type", int8[:]),
    ("o_tif", int8[:]), ("o_local_ts", int64[:]), ("o_exch_ts", int64[:]),
    ("n_req", int64), ("r_kind", int8[:]), ("r_id", int64[:]), ("r_side", int8[:]),
    ("r_tick", int64[:]), ("r_qty", float64[:]), ("r_type", int8[:]), ("r_tif", int8[:]),
    ("rejected_requests", int64),
]


@jitclass(_GATEWAY_SPEC)
class Gateway:
    """The strategy's view of the market and its orders, and its order outbox (module
    docstring). tick_size, lot_size: the instrument's steps (> 0). Best prices are NaN and
    ticks INVALID_MIN / INVALID_MAX for an empty side."""

    def __init__(self, tick_size, lot_size):
        self.ts_ns = 0
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.best_bid_tick = INVALID_MIN
        self.best_ask_tick = INVALID_MAX
        self.best_bid = np.nan
        self.best_ask = np.nan
        self.bid_qty = 0.0
        self.ask_qty = 0.0
        self.last_trade_price = np.nan
        self.last_trade_qty = 0.0
        self.last_trade_side = 0
        self.position = 0.0
        self.fees = 0.0
        self.n_fills = 0
        self.n_orders = 0
        self.o_id = np.zeros(MAX_ORDERS, np.int64)
        self.o_side = np.zeros(MAX_ORDERS, np.int8)
        self.o_tick = np.zeros(MAX_ORDERS, np.int64)
        self.o_qty = np.zeros(MAX_ORDERS, np.float64)
        self.o_leaves = np.zeros(MAX_ORDERS, np.float64)
        self.o_exec_qty = np.zeros(MAX_ORDERS, np.float64)
        self.o_exec_tick = np.zeros(MAX_ORDERS, np.int64)
        self.o_status = np.zeros(MAX_ORDERS, np.int8)
        self.o_req = np.zeros(MAX_ORDERS, np.int8)
        self.o_type = np.zeros(MAX_ORDERS, np.int8)
        self.o_tif = np.zeros(MAX_ORDERS, np.int8)
        self.o_local_ts = np.zeros(MAX_ORDERS, np.int64)
        self.o_exch_ts = np.zeros(MAX_ORDERS, np.int64)
        self.n_req = 0
        self.r_kind = np.zeros(MAX_REQUESTS, np.int8)
        self.r_id = np.zeros(MAX_REQUESTS, np.int64)
        self.r_side = np.zeros(MAX_REQUESTS, np.int8)
        self.r_tick = np.zeros(MAX_REQUESTS, np.int64)
        self.r_qty = np.zeros(MAX_REQUESTS, np.float64)
        self.r_type = np.zeros(MAX_REQUESTS, np.int8)
        self.r_tif = np.zeros(MAX_REQUESTS, np.int8)
        self.rejected_requests = 0

    # -- what strategies call ---------------------------------------------------------------
    def find(self, order_id):
        """The slot of order `order_id` in the o_* arrays, -1 when it is not there."""
        for i in range(self.n_orders):
            if self.o_id[i] == order_id:
                return i
        return -1

    def submit(self, order_id, side, price, qty, order_type, tif):
        """Queue a new order (side BUY/SELL, price in price units, qty base units); False (and
        rejected_requests + 1) when the id is live, a table is full or qty <= 0."""
        if (qty <= 0.0 or self.find(order_id) >= 0 or self.n_orders >= MAX_ORDERS
                or self.n_req >= MAX_REQUESTS):
            self.rejected_requests += 1
            return False
        tick = int64(np.round(price / self.tick_size)) if order_type == LIMIT else 0
        i = self.n_orders
        self.o_id[i] = order_id
        self.o_side[i] = side
        self.o_tick[i] = tick
        self.o_qty[i] = qty
        self.o_leaves[i] = qty
        self.o_exec_qty[i] = 0.0
        self.o_exec_tick[i] = 0
        self.o_status[i] = NONE
        self.o_req[i] = NEW
        self.o_type[i] = order_type
        self.o_tif[i] = tif
        self.o_local_ts[i] = self.ts_ns
        self.o_exch_ts[i] = 0
        self.n_orders = i + 1
        self._request(REQ_NEW, i)
        return True

    def cancel(self, order_id):
        """Queue a cancel; False when the order is unknown, not open or has a request in
        flight (hftbacktest's rule: one request at a time per order)."""
        i = self.find(order_id)
        if i < 0 or self.o_req[i] != NONE or self.o_status[i] != NEW \
                or self.n_req >= MAX_REQUESTS:
            return False
        self.o_req[i] = CANCELED
        self.o_local_ts[i] = self.ts_ns
        self._request(REQ_CANCEL, i)
        return True

    def clear_inactive(self):
        """Drop filled, cancelled and expired orders from the table (keeps the order of the
        others)."""
        k = 0
        for i in range(self.n_orders):
            s = self.o_status[i]
            if s in (FILLED, CANCELED, EXPIRED):
                continue
            if k != i:
                self._move(i, k)
            k += 1
        self.n_orders = k

    def mid(self):
        """(best bid + best ask) / 2, NaN when a side is empty."""
        return (self.best_bid + self.best_ask) * 0.5

    # -- what hosts call --------------------------------------------------------------------
    def set_book(self, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty):
        """Host: the local book's top (ticks; INVALID_MIN / INVALID_MAX for an empty side)."""
        self.ts_ns = ts_ns
        self.best_bid_tick = bid_tick
        self.best_ask_tick = ask_tick
        self.bid_qty = bid_qty
        self.ask_qty = ask_qty
        self.best_bid = bid_tick * self.tick_size if bid_tick != INVALID_MIN else np.nan
        self.best_ask = ask_tick * self.tick_size if ask_tick != INVALID_MAX else np.nan

    def apply_response(self, order_id, status, req, leaves, exec_qty, exec_tick, exch_ts,
                       fee, rejected_request, local_ts):
        """Host: an order response arrived (hftbacktest's local `process_recv_order_`,
        py-hftbacktest's proc/local.rs). Returns the signed fill qty it booked (0 if none)."""
        i = self.find(order_id)
        filled = 0.0
        if status in (FILLED, PARTIALLY_FILLED) and i >= 0 and exec_qty > 0.0:
            side = self.o_side[i]
            filled = exec_qty * side
            self.position += filled
            self.fees += fee
            self.n_fills += 1
        if i < 0:
            return filled
        if rejected_request:
            if local_ts == self.o_local_ts[i]:
                if self.o_req[i] == NEW:
                    self.o_req[i] = NONE
                    self.o_status[i] = EXPIRED
                else:
                    self.o_req[i] = NONE
            return filled
        self.o_leaves[i] = leaves
        if exch_ts > 0:
            self.o_exch_ts[i] = exch_ts
        self.o_status[i] = status
        self.o_req[i] = req
        self.o_exec_qty[i] = exec_qty
        self.o_exec_tick[i] = exec_tick
        return filled

    def _request(self, kind, i):
        j = self.n_req
        self.r_kind[j] = kind
        self.r_id[j] = self.o_id[i]
        self.r_side[j] = self.o_side[i]
        self.r_tick[j] = self.o_tick[i]
        self.r_qty[j] = self.o_qty[i]
        self.r_type[j] = self.o_type[i]
        self.r_tif[j] = self.o_tif[i]
        self.n_req = j + 1

    def _move(self, i, k):
        self.o_id[k] = self.o_id[i]
        self.o_side[k] = self.o_side[i]
        self.o_tick[k] = self.o_tick[i]
        self.o_qty[k] = self.o_qty[i]
        self.o_leaves[k] = self.o_leaves[i]
        self.o_exec_qty[k] = self.o_exec_qty[i]
        self.o_exec_tick[k] = self.o_exec_tick[i]
        self.o_status[k] = self.o_status[i]
        self.o_req[k] = self.o_req[i]
        self.o_type[k] = self.o_type[i]
        self.o_tif[k] = self.o_tif[i]
        self.o_local_ts[k] = self.o_local_ts[i]
        self.o_exch_ts[k] = self.o_exch_ts[i]


@jitclass([("qty", float64), ("max_position", float64), ("next_id", int64),
           ("bid_id", int64), ("ask_id", int64)])
class Quoter:
    """A one-level market maker: a post-only (GTX) buy of `qty` at the best bid and a sell at
    the best ask; an order off the touch is cancelled and re-sent at the new touch on a later
    message once the cancel is acknowledged; no new buy while position + qty > max_position
    (sells mirror it). Order ids count up from 1."""

    def __init__(self, qty, max_position):
        self.qty = qty
        self.max_position = max_position
        self.next_id = 1
        self.bid_id = 0
        self.ask_id = 0

    def on_feed(self, gw):
        gw.clear_inactive()
        if gw.best_bid_tick == INVALID_MIN or gw.best_ask_tick == INVALID_MAX:
            return
        self.bid_id = self._side(gw, BUY, self.bid_id, gw.best_bid_tick,
                                 gw.position + self.qty <= self.max_position + 1e-12)
        self.ask_id = self._side(gw, SELL, self.ask_id, gw.best_ask_tick,
                                 gw.position - self.qty >= -self.max_position - 1e-12)

    def on_fill(self, gw, order_id, side, price, qty):
        pass

    def _side(self, gw, side, order_id, tick, allowed):
        i = gw.find(order_id) if order_id else -1
        if i >= 0:
            if gw.o_status[i] == NEW and gw.o_req[i] == NONE and gw.o_tick[i] != tick:
                gw.cancel(order_id)
            return order_id
        if not allowed:
            return 0
        oid = self.next_id
        self.next_id += 1
        gw.submit(oid, side, tick * gw.tick_size, self.qty, LIMIT, GTX)
        return oid


@jitclass([("alpha_fast", float64), ("alpha_slow", float64), ("slow", int64),
           ("target_qty", float64), ("market", int64), ("fast_ema", float64),
           ("slow_ema", float64), ("updates", int64), ("target", float64), ("next_id", int64)])
class CompiledEmaCross:
    """`workbench.engine.strategy.EmaCross` as a compiled strategy: per feed message with a
    mid, ema += alpha * (mid - ema) (alpha = 2 / (n + 1)); from the `slow`-th update on, each
    change of sign of fast - slow sends the order that moves the intended position to +-
    target_qty; market orders (market=1) or post-only limits at the touch (market=0)."""

    def __init__(self, fast, slow, target_qty, market):
        self.alpha_fast = 2.0 / (fast + 1)
        self.alpha_slow = 2.0 / (slow + 1)
        self.slow = slow
        self.target_qty = target_qty
        self.market = market
        self.fast_ema = 0.0
        self.slow_ema = 0.0
        self.updates = 0
        self.target = 0.0
        self.next_id = 1

    def on_feed(self, gw):
        gw.clear_inactive()
        mid = gw.mid()
        if mid != mid:
            return
        if self.updates == 0:
            self.fast_ema = mid
            self.slow_ema = mid
            self.updates = 1
            return
        self.fast_ema += self.alpha_fast * (mid - self.fast_ema)
        self.slow_ema += self.alpha_slow * (mid - self.slow_ema)
        self.updates += 1
        if self.updates < self.slow or self.fast_ema == self.slow_ema:
            return
        target = self.target_qty if self.fast_ema > self.slow_ema else -self.target_qty
        delta = target - self.target
        if delta == 0.0:
            return
        self.target = target
        side = BUY if delta > 0 else SELL
        oid = self.next_id
        self.next_id += 1
        if self.market:
            gw.submit(oid, side, 0.0, abs(delta), MARKET, IOC)
        else:
            price = gw.best_bid if side == BUY else gw.best_ask
            gw.submit(oid, side, price, abs(delta), LIMIT, GTX)

    def on_fill(self, gw, order_id, side, price, qty):
        pass
