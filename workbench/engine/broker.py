"""PaperBroker: market and limit (optionally post-only) orders filled against the current book.

Matching rules (documented because every PnL figure depends on them):
- Time is market time (the `ts_event_ns` of the batch being processed, so fills are
  deterministic for a recording whatever the dispatch mode), the tick backtester's exchange
  time. A request (a new order or a cancel) reaches the "exchange" `latency_ns` after it was
  sent, and no earlier than the request of that symbol sent before it (one FIFO per symbol,
  as the kernel's order bus: `workbench.backtest.tick.kernel._push_bx`).
- The kernel's order of events at one time T (`kernel.run`: exchange rows before requests at
  a tie), as the engine drives the broker for the batch at market time T: first the requests
  that arrived before T, in arrival order, on the book as it was before the batch
  (`on_arrivals`; their fills are stamped with their arrival time); then the batch's rows
  against the resting orders, and the requests arriving at T, on the book after the batch
  (`on_book`, stamped T). So an order that arrives at T is matched after T's rows, one that
  arrives at T - 1 ns before them. With latency 0 a request sent on the batch at T arrives at
  T: after T's rows, on the book the strategy saw.
- cancel: travels like an order; until it arrives the order stays live and can fill. On
  arrival it cancels the order if it is still resting, else it is rejected (`cancels_rejected`;
  the order was filled meanwhile): the kernel's `_cancel_order`.
- What a strategy can learn when it is called on the batch at T: what happened at exchange
  times before T, nothing at T (the engine calls the strategy before `on_book`): the kernel
  with a response latency of 1 ns when batch times are distinct. A compiled strategy learns
  it through `CompiledAdapter`, which can delay it by a response latency as the kernel does
  (`response_ns`); Python strategies are given no fills.
- market: walks the opposite side of the book, level by level, filling min(remaining, level
  size) at each level's price (taker fee). What the visible depth cannot fill is cancelled:
  a partial fill.
- limit, not post-only: the marketable part walks the levels priced at or better than the
  limit (taker); the rest rests at the limit price.
- limit, post-only: rejected if it would cross the spread at arrival; otherwise it rests.
- a resting buy at P fills when the best ask is at or below P: min(remaining, visible size on
  asks priced <= P) at P (maker fee); sells mirror it. The book is not depleted by our fills.
- fee = price * qty * bps / 10_000, in quote units (a negative maker bps is a rebate).

With `queue_model="risk_averse"` (opt-in; EngineConfig `queue_model` and `lot_size`,
`workbench run --queue-model risk_averse --lot-size L`) a resting limit order fills by the tick
backtester's rules instead of the last rule above. It keeps a queue position (the quantity
ahead of it at its price, starting at the level's visible quantity when it rests), which the
rows of each later batch move by the backtester's risk-averse model (`workbench.backtest.tick.
queue`, hftbacktest's `RiskAdverseQueueModel`): a trade of q at its price: ahead -= q, and once
round(-ahead / lot) >= 1 it fills min(remaining, that many lots); a depth change of its level
to q: ahead = min(ahead, q); a trade through its price fills min(remaining, trade qty); an
opposite row at or through its price (the book crossed it) fills it whole; all at its price
(maker). These are the kernel's rules with partial fills (`TickConfig(partial=True)`); why
each one is the kernel's is in `workbench.engine.queue_position`. The starting queue is read
at any depth (`L2Book.level_qty`; the kernel reads it anywhere in its price range). The rows
are those of the batch the order rested through (`on_book(..., batch=)`): an order that
arrives at a batch's time joins after that batch's rows, one that arrives before it
(`on_arrivals`) joins before them. They
are the message's rows as the engine got them: deltas a snapshot drains from BookSync's buffer
are not among them (the tick converter writes them at the snapshot's time), and a stale
delta's rows are (the converter drops them).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from workbench.engine.config import QUEUE_MODELS
from workbench.engine.queue_position import PRICE_RTOL, QueueState, row_fill
from workbench.engine.strategy import OrderRequest
from workbench.errors import ConfigError
from workbench.events import Side

TOP_LEVELS = 5
DEPTH_LEVELS = 50
NEW_ORDER, CANCEL = 0, 1  # the kinds of request in flight


class Fill(NamedTuple):
    """One execution: order_id, symbol_id, side (Side), price, qty (> 0), fee (quote),
    liquidity (`maker` | `taker`), ts_ns (market time, ns), seq (batch sequence number).
    An immutable record (a NamedTuple: built ~5x faster than a frozen dataclass, on the order
    path)."""

    order_id: int
    symbol_id: int
    side: int
    price: float
    qty: float
    fee: float
    liquidity: str
    ts_ns: int
    seq: int

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side == Side.BUY else -self.qty


@dataclass(slots=True)
class Order:
    """An order at the broker. status: pending (in flight), open (resting), filled,
    cancelled (by a cancel, or the unfilled rest of a market order), rejected (post-only would
    cross). arrive_ns: when it reaches the exchange (market time, ns); cancel_ns: when its
    cancel does (None: none sent). queue: its queue position while it rests (risk_averse
    queue model only, else None)."""

    order_id: int
    request: OrderRequest
    submit_ns: int
    arrive_ns: int
    filled: float = 0.0
    status: str = "pending"
    queue: QueueState | None = None
    cancel_ns: int | None = None

    @property
    def remaining(self) -> float:
        return self.request.qty - self.filled


class PaperBroker:
    """Paper execution against an L2 book (see the module docstring for the rules).

    submit(request, now_ns) -> Order (the ack; matching happens when it arrives).
    cancel(order_id, now_ns) -> whether a cancel was sent (it takes effect when it arrives).
    on_arrivals(symbol_id, book, before_ns, seq) -> fills of the requests arriving before
    before_ns, on `book` as it is (the engine calls it before applying a batch to the book).
    on_book(symbol_id, book, now_ns, seq, batch) -> fills of that symbol's orders at this update
    (the batch's rows against resting orders, then the requests arriving at or before now_ns).
    The book must offer `best_bid`, `best_ask` (NaN when empty) and `depth(n)`.
    queue_model: `none` (the book-crossing rule) or `risk_averse` (module docstring), which
    needs the instrument's lot_size (> 0, base units). Raises ConfigError for another model or
    a missing lot size.
    Memory: only live (pending and open) orders are kept, in `orders` by id and in `active`
    by symbol; an order that is done (filled, cancelled, rejected) leaves both, and a symbol
    without live orders leaves `active`, so a long run holds no per-order state (the
    Executor's journal is the record of every order and fill).
    """

    def __init__(self, maker_fee_bps: float = 0.0, taker_fee_bps: float = 0.0,
                 latency_ns: int = 0, queue_model: str = "none", lot_size: float = 0.0
                 ) -> None:
        if queue_model not in QUEUE_MODELS:
            raise ConfigError(f"PaperBroker: queue_model must be one of {QUEUE_MODELS}, got "
                              f"{queue_model!r}")
        if queue_model != "none" and not lot_size > 0:
            raise ConfigError(f"PaperBroker: the {queue_model} queue model needs lot_size > 0, "
                              f"got {lot_size!r}")
        self.queue_model = queue_model
        self.lot_size = float(lot_size)
        self.maker_rate = maker_fee_bps / 10_000.0
        self.taker_rate = taker_fee_bps / 10_000.0
        self.latency_ns = int(latency_ns)
        self._ids = itertools.count(1)
        self.active: dict[int, list[Order]] = {}  # symbol_id -> pending and open orders
        # order_id -> pending and open order (read-only outside the broker)
        self.orders: dict[int, Order] = {}
        # symbol_id -> requests in flight, (arrive_ns, NEW_ORDER | CANCEL, order), FIFO
        self._inflight: dict[int, deque[tuple[int, int, Order]]] = {}
        self.rejected = 0
        self.cancels_rejected = 0

    def submit(self, request: OrderRequest, now_ns: int) -> Order:
        """Accept an order (the ack); it reaches the exchange at `arrive_ns` (module
        docstring)."""
        sid = request.symbol_id
        order = Order(next(self._ids), request, now_ns, self._arrival(sid, now_ns))
        self.orders[order.order_id] = order
        self.active.setdefault(sid, []).append(order)
        self._inflight.setdefault(sid, deque()).append((order.arrive_ns, NEW_ORDER, order))
        return order

    def cancel(self, order_id: int, now_ns: int) -> bool:
        """Send a cancel of a pending or open order, sent at market time now_ns; it takes effect
        when it arrives (module docstring). False if the order is done (or unknown) or a
        cancel of it is already in flight."""
        order = self.orders.get(order_id)
        if order is None or order.cancel_ns is not None:
            return False
        sid = order.request.symbol_id
        order.cancel_ns = self._arrival(sid, now_ns)
        self._inflight.setdefault(sid, deque()).append((order.cancel_ns, CANCEL, order))
        return True

    def _arrival(self, symbol_id: int, now_ns: int) -> int:
        """When a request sent at now_ns arrives: after the latency, and not before the
        symbol's previous request in flight (FIFO)."""
        arrive = now_ns + self.latency_ns
        inflight = self._inflight.get(symbol_id)
        if inflight:
            arrive = max(arrive, inflight[-1][0])
        return arrive

    def has_active(self, symbol_id: int) -> bool:
        """Whether `symbol_id` has pending or resting orders."""
        return bool(self.active.get(symbol_id))

    def orders_active(self, symbol_id: int) -> list[Order]:
        """The symbol's pending and resting orders (a copy)."""
        return list(self.active.get(symbol_id, ()))

    def on_arrivals(self, symbol_id: int, book, before_ns: int, seq: int = 0) -> list[Fill]:
        """The symbol's requests arriving strictly before before_ns, in arrival order, matched
        on `book` as it is (the book before the batch at before_ns); their fills are stamped
        with their arrival time. Returns the fills (maybe none)."""
        inflight = self._inflight.get(symbol_id)
        if not inflight or inflight[0][0] >= before_ns:
            return []
        fills: list[Fill] = []
        self._requests(symbol_id, book, _Levels(book), before_ns - 1, None, seq, fills)
        self._prune(symbol_id)
        return fills

    def on_book(self, symbol_id: int, book, now_ns: int, seq: int = 0,
                batch: np.ndarray | None = None) -> list[Fill]:
        """Match the symbol's orders against `book` at now_ns: the resting ones by the batch's
        rows (queue model) or the book (none), then the requests arriving at or before now_ns;
        returns the fills (maybe none), stamped now_ns. batch: the EVENT_DTYPE rows `book`
        just applied (the risk_averse queue model moves the resting orders' queues by them;
        None: no rows, as for a second call on one batch)."""
        active = self.active.get(symbol_id)
        if not active:
            return []
        fills: list[Fill] = []
        levels = _Levels(book)
        if self.queue_model != "none":
            if batch is not None and len(batch):
                self._queue_rows(active, batch, now_ns, seq, fills)
        else:
            for order in active:
                if order.status == "open":
                    self._rest(order, levels, now_ns, seq, fills)
        self._requests(symbol_id, book, levels, now_ns, now_ns, seq, fills)
        self._prune(symbol_id)
        return fills

    def _requests(self, symbol_id: int, book, levels, until_ns: int, stamp_ns: int | None,
                  seq: int, fills: list[Fill]) -> None:
        """Process the symbol's requests arriving at or before until_ns, in arrival order;
        fills stamped stamp_ns (None: each request's arrival time)."""
        inflight = self._inflight.get(symbol_id)
        queued = self.queue_model != "none"
        while inflight and inflight[0][0] <= until_ns:
            arrive, kind, order = inflight.popleft()
            if kind == CANCEL:
                if order.status == "open":
                    order.status = "cancelled"
                else:
                    self.cancels_rejected += 1
                continue
            self._arrive(order, levels, arrive if stamp_ns is None else stamp_ns, seq, fills)
            if queued and order.status == "open":
                order.queue = QueueState(book.level_qty(order.request.side == Side.BUY,
                                                         order.request.price, PRICE_RTOL))
        if inflight is not None and not inflight:
            del self._inflight[symbol_id]

    def _prune(self, symbol_id: int) -> None:
        """Done orders leave `orders` and `active`; a symbol without live orders leaves
        `active`, and its cancels still in flight (all of done orders) are rejected."""
        active = self.active.get(symbol_id)
        if active is None:
            return
        live = [o for o in active if o.status == "open" or o.status == "pending"]
        if len(live) != len(active):
            for order in active:
                if order.status != "open" and order.status != "pending":
                    del self.orders[order.order_id]
            active[:] = live
        if not live:
            del self.active[symbol_id]
            stale = self._inflight.pop(symbol_id, ())
            self.cancels_rejected += len(stale)

    # -- matching ---------------------------------------------------------------------
    def _arrive(self, order: Order, levels, now_ns: int, seq: int, fills: list[Fill]) -> None:
        req = order.request
        buy = req.side == Side.BUY
        prices, sizes = levels.side(not buy, req.qty)
        if req.order_type == "market":
            self._take(order, prices, sizes, math.inf if buy else -math.inf, now_ns, seq, fills)
            order.status = "filled" if order.remaining <= 1e-12 else "cancelled"
            return
        best = prices[0] if len(prices) else math.nan
        crosses = best == best and (best <= req.price if buy else best >= req.price)
        if crosses and req.post_only:
            order.status = "rejected"
            self.rejected += 1
            return
        if crosses:
            self._take(order, prices, sizes, req.price, now_ns, seq, fills)
        order.status = "filled" if order.remaining <= 1e-12 else "open"

    def _take(self, order: Order, prices, sizes, limit: float, now_ns: int, seq: int,
              fills: list[Fill]) -> None:
        req = order.request
        buy = req.side == Side.BUY
        for price, size in zip(prices, sizes, strict=True):
            if order.remaining <= 1e-12 or (price > limit if buy else price < limit):
                break
            qty = min(order.remaining, size)
            self._fill(order, price, qty, self.taker_rate, "taker", now_ns, seq, fills)

    def _queue_rows(self, active: list[Order], batch: np.ndarray, now_ns: int, seq: int,
                    fills: list[Fill]) -> None:
        """The batch's rows, in order, against the orders resting before it (as the kernel:
        each row against every order, in arrival order)."""
        resting = [o for o in active if o.status == "open" and o.queue is not None]
        if not resting:
            return
        lot = self.lot_size
        for kind, side, price, qty in zip(batch["kind"].tolist(), batch["side"].tolist(),
                                          batch["price"].tolist(), batch["qty"].tolist(),
                                          strict=True):
            for order in resting:
                if order.status != "open":
                    continue
                req = order.request
                q = row_fill(order.queue, req.side == Side.BUY, req.price, order.remaining,
                             kind, side, price, qty, lot)
                if q > 0.0:
                    self._fill(order, req.price, q, self.maker_rate, "maker", now_ns, seq,
                               fills)
                    if order.remaining <= 1e-12:
                        order.status = "filled"

    def _rest(self, order: Order, levels, now_ns: int, seq: int, fills: list[Fill]) -> None:
        req = order.request
        buy = req.side == Side.BUY
        prices, sizes = levels.side(not buy, req.qty)
        visible = 0.0
        for price, size in zip(prices, sizes, strict=True):
            if price > req.price if buy else price < req.price:
                break
            visible += size
        if visible > 0.0:
            qty = min(order.remaining, visible)
            self._fill(order, req.price, qty, self.maker_rate, "maker", now_ns, seq, fills)
            if order.remaining <= 1e-12:
                order.status = "filled"

    def _fill(self, order: Order, price: float, qty: float, rate: float, liquidity: str,
              now_ns: int, seq: int, fills: list[Fill]) -> None:
        req = order.request
        order.filled += qty
        fills.append(Fill(order.order_id, req.symbol_id, int(req.side), float(price),
                          float(qty), float(price) * float(qty) * rate, liquidity, now_ns, seq))


class _Levels:
    """The book's levels as the broker reads them, fetched lazily and only as deep as an order
    needs: the best level of the side (no array copies), else the top TOP_LEVELS, else the
    top DEPTH_LEVELS."""

    def __init__(self, book) -> None:
        self.book = book
        self._cache: dict[tuple[bool, int], tuple[list[float], list[float]]] = {}

    def side(self, bids: bool, qty: float) -> tuple[list[float], list[float]]:
        """(prices, sizes) of the bid (True) or ask side, best first, deep enough to show
        `qty` if the top DEPTH_LEVELS can (empty lists for an empty side)."""
        book = self.book
        if bids:
            price, size = book.best_bid, book.best_bid_qty
        else:
            price, size = book.best_ask, book.best_ask_qty
        if size >= qty:  # NaN (empty side) compares False
            return [price], [size]
        for n in (TOP_LEVELS, DEPTH_LEVELS):
            prices, sizes = self._get(bids, n)
            if sum(sizes) >= qty or len(prices) < n:
                break
        return prices, sizes

    def _get(self, bids: bool, n: int) -> tuple[list[float], list[float]]:
        key = (bids, n)
        got = self._cache.get(key)
        if got is None:
            depth = self.book.depth(n)
            got = (depth[0].tolist(), depth[1].tolist()) if bids else (
                depth[2].tolist(), depth[3].tolist())
            self._cache[key] = got
        return got
