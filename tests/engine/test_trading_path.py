"""Positions, PaperBroker, RiskLimits, Executor and EmaCross on real L2Books, against hand
computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.book.l2 import L2Book
from workbench.engine.broker import PaperBroker
from workbench.engine.execution import Executor, slice_order
from workbench.engine.positions import Positions
from workbench.engine.risk import RiskLimits
from workbench.engine.strategy import EmaCross, OrderRequest
from workbench.events import EVENT_DTYPE, EventFlag, EventKind, Side

SID = 1


def book_of(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> L2Book:
    """A real L2Book holding exactly these levels (applied as a snapshot)."""
    n = len(bids) + len(asks) + 2
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["symbol_id"] = SID
    ev["flags"] = int(EventFlag.SNAPSHOT)
    ev["kind"][0] = EventKind.SNAPSHOT_BEGIN
    ev["kind"][-1] = EventKind.SNAPSHOT_END
    for i, (price, qty) in enumerate(bids + asks, start=1):
        ev["kind"][i] = EventKind.BID_LEVEL if i <= len(bids) else EventKind.ASK_LEVEL
        ev["price"][i] = price
        ev["qty"][i] = qty
    book = L2Book(SID)
    book.apply(ev)
    return book


def test_pnl_after_scripted_fills_equals_hand_computation():
    pos = Positions()
    # buy 2 @ 100, buy 1 @ 103 -> qty 3, avg (200 + 103) / 3 = 101
    pos.apply_fill(SID, 2.0, 100.0, fee=0.2)
    pos.apply_fill(SID, 1.0, 103.0, fee=0.1)
    p = pos.get(SID)
    assert p.qty == 3.0 and p.avg_price == pytest.approx(101.0)
    # sell 1 @ 105: realizes (105 - 101) * 1 = 4
    assert pos.apply_fill(SID, -1.0, 105.0, fee=0.1) == pytest.approx(4.0)
    # sell 4 @ 99: closes 2 -> (99 - 101) * 2 = -4, then short 2 @ 99
    assert pos.apply_fill(SID, -4.0, 99.0, fee=0.4) == pytest.approx(-4.0)
    assert p.qty == -2.0 and p.avg_price == 99.0
    # buy 2 @ 97: closes the short -> (97 - 99) * -2 = +4, flat
    assert pos.apply_fill(SID, 2.0, 97.0, fee=0.2) == pytest.approx(4.0)
    assert p.qty == 0.0 and p.avg_price == 0.0
    # buy 1 @ 98, mark at 101 -> unrealized 3
    pos.apply_fill(SID, 1.0, 98.0, fee=0.1)
    pos.mark(SID, 101.0)
    assert p.realized_pnl == pytest.approx(4.0 - 4.0 + 4.0)
    assert p.fees == pytest.approx(1.1)
    assert p.unrealized_pnl == pytest.approx(3.0)
    assert p.net_pnl == pytest.approx(4.0 + 3.0 - 1.1)
    assert pos.totals()["net_pnl"] == pytest.approx(5.9)


def test_market_order_walks_levels_and_partially_fills():
    book = book_of([(99.0, 1.0)], [(100.0, 0.5), (101.0, 0.25), (102.0, 0.25)])
    broker = PaperBroker(maker_fee_bps=-1.0, taker_fee_bps=5.0)
    order = broker.submit(OrderRequest(SID, Side.BUY, 2.0), now_ns=10)
    fills = broker.on_book(SID, book, now_ns=10, seq=7)
    assert [(f.price, f.qty, f.liquidity) for f in fills] == [
        (100.0, 0.5, "taker"), (101.0, 0.25, "taker"), (102.0, 0.25, "taker")]
    assert fills[0].fee == pytest.approx(100.0 * 0.5 * 5e-4)
    assert order.filled == 1.0 and order.status == "cancelled"  # the rest: not visible
    assert not broker.has_active(SID)


def test_post_only_rejected_when_crossing_and_rests_otherwise():
    book = book_of([(99.0, 1.0)], [(100.0, 1.0)])
    broker = PaperBroker(maker_fee_bps=-1.0, taker_fee_bps=5.0)
    crossing = broker.submit(OrderRequest(SID, Side.BUY, 1.0, "limit", 100.0, True), 0)
    resting = broker.submit(OrderRequest(SID, Side.BUY, 1.5, "limit", 99.5, True), 0)
    assert broker.on_book(SID, book, 0) == []
    assert crossing.status == "rejected" and broker.rejected == 1
    assert resting.status == "open"
    # the ask comes down to 99.4 with 1.0 visible: the resting buy fills 1.0 at its limit
    fills = broker.on_book(SID, book_of([(99.0, 1.0)], [(99.4, 1.0)]), 5)
    assert [(f.price, f.qty, f.liquidity) for f in fills] == [(99.5, 1.0, "maker")]
    assert fills[0].fee == pytest.approx(99.5 * 1.0 * -1e-4)
    assert resting.status == "open" and resting.remaining == pytest.approx(0.5)


def test_latency_delays_matching():
    broker = PaperBroker(latency_ns=1_000)
    broker.submit(OrderRequest(SID, Side.SELL, 1.0), now_ns=100)
    first = book_of([(99.0, 5.0)], [(100.0, 5.0)])
    assert broker.on_book(SID, first, now_ns=1_099) == []
    later = book_of([(98.0, 5.0)], [(100.0, 5.0)])
    fills = broker.on_book(SID, later, now_ns=1_100)
    assert [(f.price, f.qty) for f in fills] == [(98.0, 1.0)]  # the book at arrival


def test_risk_limits():
    risk = RiskLimits(max_position=1.0, max_orders_per_s=2, invalid_book_streak=3)
    buy = OrderRequest(SID, Side.BUY, 0.6)
    assert risk.check(buy, 0.0, 0.0, 0) is None
    assert risk.check(buy, 0.6, 0.0, 1) == "max_position"
    assert risk.check(OrderRequest(SID, Side.BUY, 0.1), 0.0, 0.0, 2) is None
    assert risk.check(OrderRequest(SID, Side.BUY, 0.1), 0.0, 0.0, 3) == "max_orders_per_s"
    assert risk.check(OrderRequest(SID, Side.BUY, 0.1), 0.0, 0.0, 1_000_000_001) is None
    assert [risk.on_book(False) for _ in range(3)] == [False, False, True]
    assert risk.halted and "invalid" in risk.halt_reason
    assert risk.check(buy, 0.0, 0.0, 5_000_000_000) == "halted"
    assert risk.check(OrderRequest(SID, Side.SELL, 0.5), 0.7, 0.0, 5_000_000_001) is None
    risk.reset()
    risk.kill("manual")
    assert risk.halted and risk.halt_reason == "manual"


def test_slicing_and_executor_books_fills():
    children = slice_order(OrderRequest(SID, Side.BUY, 1.0), 0.3)
    assert [c.qty for c in children] == pytest.approx([0.3, 0.3, 0.3, 0.1])
    book = book_of([(99.0, 10.0)], [(100.0, 10.0)])
    positions = Positions()
    executor = Executor(PaperBroker(taker_fee_bps=10.0), RiskLimits(5.0, 100), positions,
                        slice_qty=0.4)
    assert executor.submit([OrderRequest(SID, Side.BUY, 1.0)], now_ns=0) == 3
    fills = executor.on_book(SID, book, 0)
    assert len(fills) == 3 and positions.qty(SID) == pytest.approx(1.0)
    assert positions.get(SID).fees == pytest.approx(100.0 * 1.0 * 1e-3)
    assert executor.flatten(SID, 1) == 3  # sliced like any order
    executor.on_book(SID, book, 1)
    assert positions.qty(SID) == pytest.approx(0.0)
    assert positions.get(SID).realized_pnl == pytest.approx(-1.0)  # bought 100, sold 99


def test_ema_cross_follows_the_sign_of_fast_minus_slow():
    strategy = EmaCross(fast=2, slow=4, target_qty=0.5)
    batch = np.zeros(1, dtype=EVENT_DTYPE)
    batch["symbol_id"] = SID
    orders = []
    mids = [100.0] * 5 + [110.0] * 5 + [90.0] * 10
    for mid in mids:
        orders.append(strategy.on_events(book_of([(mid - 0.5, 1.0)], [(mid + 0.5, 1.0)]), batch))
    sent = [(o[0].side, o[0].qty) for o in orders if o]
    assert sent == [(Side.BUY, 0.5), (Side.SELL, 1.0)]
    empty = L2Book(SID)
    assert math.isnan(empty.mid) and strategy.on_events(empty, batch) == []
