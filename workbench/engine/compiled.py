"""The compiled strategy API: one numba strategy for the tick backtester and the live engine.

A compiled strategy is a class decorated with `compiled_class(spec)` (`workbench.engine.
structs`: the field spec and class body a numba `jitclass` takes; the class becomes a numba
StructRef, so the code running it is cached across processes) with two entry points, both
compiled (no Python call per message on either host):

    on_feed(self, gw)                                  after each feed message (book or trade)
    on_fill(self, gw, order_id, side, price, qty)      when a fill reaches the strategy

For example, a strategy that buys `qty` at the market whenever the spread is one tick and it is
flat:

    from numba import float64, int64
    from workbench.engine.compiled import BUY, IOC, MARKET, compiled_class

    @compiled_class([("qty", float64), ("next_id", int64)])
    class TightBuyer:
        def __init__(self, qty):
            self.qty = qty
            self.next_id = 1

        def on_feed(self, gw):
            gw.clear_inactive()
            if gw.best_ask_tick - gw.best_bid_tick == 1 and gw.position == 0.0 \
                    and gw.n_orders == 0:
                gw.submit(self.next_id, BUY, 0.0, self.qty, MARKET, IOC)
                self.next_id += 1

        def on_fill(self, gw, order_id, side, price, qty):
            pass

    tick_backtest("rec.gz", TightBuyer(0.001))      # or CompiledAdapter(TightBuyer(0.001), ...)

A numba `jitclass` with the same methods still works in both hosts, but is compiled again in
every process (numba cannot cache code taking a jitclass: seconds per backtest process).

`gw` is a `Gateway` (below), the same object in both worlds: the host writes the market view
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

Examples: `Quoter` (a one-level quoter: joins the best bid and ask with `qty`, post-only,
re-quotes when the touch moves, keeps |position| <= max_position) and `CompiledEmaCross`
below; usage:

    from workbench.engine.compiled import Quoter
    strategy = Quoter(0.001, 0.01)          # the same object for the backtester and the engine
"""

from __future__ import annotations

import numpy as np
from numba import float64, int64, njit
from numba.core import types
from numba.experimental import structref
from numba.extending import overload_attribute, overload_method

from workbench.engine.structs import compiled_class

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

# The gateway's state is six arrays, so the tick kernel (a cached, array-only compiled function)
# reads and writes it directly: gi int64 scalars, gf float64 scalars (GI_* / GF_* slots), oi / of
# the order table's int64 / float64 columns (rows = slots, OI_* / OF_* columns), ri / rf the
# queued requests (RI_* columns; rf: their quantities). The attributes strategies read (ts_ns,
# best_bid_tick, position, o_status, ...) are properties over these slots.
GI_TS, GI_BID_TICK, GI_ASK_TICK, GI_LAST_SIDE, GI_N_FILLS, GI_N_ORDERS, GI_N_REQ = range(7)
GI_REJECTED, GI_SIZE = 7, 8
GF_TICK, GF_LOT, GF_BID, GF_ASK, GF_BID_QTY, GF_ASK_QTY, GF_LAST_PRICE, GF_LAST_QTY = range(8)
GF_POSITION, GF_FEES, GF_SIZE = 8, 9, 10
OI_ID, OI_SIDE, OI_TICK, OI_EXEC_TICK, OI_STATUS, OI_REQ, OI_TYPE, OI_TIF = range(8)
OI_LOCAL_TS, OI_EXCH_TS, OI_SIZE = 8, 9, 10
OF_QTY, OF_LEAVES, OF_EXEC_QTY, OF_SIZE = range(4)
RI_KIND, RI_ID, RI_SIDE, RI_TICK, RI_TYPE, RI_TIF, RI_SIZE = range(7)


@njit(cache=True)
def gateway_arrays(tick_size, lot_size):  # pragma: no cover - compiled
    """A new gateway's state (gi, gf, oi, of, ri, rf): no orders, no requests, empty book
    sides; tick_size, lot_size: the instrument's steps (> 0)."""
    gi = np.zeros(GI_SIZE, np.int64)
    gf = np.zeros(GF_SIZE, np.float64)
    gi[GI_BID_TICK] = INVALID_MIN
    gi[GI_ASK_TICK] = INVALID_MAX
    gf[GF_TICK] = tick_size
    gf[GF_LOT] = lot_size
    gf[GF_BID] = np.nan
    gf[GF_ASK] = np.nan
    gf[GF_LAST_PRICE] = np.nan
    return (gi, gf, np.zeros((MAX_ORDERS, OI_SIZE), np.int64),
            np.zeros((MAX_ORDERS, OF_SIZE), np.float64),
            np.zeros((MAX_REQUESTS, RI_SIZE), np.int64), np.zeros(MAX_REQUESTS, np.float64))


# -- the gateway's operations on its arrays (called by the Gateway's methods and the kernel) --
@njit(cache=True, _nrt=False)
def gw_find(gi, oi, order_id):  # pragma: no cover - compiled
    """The slot of order `order_id` in the order table, -1 when it is not there."""
    for i in range(gi[GI_N_ORDERS]):
        if oi[i, OI_ID] == order_id:
            return i
    return -1


@njit(cache=True, _nrt=False)
def _gw_request(gi, oi, of, ri, rf, kind, i):  # pragma: no cover - compiled
    j = gi[GI_N_REQ]
    ri[j, RI_KIND] = kind
    ri[j, RI_ID] = oi[i, OI_ID]
    ri[j, RI_SIDE] = oi[i, OI_SIDE]
    ri[j, RI_TICK] = oi[i, OI_TICK]
    ri[j, RI_TYPE] = oi[i, OI_TYPE]
    ri[j, RI_TIF] = oi[i, OI_TIF]
    rf[j] = of[i, OF_QTY]
    gi[GI_N_REQ] = j + 1


@njit(cache=True, _nrt=False)
def gw_submit(gi, gf, oi, of, ri, rf, order_id, side, price, qty, order_type, tif
              ):  # pragma: no cover - compiled
    """Gateway.submit on the arrays."""
    if (qty <= 0.0 or gw_find(gi, oi, order_id) >= 0 or gi[GI_N_ORDERS] >= len(oi)
            or gi[GI_N_REQ] >= len(ri)):
        gi[GI_REJECTED] += 1
        return False
    i = gi[GI_N_ORDERS]
    oi[i, OI_ID] = order_id
    oi[i, OI_SIDE] = side
    oi[i, OI_TICK] = np.int64(np.round(price / gf[GF_TICK])) if order_type == LIMIT else 0
    oi[i, OI_EXEC_TICK] = 0
    oi[i, OI_STATUS] = NONE
    oi[i, OI_REQ] = NEW
    oi[i, OI_TYPE] = order_type
    oi[i, OI_TIF] = tif
    oi[i, OI_LOCAL_TS] = gi[GI_TS]
    oi[i, OI_EXCH_TS] = 0
    of[i, OF_QTY] = qty
    of[i, OF_LEAVES] = qty
    of[i, OF_EXEC_QTY] = 0.0
    gi[GI_N_ORDERS] = i + 1
    _gw_request(gi, oi, of, ri, rf, REQ_NEW, i)
    return True


@njit(cache=True, _nrt=False)
def gw_cancel(gi, oi, of, ri, rf, order_id):  # pragma: no cover - compiled
    """Gateway.cancel on the arrays."""
    i = gw_find(gi, oi, order_id)
    if i < 0 or oi[i, OI_REQ] != NONE or oi[i, OI_STATUS] != NEW or gi[GI_N_REQ] >= len(ri):
        return False
    oi[i, OI_REQ] = CANCELED
    oi[i, OI_LOCAL_TS] = gi[GI_TS]
    _gw_request(gi, oi, of, ri, rf, REQ_CANCEL, i)
    return True


@njit(cache=True, _nrt=False)
def gw_clear_inactive(gi, oi, of):  # pragma: no cover - compiled
    """Gateway.clear_inactive on the arrays."""
    k = 0
    for i in range(gi[GI_N_ORDERS]):
        s = oi[i, OI_STATUS]
        if s in (FILLED, CANCELED, EXPIRED):
            continue
        if k != i:
            for c in range(OI_SIZE):
                oi[k, c] = oi[i, c]
            for c in range(OF_SIZE):
                of[k, c] = of[i, c]
        k += 1
    gi[GI_N_ORDERS] = k


@njit(cache=True, inline="always", _nrt=False)
def gw_set_book(gi, gf, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty
                ):  # pragma: no cover - compiled
    """Gateway.set_book on the arrays."""
    gi[GI_TS] = ts_ns
    gi[GI_BID_TICK] = bid_tick
    gi[GI_ASK_TICK] = ask_tick
    gf[GF_BID_QTY] = bid_qty
    gf[GF_ASK_QTY] = ask_qty
    gf[GF_BID] = bid_tick * gf[GF_TICK] if bid_tick != INVALID_MIN else np.nan
    gf[GF_ASK] = ask_tick * gf[GF_TICK] if ask_tick != INVALID_MAX else np.nan


@njit(cache=True, _nrt=False)
def gw_apply_response(gi, gf, oi, of, order_id, status, req, leaves, exec_qty, exec_tick,
                      exch_ts, fee, rejected_request, local_ts):  # pragma: no cover - compiled
    """Gateway.apply_response on the arrays."""
    i = gw_find(gi, oi, order_id)
    filled = 0.0
    if status in (FILLED, PARTIALLY_FILLED) and i >= 0 and exec_qty > 0.0:
        filled = exec_qty * oi[i, OI_SIDE]
        gf[GF_POSITION] += filled
        gf[GF_FEES] += fee
        gi[GI_N_FILLS] += 1
    if i < 0:
        return filled
    if rejected_request:
        if local_ts == oi[i, OI_LOCAL_TS]:
            if oi[i, OI_REQ] == NEW:
                oi[i, OI_REQ] = NONE
                oi[i, OI_STATUS] = EXPIRED
            else:
                oi[i, OI_REQ] = NONE
        return filled
    of[i, OF_LEAVES] = leaves
    if exch_ts > 0:
        oi[i, OI_EXCH_TS] = exch_ts
    oi[i, OI_STATUS] = status
    oi[i, OI_REQ] = req
    of[i, OF_EXEC_QTY] = exec_qty
    oi[i, OI_EXEC_TICK] = exec_tick
    return filled


# -- Gateway: a StructRef over the six arrays -------------------------------------------------
class GatewayType(types.StructRef):
    """The numba type of a Gateway (fields gi, gf, oi, of, ri, rf)."""


structref.register(GatewayType)
GATEWAY_TYPE = GatewayType([("gi", types.int64[::1]), ("gf", types.float64[::1]),
                            ("oi", types.int64[:, ::1]), ("of", types.float64[:, ::1]),
                            ("ri", types.int64[:, ::1]), ("rf", types.float64[::1])])


@njit(cache=True)
def gateway_from(gi, gf, oi, of, ri, rf):  # pragma: no cover - compiled
    """A Gateway over the state arrays (`gateway_arrays`' shapes and dtypes, C-contiguous)."""
    gw = structref.new(GATEWAY_TYPE)
    gw.gi = gi
    gw.gf = gf
    gw.oi = oi
    gw.of = of
    gw.ri = ri
    gw.rf = rf
    return gw


@njit(cache=True)
def _gateway_state(gw):  # pragma: no cover - compiled
    return gw.gi, gw.gf, gw.oi, gw.of, gw.ri, gw.rf


_SCALARS = {  # attribute: (gi (0) or gf (1), slot, description)
    "ts_ns": (0, GI_TS, "local time of the current message (ns)"),
    "best_bid_tick": (0, GI_BID_TICK, "best bid in ticks (INVALID_MIN: none)"),
    "best_ask_tick": (0, GI_ASK_TICK, "best ask in ticks (INVALID_MAX: none)"),
    "last_trade_side": (0, GI_LAST_SIDE, "aggressor side of the last trade (BUY/SELL; 0: none)"),
    "n_fills": (0, GI_N_FILLS, "fills booked"),
    "n_orders": (0, GI_N_ORDERS, "live slots of the order table"),
    "n_req": (0, GI_N_REQ, "requests queued since the host last drained them"),
    "rejected_requests": (0, GI_REJECTED, "submits refused by the gateway"),
    "tick_size": (1, GF_TICK, "price step"),
    "lot_size": (1, GF_LOT, "quantity step"),
    "best_bid": (1, GF_BID, "best bid price (NaN: none)"),
    "best_ask": (1, GF_ASK, "best ask price (NaN: none)"),
    "bid_qty": (1, GF_BID_QTY, "quantity at the best bid"),
    "ask_qty": (1, GF_ASK_QTY, "quantity at the best ask"),
    "last_trade_price": (1, GF_LAST_PRICE, "price of the last trade (NaN: none)"),
    "last_trade_qty": (1, GF_LAST_QTY, "quantity of the last trade"),
    "position": (1, GF_POSITION, "signed position (base units)"),
    "fees": (1, GF_FEES, "fees paid"),
}
_COLUMNS = {  # attribute: (oi (0), of (1) or ri (2), column)
    "o_id": (0, OI_ID), "o_side": (0, OI_SIDE), "o_tick": (0, OI_TICK),
    "o_exec_tick": (0, OI_EXEC_TICK), "o_status": (0, OI_STATUS), "o_req": (0, OI_REQ),
    "o_type": (0, OI_TYPE), "o_tif": (0, OI_TIF), "o_local_ts": (0, OI_LOCAL_TS),
    "o_exch_ts": (0, OI_EXCH_TS), "o_qty": (1, OF_QTY), "o_leaves": (1, OF_LEAVES),
    "o_exec_qty": (1, OF_EXEC_QTY), "r_kind": (2, RI_KIND), "r_id": (2, RI_ID),
    "r_side": (2, RI_SIDE), "r_tick": (2, RI_TICK), "r_type": (2, RI_TYPE), "r_tif": (2, RI_TIF),
}


def _scalar_overload(table: int, slot: int):
    if table == 0:
        return lambda gw: lambda gw: gw.gi[slot]
    return lambda gw: lambda gw: gw.gf[slot]


def _column_overload(table: int, column: int):
    if table == 0:
        return lambda gw: lambda gw: gw.oi[:, column]
    if table == 1:
        return lambda gw: lambda gw: gw.of[:, column]
    return lambda gw: lambda gw: gw.ri[:, column]


for _name, (_table, _slot, _doc) in _SCALARS.items():
    overload_attribute(GatewayType, _name)(_scalar_overload(_table, _slot))
for _name, (_table, _column) in _COLUMNS.items():
    overload_attribute(GatewayType, _name)(_column_overload(_table, _column))
overload_attribute(GatewayType, "r_qty")(lambda gw: lambda gw: gw.rf)


@overload_method(GatewayType, "find")
def _ol_find(gw, order_id):
    return lambda gw, order_id: gw_find(gw.gi, gw.oi, order_id)


@overload_method(GatewayType, "submit")
def _ol_submit(gw, order_id, side, price, qty, order_type, tif):
    def impl(gw, order_id, side, price, qty, order_type, tif):  # pragma: no cover - compiled
        return gw_submit(gw.gi, gw.gf, gw.oi, gw.of, gw.ri, gw.rf, order_id, side, price, qty,
                         order_type, tif)
    return impl


@overload_method(GatewayType, "cancel")
def _ol_cancel(gw, order_id):
    return lambda gw, order_id: gw_cancel(gw.gi, gw.oi, gw.of, gw.ri, gw.rf, order_id)


@overload_method(GatewayType, "clear_inactive")
def _ol_clear_inactive(gw):
    return lambda gw: gw_clear_inactive(gw.gi, gw.oi, gw.of)


@overload_method(GatewayType, "mid")
def _ol_mid(gw):
    return lambda gw: (gw.gf[GF_BID] + gw.gf[GF_ASK]) * 0.5


@overload_method(GatewayType, "set_book")
def _ol_set_book(gw, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty):
    def impl(gw, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty):  # pragma: no cover - compiled
        gw_set_book(gw.gi, gw.gf, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty)
    return impl


@overload_method(GatewayType, "apply_response")
def _ol_apply_response(gw, order_id, status, req, leaves, exec_qty, exec_tick, exch_ts, fee,
                       rejected_request, local_ts):
    def impl(gw, order_id, status, req, leaves, exec_qty, exec_tick, exch_ts, fee,
             rejected_request, local_ts):  # pragma: no cover - compiled
        return gw_apply_response(gw.gi, gw.gf, gw.oi, gw.of, order_id, status, req, leaves,
                                 exec_qty, exec_tick, exch_ts, fee, rejected_request, local_ts)
    return impl


def _py_scalar(table: int, slot: int, doc: str) -> property:
    def get(self):
        return self.state[1 if table else 0][slot]

    def put(self, value):
        self.state[1 if table else 0][slot] = value

    return property(get, put, doc=doc)


def _py_column(table: int, column: int) -> property:
    return property(lambda self: self.state[2 + table][:, column])


class Gateway(structref.StructRefProxy):
    """The strategy's view of the market and its orders, and its order outbox (module
    docstring): `Gateway(tick_size, lot_size)` (both > 0). Best prices are NaN and ticks
    INVALID_MIN / INVALID_MAX for an empty side. State: the arrays gi, gf, oi, of, ri, rf
    (`state`; slot constants GI_*, GF_*, OI_*, OF_*, RI_*); the attributes read and write
    them, in compiled code and in Python alike (o_* / r_* are int64 or float64 column views,
    one row per order / request slot; scalars are read-only in compiled code)."""

    def __new__(cls, tick_size, lot_size):
        return gateway_from(*gateway_arrays(tick_size, lot_size))

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """(gi, gf, oi, of, ri, rf): the arrays the gateway works on."""
        arrays = self.__dict__.get("_state")
        if arrays is None:
            arrays = self.__dict__["_state"] = _gateway_state(self)
        return arrays

    @property
    def r_qty(self) -> np.ndarray:
        """float64[MAX_REQUESTS]: the queued requests' quantities."""
        return self.state[5]

    def find(self, order_id: int) -> int:
        """The slot of order `order_id` in the o_* arrays, -1 when it is not there."""
        gi, _, oi, _, _, _ = self.state
        return int(gw_find(gi, oi, order_id))

    def submit(self, order_id: int, side: int, price: float, qty: float, order_type: int,
               tif: int) -> bool:
        """Queue a new order (side BUY/SELL, price in price units, qty base units); False (and
        rejected_requests + 1) when the id is live, a table is full or qty <= 0."""
        return bool(gw_submit(*self.state, order_id, side, price, qty, order_type, tif))

    def cancel(self, order_id: int) -> bool:
        """Queue a cancel; False when the order is unknown, not open or has a request in
        flight (hftbacktest's rule: one request at a time per order)."""
        gi, _, oi, of, ri, rf = self.state
        return bool(gw_cancel(gi, oi, of, ri, rf, order_id))

    def clear_inactive(self) -> None:
        """Drop filled, cancelled and expired orders from the table (keeps the order of the
        others)."""
        gi, _, oi, of, _, _ = self.state
        gw_clear_inactive(gi, oi, of)

    def mid(self) -> float:
        """(best bid + best ask) / 2, NaN when a side is empty."""
        return (self.best_bid + self.best_ask) * 0.5

    def set_book(self, ts_ns: int, bid_tick: int, bid_qty: float, ask_tick: int,
                 ask_qty: float) -> None:
        """Host: the local book's top (ticks; INVALID_MIN / INVALID_MAX for an empty side)."""
        gi, gf = self.state[:2]
        gw_set_book(gi, gf, ts_ns, bid_tick, bid_qty, ask_tick, ask_qty)

    def apply_response(self, order_id, status, req, leaves, exec_qty, exec_tick, exch_ts, fee,
                       rejected_request, local_ts) -> float:
        """Host: an order response arrived (hftbacktest's local `process_recv_order_`,
        py-hftbacktest's proc/local.rs). Returns the signed fill qty it booked (0 if none)."""
        gi, gf, oi, of = self.state[:4]
        return float(gw_apply_response(gi, gf, oi, of, order_id, status, req, leaves, exec_qty,
                                       exec_tick, exch_ts, fee, rejected_request, local_ts))


for _name, (_table, _slot, _doc) in _SCALARS.items():
    setattr(Gateway, _name, _py_scalar(_table, _slot, _doc))
for _name, (_table, _column) in _COLUMNS.items():
    setattr(Gateway, _name, _py_column(_table, _column))
structref.define_boxing(GatewayType, Gateway)


@compiled_class([("qty", float64), ("max_position", float64), ("next_id", int64),
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


@compiled_class([("alpha_fast", float64), ("alpha_slow", float64), ("slow", int64),
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
