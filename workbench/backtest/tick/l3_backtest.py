"""L3 FIFO queue backtest over a market-by-order recording (Bitfinex raw book, `l3_events`).

    from workbench.backtest.tick.l3_backtest import L3Config, L3Quoter, l3_backtest
    result = l3_backtest("bitfinex/L3_feed.json.gz", L3Quoter(0.01), L3Config())
    result.fills; result.orders; result.pnl(); result.stats()

Event loop (per L3 row, in file order, at its synthetic time t; `l3_events` docstring):
1. our requests that reach the exchange at or before t (sent at s, arriving at s + entry_ns,
   `ConstantLatency`) are processed in send order: a new order joins the back of its price
   level's FIFO in the `L3Book` (queue ahead = the feed quantity before it); a post-only order
   that would cross the feed's opposite best is expired (hftbacktest's GTX); a crossing order
   that is not post-only takes the feed's opposite levels best first up to its limit price,
   as taker, and its remainder expires (the feed's orders are not consumed, there is no market
   impact, so a remainder left resting would face the liquidity it already took); a cancel
   takes the order out of its level if it still rests;
2. the row is applied to the book (add / modify / delete / clear), then the fill rule runs;
3. exchange responses (fills, acks, cancels, expiries) made at x reach the strategy at
   x + response_ns; those due by t are applied to the strategy's view (`L3Gateway`);
4. after the last row of time t (a snapshot's rows share one time), the strategy callback
   runs on the gateway at local time t (the recording has no clock, so the feed reaches the
   strategy with no latency) and may submit or cancel.

Fill rule: the recording has no trades, so which removals were executions, their sizes and
the aggressor side cannot be known; a removal at the front of the best level may be a fill or
a cancel, and (LENGTH "25") a removal may be an order leaving the feed's window. The queue
model therefore follows hftbacktest's L3 FIFO model (nkaz001/hftbacktest,
hftbacktest/src/backtest/models/queue.rs, `L3FIFOQueueModel`: `on_best_bid_update`,
`on_best_ask_update` and `fill_market_feed_order`; semantics only) on what the feed shows:
- "cross" (always): our buy at p fills in full, at p, as maker, when the feed's best ask is
  <= p after a row; our sell at p when the feed's best bid is >= p. The opposite side reached
  our price, so any sell there would have met our resting buy first (the feed book never holds
  our order).
- "inferred" (`infer_trades=True`, optimistic): a delete, or a same-price quantity decrease, of
  a feed order at the feed's best level on its side, with no feed order ahead of it, is taken
  as an execution; under FIFO an execution reaching it has executed every order ahead of it,
  so our orders ahead of it fill in full at their price. A removal with feed orders still
  ahead of it cannot be an execution under FIFO and never fills us.
Fills are whole (no partial fills of a resting order). Fees: price * qty * bps / 1e4 (maker or
taker rate; negative = rebate).

Result: a `TickResult` (results.py: fills, orders, records, pnl(), stats()); its fill columns
are the tick backtester's (order_id, side, price, qty, fee, maker, ts_exch_ns, ts_local_ns,
ts_sent_ns, mid) plus queue_ahead_entry (feed qty ahead when the order joined its level),
queue_ahead_fill (feed qty ahead of it at the fill; NaN for a taker fill) and rule ("cross",
"inferred", "taker"). Orders: order_id, side, price, qty, tif (GTX post-only / GTC), ts_sent_ns,
ts_exch_ns (reached the exchange), ts_cancel_exch_ns (the cancel reached it; -1 none),
ts_done_exch_ns (stopped resting; -1 still resting at the end), status (compiled NEW, FILLED,
CANCELED, EXPIRED), queue_ahead (NaN when it never rested); orders still on their way when the
recording ends are not in it. Records: ts_ns, mid, position,
balance, fees every `record_every_ns` of feed time and at the end (exchange-side truth).
Raises ConfigError for a latency that is not ConstantLatency, or a bad record interval.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.backtest.tick.l3_book import L3Book
from workbench.backtest.tick.l3_events import (
    A_ADD,
    A_CLEAR,
    A_DELETE,
    A_MODIFY,
    L3Events,
    read_l3,
)
from workbench.backtest.tick.latency import ConstantLatency
from workbench.backtest.tick.results import TickResult
from workbench.engine.compiled import BUY, CANCELED, EXPIRED, FILLED, GTC, GTX, NEW, SELL
from workbench.errors import ConfigError
from workbench.shared_data import shared_path

_NEW, _CANCEL = 0, 1  # request kinds
_FILL = -1  # a response carrying a fill


@dataclass(frozen=True)
class L3Config:
    """Settings of an L3 backtest (module docstring).

    latency: ConstantLatency (entry: strategy -> exchange, response: exchange -> strategy; ns).
    interval_ns / start_ns: the synthetic clock of the recording (`l3_events.read_l3`).
    maker_fee_bps / taker_fee_bps: fee rates. infer_trades: also the "inferred" fill rule.
    record_every_ns: equity record interval (feed time). max_messages: read only the first
    messages of a recording path. symbol: the name the result carries.
    """

    latency: ConstantLatency = field(
        default_factory=lambda: ConstantLatency(1_000_000, 1_000_000))
    interval_ns: int = 1_000_000
    start_ns: int = 0
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    infer_trades: bool = False
    record_every_ns: int = 100_000_000
    max_messages: int | None = None
    symbol: str = "tBTCUSD"


@dataclass
class LocalOrder:
    """An order as the strategy knows it (live until its fill, cancel or expiry reaches it)."""

    order_id: int
    side: int
    price: float
    qty: float
    post_only: bool
    ts_sent_ns: int
    cancel_sent: bool = False


class L3Gateway:
    """The strategy's view: the feed book at local time, its position, cash, fees and live
    orders as the responses that reached it say; `submit` / `cancel` send requests."""

    def __init__(self, book: L3Book) -> None:
        self.book = book
        self.ts_ns = 0
        self.position = 0.0
        self.balance = 0.0
        self.fees = 0.0
        self.orders: dict[int, LocalOrder] = {}
        self.outbox: list[tuple[int, int]] = []  # (request kind, order id) sent this call
        self._next_id = 1

    @property
    def best_bid(self) -> float:
        return self.book.best_bid()

    @property
    def best_ask(self) -> float:
        return self.book.best_ask()

    def working(self, side: int) -> list[LocalOrder]:
        """Live orders of `side` (+1 buy, -1 sell) with no cancel sent."""
        return [o for o in self.orders.values() if o.side == side and not o.cancel_sent]

    def submit(self, side: int, price: float, qty: float, post_only: bool = True) -> int:
        """Send a limit order; returns its id. ValueError for a bad side, price or qty."""
        if side not in (BUY, SELL) or not price > 0 or not qty > 0:
            raise ValueError(f"bad order: side {side}, price {price}, qty {qty}")
        oid = self._next_id
        self._next_id += 1
        self.orders[oid] = LocalOrder(oid, side, price, qty, post_only, self.ts_ns)
        self.outbox.append((_NEW, oid))
        return oid

    def cancel(self, order_id: int) -> None:
        """Send a cancel for a live order (a second cancel of the same order is ignored)."""
        order = self.orders[order_id]
        if not order.cancel_sent:
            order.cancel_sent = True
            self.outbox.append((_CANCEL, order_id))


class L3Quoter:
    """Quotes `qty` post-only at the feed's best bid and best ask, cancelling and requoting a
    side whose best price moved; stops buying at position >= max_position (selling at <=
    -max_position) as far as the fills that reached it say."""

    def __init__(self, qty: float, max_position: float = math.inf) -> None:
        self.qty = qty
        self.max_position = max_position

    def __call__(self, gw: L3Gateway) -> None:
        bid, ask = gw.best_bid, gw.best_ask
        if not bid < ask:  # one side empty, or a crossed feed
            return
        for side, price, allowed in ((BUY, bid, gw.position < self.max_position),
                                     (SELL, ask, gw.position > -self.max_position)):
            kept = False
            for order in gw.working(side):
                if allowed and order.price == price and not kept:
                    kept = True
                else:
                    gw.cancel(order.order_id)
            if allowed and not kept:
                gw.submit(side, price, self.qty)


class _Columns:
    """Row-wise logs turned into numpy columns at the end."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.rows: list[tuple] = []

    def arrays(self, dtypes: dict[str, object]) -> dict[str, np.ndarray]:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(self.names)
        return {n: np.asarray(c, dtype=dtypes.get(n, np.float64))
                for n, c in zip(self.names, cols, strict=True)}


class _Exchange:
    """The simulated exchange side: our orders in the L3 book, fills, responses."""

    def __init__(self, book: L3Book, cfg: L3Config) -> None:
        self.book = book
        self.cfg = cfg
        self.maker = cfg.maker_fee_bps / 1e4
        self.taker = cfg.taker_fee_bps / 1e4
        self.position = self.balance = self.fees = 0.0
        self.orders: dict[int, dict] = {}
        # (local ns, status or _FILL, order id, fill qty, fill price, fee)
        self.responses: deque[tuple[int, int, int, float, float, float]] = deque()
        self.fills = _Columns(("order_id", "side", "price", "qty", "fee", "maker", "ts_exch_ns",
                               "ts_local_ns", "ts_sent_ns", "mid", "queue_ahead_entry",
                               "queue_ahead_fill", "rule"))

    def new(self, order: LocalOrder, ts: int) -> None:
        rec = {"order_id": order.order_id, "side": order.side, "price": order.price,
               "qty": order.qty, "tif": GTX if order.post_only else GTC,
               "ts_sent_ns": order.ts_sent_ns, "ts_exch_ns": ts, "ts_cancel_exch_ns": -1,
               "ts_done_exch_ns": -1, "status": NEW, "queue_ahead": math.nan}
        self.orders[order.order_id] = rec
        opposite = self.book.best_ask() if order.side == BUY else self.book.best_bid()
        crosses = (order.price >= opposite) if order.side == BUY else (order.price <= opposite)
        if crosses and order.post_only:
            self._done(rec, EXPIRED, ts)
            return
        if crosses:
            left = order.qty
            for price, qty in self.book.depth(-order.side):
                if left <= 0 or (price > order.price if order.side == BUY
                                 else price < order.price):
                    break
                take = min(qty, left)
                left -= take
                self._fill(rec, price, take, ts, False, math.nan, "taker")
            self._done(rec, FILLED if left <= 1e-12 else EXPIRED, ts)
            return
        rec["queue_ahead"] = self.book.add_own(order.order_id, order.side, order.price,
                                               order.qty)
        self._respond(ts, NEW, order.order_id)

    def cancel(self, order_id: int, ts: int) -> None:
        rec = self.orders[order_id]
        rec["ts_cancel_exch_ns"] = ts
        if rec["status"] == NEW:
            self.book.remove_own(order_id)
            self._done(rec, CANCELED, ts)

    def clear(self, ts: int) -> None:
        """A new snapshot: our resting orders expire (hftbacktest `clear_orders`)."""
        for oid in self.book.own_ids():
            self.book.remove_own(oid)
            self._done(self.orders[oid], EXPIRED, ts)
        self.book.clear_feed()

    def apply(self, action: int, oid: int, side: int, price: float, qty: float, ts: int
              ) -> None:
        """One L3 row on the book, then the fill rules (module docstring)."""
        inferred: list[int] = []
        if action == A_ADD:
            self.book.add(oid, side, price, qty)
        elif action == A_MODIFY:
            _, old_price, old_qty = self.book.order(oid)
            if self.cfg.infer_trades and price == old_price and qty < old_qty:
                inferred = self.inferred_before(oid)
            self.book.modify(oid, side, price, qty)
        elif action == A_DELETE:
            if self.cfg.infer_trades:
                inferred = self.inferred_before(oid)
            self.book.delete(oid)
        elif action == A_CLEAR:
            self.clear(ts)
        if inferred:
            self.fill_resting(inferred, ts, "inferred")
        crossed = self.crossed()
        if crossed:
            self.fill_resting(crossed, ts, "cross")

    def inferred_before(self, order_id: int) -> list[int]:
        """Our orders the removal/decrease of feed order `order_id` executes (module rule)."""
        side, price, _ = self.book.order(order_id)
        best = self.book.best_bid() if side > 0 else self.book.best_ask()
        return self.book.own_ahead_of(order_id) if price == best else []

    def fill_resting(self, oids: list[int], ts: int, rule: str) -> None:
        for oid in oids:
            rec = self.orders[oid]
            ahead = self.book.queue_ahead(oid)
            self.book.remove_own(oid)
            self._fill(rec, rec["price"], rec["qty"], ts, True, ahead, rule)
            self._done(rec, FILLED, ts)

    def crossed(self) -> list[int]:
        bid, ask = self.book.best_bid(), self.book.best_ask()
        out = []
        for oid in self.book.own_ids():
            side, price, _ = self.book.own(oid)
            if (side == BUY and price >= ask) or (side == SELL and price <= bid):
                out.append(oid)
        return out

    def _fill(self, rec: dict, price: float, qty: float, ts: int, maker: bool, ahead: float,
              rule: str) -> None:
        fee = price * qty * (self.maker if maker else self.taker)
        side = rec["side"]
        self.position += side * qty
        self.balance -= side * qty * price
        self.fees += fee
        local = ts + self.cfg.latency.response_ns
        self.fills.rows.append((rec["order_id"], side, price, qty, fee, maker, ts, local,
                                rec["ts_sent_ns"], self.book.mid(), rec["queue_ahead"], ahead,
                                rule))
        self.responses.append((local, _FILL, rec["order_id"], qty, price, fee))

    def _done(self, rec: dict, status: int, ts: int) -> None:
        rec["status"] = status
        rec["ts_done_exch_ns"] = ts
        self._respond(ts, status, rec["order_id"])

    def _respond(self, ts: int, status: int, order_id: int) -> None:
        self.responses.append((ts + self.cfg.latency.response_ns, status, order_id, 0.0, 0.0,
                               0.0))


def _deliver(gw: L3Gateway, responses: deque, now: int) -> None:
    """Apply the responses due by `now` to the strategy's view."""
    while responses and responses[0][0] <= now:
        _, status, oid, qty, price, fee = responses.popleft()
        order = gw.orders.get(oid)
        if status == _FILL and order is not None:
            gw.position += order.side * qty
            gw.balance -= order.side * qty * price
            gw.fees += fee
        elif status in (FILLED, CANCELED, EXPIRED):
            gw.orders.pop(oid, None)


def l3_backtest(data: str | Path | L3Events, strategy: Callable[[L3Gateway], None],
                config: L3Config | None = None) -> TickResult:
    """Run `strategy` over an L3 recording (path, absolute or relative to the shared data
    directory, or `L3Events`) with the L3 FIFO queue model; returns a TickResult (module
    docstring). Raises ConfigError, RecordingError, SharedDataMissing."""
    cfg = config or L3Config()
    if not isinstance(cfg.latency, ConstantLatency):
        raise ConfigError("l3_backtest: the latency must be a ConstantLatency")
    if cfg.record_every_ns <= 0:
        raise ConfigError(f"l3_backtest: record_every_ns must be > 0, got {cfg.record_every_ns}")
    if not isinstance(data, L3Events):
        path = Path(data)
        path = path if path.exists() else shared_path(str(data))
        data = read_l3(path, cfg.interval_ns, cfg.start_ns, cfg.max_messages)
    started = time.perf_counter()
    book = L3Book()
    ex = _Exchange(book, cfg)
    gw = L3Gateway(book)
    requests: deque[tuple[int, int, int]] = deque()  # (arrive ns, kind, order id)
    records = _Columns(("ts_ns", "mid", "position", "balance", "fees"))
    next_record = -1

    rows = data.rows
    ts_col, oid_col, side_col = rows["ts_event_ns"], rows["order_id"], rows["side"]
    act_col, px_col, qty_col = rows["action"], rows["price"], rows["qty"]
    for i in range(len(rows)):
        ts = int(ts_col[i])
        while requests and requests[0][0] <= ts:
            arrive, kind, oid = requests.popleft()
            if kind == _NEW:
                ex.new(gw.orders[oid], arrive)
            else:
                ex.cancel(oid, arrive)
        ex.apply(int(act_col[i]), int(oid_col[i]), int(side_col[i]), float(px_col[i]),
                 float(qty_col[i]), ts)
        if i + 1 < len(rows) and ts_col[i + 1] == ts:
            continue
        _deliver(gw, ex.responses, ts)
        gw.ts_ns = ts
        strategy(gw)
        for kind, req_oid in gw.outbox:
            requests.append((ts + cfg.latency.entry_ns, kind, req_oid))
        gw.outbox.clear()
        if ts >= next_record:
            records.rows.append((ts, book.mid(), ex.position, ex.balance, ex.fees))
            next_record = ts + cfg.record_every_ns
    if len(rows):
        records.rows.append((int(ts_col[-1]), book.mid(), ex.position, ex.balance, ex.fees))
    dtypes = {"order_id": np.int64, "side": np.int8, "ts_exch_ns": np.int64,
            "ts_local_ns": np.int64, "ts_sent_ns": np.int64, "ts_ns": np.int64,
            "maker": np.bool_, "rule": np.str_, "tif": np.int8, "status": np.int8,
            "ts_cancel_exch_ns": np.int64, "ts_done_exch_ns": np.int64}
    order_names = ("order_id", "side", "price", "qty", "tif", "ts_sent_ns", "ts_exch_ns",
                   "ts_cancel_exch_ns", "ts_done_exch_ns", "status", "queue_ahead")
    orders = _Columns(order_names)
    orders.rows = [tuple(r[n] for n in order_names) for r in ex.orders.values()]
    return TickResult(ex.fills.arrays(dtypes), orders.arrays(dtypes), records.arrays(dtypes),
                      events=len(rows), feeds=len(rows),
                      seconds=time.perf_counter() - started, position=ex.position,
                      balance=ex.balance, fees=ex.fees, symbol=cfg.symbol,
                      tick_size=math.nan, lot_size=math.nan)
