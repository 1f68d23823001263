"""L2Book's tick ladder at its edges, each step against the independent reference book
(`refbook.RefBook`, plain dicts): re-centring when the price walks out of the window, levels
far outside it, a tick size that does not fit, deleting the best level, crossed books."""

from __future__ import annotations

import math

import numpy as np
import pytest
from refbook import RefBook, assert_same_book, assert_same_top

from workbench.book.l2 import L2Book
from workbench.errors import BookError
from workbench.events import EventFlag, EventKind, empty_batch

BID, ASK = int(EventKind.BID_LEVEL), int(EventKind.ASK_LEVEL)
Row = tuple[int, float, float]


def batch(rows: list[Row]) -> np.ndarray:
    ev = empty_batch(len(rows))
    ev["symbol_id"] = 1
    for i, (kind, price, qty) in enumerate(rows):
        ev[i]["kind"], ev[i]["price"], ev[i]["qty"] = kind, price, qty
    return ev


def snapshot(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> np.ndarray:
    ev = batch([(int(EventKind.SNAPSHOT_BEGIN), 0.0, 0.0)] + [(BID, p, q) for p, q in bids]
               + [(ASK, p, q) for p, q in asks] + [(int(EventKind.SNAPSHOT_END), 0.0, 0.0)])
    ev["flags"] = int(EventFlag.SNAPSHOT)
    return ev


def ref_apply(ref: RefBook, rows: list[Row]) -> None:
    for kind, price, qty in rows:
        ref.set("bid" if kind == BID else "ask", price, qty)


def ref_snapshot(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> RefBook:
    ref = RefBook()
    ref.replace([(repr(float(p)), repr(float(q))) for p, q in bids],
                [(repr(float(p)), repr(float(q))) for p, q in asks])
    return ref


def both(book: L2Book, ref: RefBook, rows: list[Row], where: object, n: int = 10) -> None:
    """Apply rows to the book and the reference; the top n levels must be equal."""
    book.apply(batch(rows))
    ref_apply(ref, rows)
    assert_same_top(book, ref, n, where)
    want_bid = max(ref.bids) if ref.bids else math.nan
    want_ask = min(ref.asks) if ref.asks else math.nan
    assert math.isnan(book.best_bid) == math.isnan(want_bid), where
    assert math.isnan(book.best_ask) == math.isnan(want_ask), where


def test_recentres_when_the_price_walks_out_of_the_window() -> None:
    """A 64-tick window, the mid walking 3000 ticks up then 6000 down with quotes around it
    and stale levels left behind: the windows re-centre (rebuilds) and after every message
    the book equals the reference, deep levels (the overflow) included at the end."""
    rng = np.random.default_rng(5)
    tick = 0.5
    book = L2Book(1, window=64)
    bids = [(5000.0 - i * tick, 1.0) for i in range(20)]
    asks = [(5000.5 + i * tick, 1.0) for i in range(20)]
    book.apply(snapshot(bids, asks))
    ref = ref_snapshot(bids, asks)
    assert book.tick_size == 0.5 and book.rebuilds == 1
    mid = 5000.25
    path = [1] * 3000 + [-1] * 6000
    for step, direction in enumerate(path):
        mid += direction * tick
        best_bid = mid - 0.25
        rows: list[Row] = []
        for _ in range(4):
            k = int(rng.integers(0, 30))
            rows.append((BID, best_bid - k * tick, float(rng.integers(1, 5))))
            rows.append((ASK, best_bid + tick + k * tick, float(rng.integers(1, 5))))
        # the side moving away loses its levels that would now cross
        if direction > 0:
            rows.append((ASK, best_bid, 0.0))
        else:
            rows.append((BID, best_bid + tick, 0.0))
        if step % 7 == 0:  # deletes of existing and of absent levels
            rows.append((BID, best_bid - int(rng.integers(0, 40)) * tick, 0.0))
            rows.append((ASK, best_bid + int(rng.integers(1, 40)) * tick, 0.0))
        both(book, ref, rows, step, n=5)
    assert book.rebuilds > 20  # both ways, many windows
    assert not book.crossed
    assert_same_book(book, ref, "end")  # thousands of stale levels, most in the overflow
    assert book.n_asks > 1000 and book.capacity > L2Book(1).capacity  # stale asks above


def test_levels_far_outside_the_window() -> None:
    """Levels 10x away (the overflow table), far above the asks' window and far below the
    bids', then near levels deleted until only the far ones are left: best, depth and counts
    follow the reference; the ladder empties and is rebuilt from the overflow."""
    book = L2Book(1, capacity=8, window=32)
    bids = [(round(100.0 - i * 0.01, 2), 1.0) for i in range(10)]
    asks = [(round(100.01 + i * 0.01, 2), 1.0) for i in range(10)]
    book.apply(snapshot(bids, asks))
    ref = ref_snapshot(bids, asks)
    far: list[Row] = [(BID, round(10.0 + i * 0.01, 2), 2.0) for i in range(30)]
    far += [(ASK, round(1000.0 + i * 0.01, 2), 3.0) for i in range(30)]
    both(book, ref, far, "far levels", n=100)
    assert (book.n_bids, book.n_asks) == (40, 40) and book.capacity > 9
    both(book, ref, [(BID, 10.05, 0.0), (ASK, 1000.05, 7.0), (BID, 5.0, 0.0)], "far updates",
         n=100)
    rebuilds = book.rebuilds
    for i in range(10):  # delete the near bids, best first: then only the far ones remain
        both(book, ref, [(BID, bids[i][0], 0.0)], ("delete best bid", i), n=40)
    assert book.best_bid == 10.29 and book.rebuilds > rebuilds
    for i in range(10):  # the near asks, worst first
        both(book, ref, [(ASK, asks[9 - i][0], 0.0)], ("delete ask", i), n=40)
    assert book.best_ask == 1000.0
    # an ask far below the window (the market crashed): a new best, the window follows
    both(book, ref, [(ASK, 50.0, 1.0), (BID, 49.99, 1.0)], "ask below the window", n=100)
    assert_same_book(book, ref, "end")


def test_tick_size_that_does_not_fit() -> None:
    """The tick is inferred from the snapshot (0.5 here, not 0.1); a price with a finer
    increment re-derives it (0.25, then 0.05, then 0.001) keeping every level; a given
    tick size (symbol metadata) that is too coarse is refined the same way."""
    bids = [(100.0, 1.0), (99.5, 2.0), (98.0, 3.0)]
    asks = [(100.5, 1.0), (101.0, 2.0), (103.5, 1.0)]
    book = L2Book(1)
    assert math.isnan(book.tick_size)
    book.apply(snapshot(bids, asks))
    ref = ref_snapshot(bids, asks)
    assert book.tick_size == 0.5 and book.top() == (100.0, 1.0, 100.5, 1.0)
    both(book, ref, [(BID, 100.25, 4.0)], "quarter")
    assert book.tick_size == 0.25
    both(book, ref, [(ASK, 100.35, 1.0), (BID, 99.55, 1.0)], "0.05")
    assert book.tick_size == 0.05
    both(book, ref, [(BID, 100.251, 5.0), (BID, 100.25, 0.0)], "0.001")
    assert book.tick_size == 0.001 and book.best_bid == 100.251
    both(book, ref, [(BID, 99.9999, 0.0), (ASK, 100.3001, 0.0)], "absent off-grid deletes")
    assert book.tick_size == 0.001  # a delete of a price that is not in the book changes nothing
    assert_same_book(book, ref, "end")

    given = L2Book(1, tick_size=1.0)
    assert given.tick_size == 1.0
    given.apply(snapshot(bids, asks))
    assert given.tick_size == 0.5
    assert_same_book(given, ref_snapshot(bids, asks), "given tick refined")
    assert L2Book(1, tick_size=0.1).tick_size == 0.1
    for bad in (0.0, -0.5, math.nan, math.inf):
        with pytest.raises(BookError):
            L2Book(1, tick_size=bad)


def test_prices_on_no_grid_or_not_positive_raise() -> None:
    """A price that is not positive and finite, or no decimal with <= 15 decimals
    (0.1 + 0.2), raises BookError; the levels before it stay applied and the book stays
    consistent."""
    book = L2Book(1)
    book.apply(snapshot([(0.3, 1.0)], [(0.4, 1.0)]))
    for price in (math.nan, 0.0, -1.0, math.inf, 0.1 + 0.2):
        with pytest.raises(BookError, match="price"):
            book.apply(batch([(BID, 0.2, 1.0), (BID, price, 1.0)]))
        assert book.top() == (0.3, 1.0, 0.4, 1.0) and book.depth(5)[0].tolist() == [0.3, 0.2]
    book.apply(batch([(BID, 0.35, 2.0)]))
    assert book.top() == (0.35, 2.0, 0.4, 1.0) and book.tick_size == 0.05


def test_deleting_the_best_level_walks_to_the_next() -> None:
    """Sparse levels (gaps of many ticks): deleting the best bid/ask again and again finds
    the next one down the ladder each time, until the side is empty (NaN)."""
    rng = np.random.default_rng(9)
    bid_ticks = np.sort(rng.choice(np.arange(1, 3000), 60, replace=False))
    bids = [(5000.0 - int(t) * 0.1, 1.0 + i) for i, t in enumerate(bid_ticks)]
    asks = [(5000.1 + int(t) * 0.1, 1.0) for t in bid_ticks]
    book = L2Book(1, window=1024)
    bids = [(round(p, 1), q) for p, q in bids]
    asks = [(round(p, 1), q) for p, q in asks]
    book.apply(snapshot(bids, asks))
    ref = ref_snapshot(bids, asks)
    assert book.tick_size == 0.1
    for i in range(len(bids)):
        both(book, ref, [(BID, max(ref.bids), 0.0)], ("bid", i))
        if i % 2 == 0:
            both(book, ref, [(ASK, min(ref.asks), 0.0)], ("ask", i))
    assert math.isnan(book.best_bid) and math.isnan(book.mid) and book.n_bids == 0
    assert book.n_asks == len(asks) // 2 and book.depth(3)[0].shape == (0,)
    both(book, ref, [(BID, 4000.0, 1.0)], "bid after empty")
    assert_same_book(book, ref, "end")


def test_crossed_book_detection() -> None:
    book = L2Book(1)
    book.apply(snapshot([(10.0, 1.0), (9.9, 1.0)], [(10.1, 1.0), (10.2, 1.0)]))
    assert not book.crossed and book.spread == pytest.approx(0.1)
    book.apply(batch([(BID, 10.1, 2.0)]))  # a bid at the best ask: locked counts as crossed
    assert book.crossed and book.spread == 0.0
    book.apply(batch([(BID, 10.3, 1.0)]))  # above the ask
    assert book.crossed and book.spread == pytest.approx(-0.2) and book.best_bid == 10.3
    book.apply(batch([(BID, 10.3, 0.0), (BID, 10.1, 0.0)]))
    assert not book.crossed and book.top() == (10.0, 1.0, 10.1, 1.0)
    book.apply(batch([(ASK, 9.95, 1.0)]))  # an ask below the best bid
    assert book.crossed and book.best_ask == 9.95
    book.apply(batch([(ASK, 9.95, 0.0), (ASK, 10.1, 0.0), (ASK, 10.2, 0.0)]))
    assert not book.crossed and math.isnan(book.best_ask) and math.isnan(book.spread)


def test_apply_messages_rebuilds_and_grows_mid_batch() -> None:
    """One apply_messages call through re-centres, tick refinements and table growth equals
    apply per message (top after every message, the whole book at the end)."""
    rng = np.random.default_rng(21)
    msgs = [snapshot([(2000.0 - i, 1.0) for i in range(5)],
                     [(2001.0 + i, 1.0) for i in range(5)])]
    mid = 2000.5
    for step in range(300):
        mid += float(rng.choice([-1.0, 1.0])) * 3
        inc = 0.5 if step > 100 else 1.0  # finer prices appear after 100 messages
        rows: list[Row] = []
        for _ in range(int(rng.integers(1, 12))):
            k = int(rng.integers(0, 200))
            rows.append((BID, mid - 0.5 - k * inc, float(rng.integers(0, 3))))
            rows.append((ASK, mid + 0.5 + k * inc, float(rng.integers(0, 3))))
        msgs.append(batch(rows))
    one = L2Book(1, capacity=8, window=16)
    tops = one.apply_messages(np.concatenate(msgs), np.cumsum([len(m) for m in msgs]))
    per = L2Book(1, capacity=8, window=16)
    ref = RefBook()
    for i, ev in enumerate(msgs):
        per.apply(ev)
        if i == 0:
            ref = ref_snapshot([(p, q) for k, p, q in zip(ev["kind"], ev["price"], ev["qty"],
                                                          strict=True) if k == BID],
                               [(p, q) for k, p, q in zip(ev["kind"], ev["price"], ev["qty"],
                                                          strict=True) if k == ASK])
        else:
            ref_apply(ref, [(int(k), float(p), float(q)) for k, p, q in
                            zip(ev["kind"], ev["price"], ev["qty"], strict=True)])
        np.testing.assert_array_equal(tops[i], np.array(per.top()))
        bid = max(ref.bids) if ref.bids else math.nan
        assert (tops[i, 0] == bid) or (math.isnan(bid) and math.isnan(tops[i, 0])), i
    assert one.tick_size == 0.5 and one.rebuilds > 10 and one.capacity > 9
    assert_same_book(one, ref, "apply_messages end")
    for a, b in zip(one.depth(10_000), per.depth(10_000), strict=True):
        np.testing.assert_array_equal(a, b)


def test_deltas_before_any_snapshot() -> None:
    """No snapshot, no tick size: the first level gives a grid (its decimals), later prices
    refine it, deletes of off-grid or absent prices are no-ops."""
    book = L2Book(1)
    ref = RefBook()
    both(book, ref, [(BID, 0.2, 0.0)], "delete on an empty book")
    assert math.isnan(book.tick_size) and book.n_bids == 0
    both(book, ref, [(BID, 100.0, 1.0)], "first level")
    assert book.tick_size == 1.0
    both(book, ref, [(ASK, 100.5, 2.0), (BID, 99.0, 0.0), (ASK, 101.0, 1.0)], "finer")
    assert book.tick_size == 0.5 and book.top() == (100.0, 1.0, 100.5, 2.0)
    assert not book.valid  # valid only after a snapshot
