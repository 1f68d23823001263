"""Executor: the single place orders pass through (slicing, risk, broker, positions, journal).

Every order a strategy asks for, and every flatten, goes: slice into child orders of at most
`slice_qty` -> RiskLimits.check -> PaperBroker.submit (the ack). Fills come back through
`on_arrivals` (requests arriving before a batch, matched on the book before it) and `on_book`
(after it), are booked in Positions and journaled. Cancels travel like orders (`cancel`).
Counters: orders sent, rejected by reason, fills.

With `jitter` (engine.jitter.JitterSlicing), an order of at least its min_qty is sent as its
children with random delays (`set_jitter`): the first at once, the others held (`deferred`) until
`release(now_ns)` finds market time past their due time (the engine calls it on each batch);
`flatten` drops a symbol's held children.

Memory: every fill goes to the journal (`runs/<run-id>/fills.parquet`); in memory the Executor
keeps a count of them all (`fill_count`) and only the most recent `RECENT_FILLS` (`fills`, a
deque, oldest first), so a long run's fills do not grow the process.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque

import numpy as np

from workbench.engine.broker import Fill, PaperBroker
from workbench.engine.jitter import JitterSlicing
from workbench.engine.journal import Journal
from workbench.engine.positions import Positions
from workbench.engine.risk import RiskLimits
from workbench.engine.strategy import OrderRequest
from workbench.events import Side

RECENT_FILLS = 10_000  # fills kept in memory (the newest); the journal has every one


def slice_order(request: OrderRequest, slice_qty: float) -> list[OrderRequest]:
    """Split `request` into children of at most `slice_qty` (the last one takes the rest);
    slice_qty <= 0 or >= qty: the order itself."""
    if slice_qty <= 0 or request.qty <= slice_qty:
        return [request]
    n = math.ceil(request.qty / slice_qty - 1e-9)
    children = [slice_qty] * (n - 1)
    children.append(request.qty - slice_qty * (n - 1))
    return [
        OrderRequest(request.symbol_id, request.side, q, request.order_type, request.price,
                     request.post_only, request.tag)
        for q in children
        if q > 1e-12
    ]


class Executor:
    """Routes orders: submit(requests, now_ns, seq) -> number of acks;
    on_arrivals(symbol_id, book, before_ns, seq) and on_book(symbol_id, book, now_ns, seq) ->
    fills booked; cancel(order_id, now_ns, seq); flatten(symbol_id, now_ns, seq).
    fill_count: fills booked since construction; fills: the newest `recent_fills` of them."""

    def __init__(self, broker: PaperBroker, risk: RiskLimits, positions: Positions,
                 slice_qty: float = 0.0, journal: Journal | None = None,
                 recent_fills: int = RECENT_FILLS, jitter: JitterSlicing | None = None
                 ) -> None:
        self.broker = broker
        self.risk = risk
        self.positions = positions
        self.slice_qty = slice_qty
        self.journal = journal
        self.orders_sent = 0
        self.orders_rejected = 0
        self.fill_count = 0
        self.fills: deque[Fill] = deque(maxlen=recent_fills)
        self._pending: dict[int, float] = {}  # symbol_id -> signed qty not yet filled
        self.jitter = jitter
        self._rng = random.Random(jitter.seed if jitter is not None else 0)
        # children held by jitter: a heap of (due_ns, n, child), read-only outside
        self.deferred: list[tuple[int, int, OrderRequest]] = []
        self._deferred_n = itertools.count()

    def pending_qty(self, symbol_id: int) -> float:
        """Signed quantity of this symbol's orders still at the broker."""
        return self._pending.get(symbol_id, 0.0)

    def submit(self, requests: list[OrderRequest], now_ns: int, seq: int = 0) -> int:
        """Slice, risk-check and send each request; returns the broker acks."""
        acks = 0
        journal = self.journal
        for parent in requests:
            for child in self._now(parent, now_ns):
                sid = child.symbol_id
                pending = self.pending_qty(sid)
                reason = self.risk.check(child, self.positions.qty(sid), pending, now_ns)
                if reason is not None:
                    self.orders_rejected += 1
                    if journal is not None:
                        self._journal_order(0, child, now_ns, seq, f"rejected:{reason}")
                    continue
                order = self.broker.submit(child, now_ns)
                self._pending[sid] = pending + (child.qty if child.side == Side.BUY
                                                else -child.qty)
                self.orders_sent += 1
                acks += 1
                if journal is not None:
                    self._journal_order(order.order_id, child, now_ns, seq, "ack")
        return acks

    def set_jitter(self, jitter: JitterSlicing | None) -> None:
        """Slice with jitter from now on (None: stop); the delays restart from its seed."""
        self.jitter = jitter
        self._rng = random.Random(jitter.seed if jitter is not None else 0)

    def release(self, now_ns: int, seq: int = 0) -> int:
        """Send the held children due at or before now_ns; returns the broker acks."""
        due: list[OrderRequest] = []
        while self.deferred and self.deferred[0][0] <= now_ns:
            due.append(heapq.heappop(self.deferred)[2])
        if not due:
            return 0
        jitter, self.jitter = self.jitter, None  # released children are not sliced again
        slice_qty, self.slice_qty = self.slice_qty, 0.0
        try:
            return self.submit(due, now_ns, seq)
        finally:
            self.jitter, self.slice_qty = jitter, slice_qty

    def _now(self, parent: OrderRequest, now_ns: int) -> list[OrderRequest]:
        """The children of `parent` to send now (slicing; with jitter, the rest are held)."""
        children = slice_order(parent, self.slice_qty)
        if self.jitter is None:
            return children
        out = []
        for child in children:
            for delay, part in self.jitter.plan(child, self._rng):
                if delay == 0:
                    out.append(part)
                else:
                    heapq.heappush(self.deferred, (now_ns + delay, next(self._deferred_n), part))
        return out

    def on_arrivals(self, symbol_id: int, book, before_ns: int, seq: int = 0) -> list[Fill]:
        """Let the broker match this symbol's requests arriving before before_ns on `book` as
        it is (before the batch at before_ns is applied: `PaperBroker.on_arrivals`); book the
        fills."""
        if not self.broker.active.get(symbol_id):
            return []
        fills = self.broker.on_arrivals(symbol_id, book, before_ns, seq)
        if fills:
            self._booked(symbol_id, book, fills)
        return fills

    def on_book(self, symbol_id: int, book, now_ns: int, seq: int = 0,
                batch: np.ndarray | None = None) -> list[Fill]:
        """Let the broker match this symbol's orders on the updated book (batch: the rows it
        applied, for the broker's queue model); book the fills."""
        if not self.broker.active.get(symbol_id):
            return []
        fills = self.broker.on_book(symbol_id, book, now_ns, seq, batch)
        if fills:
            self._booked(symbol_id, book, fills)
        else:
            self._sync_pending(symbol_id)
        return fills

    def _booked(self, symbol_id: int, book, fills: list[Fill]) -> None:
        """Mark the symbol at the book's mid, book each fill, recount what is pending."""
        mid = book.mid
        if mid == mid:
            self.positions.mark(symbol_id, mid)
        for fill in fills:
            self._book_fill(fill)
        self._sync_pending(symbol_id)

    def _book_fill(self, fill: Fill) -> None:
        realized = self.positions.apply_fill(fill.symbol_id, fill.signed_qty, fill.price,
                                             fill.fee)
        self.fills.append(fill)
        self.fill_count += 1
        if self.journal is not None:
            pos = self.positions.get(fill.symbol_id)
            self.journal.append("fills", {
                "order_id": fill.order_id, "symbol_id": fill.symbol_id, "side": fill.side,
                "price": fill.price, "qty": fill.qty, "fee": fill.fee,
                "liquidity": fill.liquidity, "ts_ns": fill.ts_ns, "seq": fill.seq,
                "realized_pnl": realized,
            })
            self.journal.append("positions", {
                "ts_ns": fill.ts_ns, "symbol_id": fill.symbol_id, "qty": pos.qty,
                "avg_price": pos.avg_price, "realized_pnl": pos.realized_pnl,
                "fees": pos.fees, "mark": pos.mark,
            })

    def _sync_pending(self, symbol_id: int) -> None:
        total = 0.0
        for order in self.broker.active.get(symbol_id, ()):
            q = order.remaining
            total += q if order.request.side == Side.BUY else -q
        self._pending[symbol_id] = total

    def cancel(self, order_id: int, now_ns: int, seq: int = 0) -> bool:
        """Send a cancel of a pending or resting order to the broker (journaled `cancel_sent`;
        it takes effect when it arrives, `PaperBroker.cancel`); False when the order is done,
        unknown, or a cancel of it is already in flight."""
        order = self.broker.orders.get(order_id)
        if order is None or not self.broker.cancel(order_id, now_ns):
            return False
        if self.journal is not None:
            self._journal_order(order_id, order.request, now_ns, seq, "cancel_sent")
        return True

    def flatten(self, symbol_id: int, now_ns: int, seq: int = 0) -> int:
        """Send cancels of the symbol's active orders (they can still fill until the cancels
        arrive: `PaperBroker.cancel`) and a market order back to flat."""
        for order in list(self.broker.orders_active(symbol_id)):
            self.broker.cancel(order.order_id, now_ns)
        if self.deferred:
            self.deferred = [d for d in self.deferred if d[2].symbol_id != symbol_id]
            heapq.heapify(self.deferred)
        self._pending[symbol_id] = 0.0
        qty = self.positions.qty(symbol_id)
        if abs(qty) <= 1e-12:
            return 0
        side = Side.SELL if qty > 0 else Side.BUY
        return self.submit([OrderRequest(symbol_id, side, abs(qty), tag="flatten")], now_ns, seq)

    def _journal_order(self, order_id: int, req: OrderRequest, now_ns: int, seq: int,
                       status: str) -> None:
        self.journal.append("orders", {
            "order_id": order_id, "symbol_id": req.symbol_id, "side": int(req.side),
            "qty": req.qty, "order_type": req.order_type, "price": req.price,
            "post_only": req.post_only, "tag": req.tag, "ts_ns": now_ns, "seq": seq,
            "status": status,
        })
