"""Flat memory (issue 14): the bounds and evictions that keep a long run's memory flat, on real
components (simulator messages through the real normalizer, BookSync, L2Book, PaperBroker,
Executor, LatencyRecorder), and the soak phase's own arithmetic. No RSS figure and no timing
is asserted here: `python -m workbench.bench run soak` measures those."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from workbench.bench import registry
from workbench.bench.soak import Soak, _check, _window, growth_per_million
from workbench.book.l2 import L2Book
from workbench.book.sync import BookSync
from workbench.engine.broker import PaperBroker
from workbench.engine.execution import Executor
from workbench.engine.positions import Positions
from workbench.engine.risk import RiskLimits
from workbench.engine.strategy import OrderRequest
from workbench.errors import PhaseMismatch
from workbench.events import Side
from workbench.feed.simulator import MarketSimulator
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue
from workbench.latency.recorder import LatencyRecorder
from workbench.latency.stages import STAGES

VENUE = "binance-usdm"  # what the simulator speaks


class Market:
    """One simulated instrument's messages under any symbol name, through a real normalizer
    into a BookSync (max_symbols as given); `resyncs` collects its snapshot requests."""

    def __init__(self, max_symbols: int) -> None:
        self.sim = MarketSimulator()
        self.registry = SymbolRegistry()
        self.norm = get_venue(VENUE).normalizer(self.registry)
        self.resyncs: list[int] = []
        self.sync = BookSync(get_venue(VENUE).sequencing, on_resync=self.resyncs.append,
                             max_symbols=max_symbols)

    def sid(self, symbol: str) -> int:
        return self.registry.id(self.norm.venue, symbol)

    def snapshot(self, symbol: str) -> None:
        batch = self.norm.normalize_snapshot(self.sim.snapshot(), 1, symbol)
        self.sync.process(batch, self.norm.last)

    def deltas(self, symbol: str, n: int = 3) -> None:
        """The simulator's next n depth updates, renamed to `symbol`."""
        sent = 0
        while sent < n:
            for _, stream, message in self.sim.step():
                if "@depth" in stream:
                    renamed = message.replace(b"BTCUSDT", symbol.encode()).replace(
                        b"btcusdt", symbol.lower().encode())
                    self.sync.process(self.norm.normalize(renamed, 1), self.norm.last)
                    sent += 1

    def kept(self) -> set[int]:
        return set(self.sync.books)


def test_booksync_evicts_the_least_recently_used_symbol_beyond_max_symbols() -> None:
    m = Market(max_symbols=3)
    for name in ("AAA", "BBB", "CCC"):
        m.snapshot(name)
    a, b, c = (m.sid(s) for s in ("AAA", "BBB", "CCC"))
    assert all(m.sync.is_valid(s) for s in (a, b, c))
    m.deltas("AAA")  # AAA is now the most recently used; BBB the least
    m.deltas("DDD")  # a new symbol: BBB goes
    d = m.sid("DDD")
    assert m.kept() == {a, c, d} and m.sync.stats.evicted == 1
    assert m.sync.is_valid(a) and m.sync.is_valid(c)
    # BBB comes back like a new symbol: invalid, buffering, asking for a snapshot
    asked_before = m.resyncs.count(b)
    m.deltas("BBB")
    assert b in m.kept() and not m.sync.is_valid(b) and m.sync.buffered(b) == 3
    assert m.resyncs.count(b) == asked_before + 1
    assert m.sync.stats.evicted == 2 and len(m.kept()) == 3


def test_many_symbols_leave_no_state_beyond_the_bound_and_drop_frees_the_rest() -> None:
    m = Market(max_symbols=8)
    books: list[weakref.ref] = []
    for i in range(200):
        name = f"S{i:04d}"
        m.snapshot(name)
        m.deltas(name, 1)
        books.append(weakref.ref(m.sync.book(m.sid(name))))
    assert len(m.kept()) == 8 and m.sync.stats.evicted == 192
    assert m.kept() == {m.sid(f"S{i:04d}") for i in range(192, 200)}
    gc.collect()
    assert sum(ref() is not None for ref in books) == 8  # evicted books are freed
    for sid in list(m.kept()):
        assert m.sync.drop(sid)
        assert not m.sync.drop(sid)
    gc.collect()
    assert m.sync.books == {} and all(ref() is None for ref in books)


def test_booksync_rejects_a_bound_below_one() -> None:
    with pytest.raises(Exception, match="max_symbols must be >= 1, got 0"):
        BookSync(get_venue(VENUE).sequencing, max_symbols=0)


def _book() -> L2Book:
    """A real book: the simulator's REST snapshot through the normalizer."""
    registry_ = SymbolRegistry()
    norm = get_venue(VENUE).normalizer(registry_)
    batch = norm.normalize_snapshot(MarketSimulator().snapshot(), 1, "BTCUSDT")
    book = L2Book(norm.last.symbol_id)
    book.apply(batch)
    assert book.valid
    return book


def test_broker_keeps_only_live_orders() -> None:
    book = _book()
    sid = book.symbol_id
    broker = PaperBroker()
    resting = []
    for i in range(50):
        broker.submit(OrderRequest(sid, Side.BUY if i % 2 else Side.SELL, 0.001), now_ns=i)
        if i % 10 == 0:  # a buy far below the market rests
            resting.append(broker.submit(OrderRequest(
                sid, Side.BUY, 0.001, "limit", book.best_bid - 1000.0), now_ns=i))
        broker.on_book(sid, book, now_ns=i)
    assert {o.status for o in resting} == {"open"}
    assert set(broker.orders) == {o.order_id for o in resting}  # 50 filled market orders gone
    assert broker.active == {sid: resting}
    filled_id = min(set(range(1, 56)) - set(broker.orders))
    assert not broker.cancel(filled_id, now_ns=50)
    for order in resting:
        assert broker.cancel(order.order_id, now_ns=50)
    # a cancel travels like an order (the broker's rules): it takes effect when it arrives,
    # at the next matching at or after now + latency (0 here)
    broker.on_book(sid, book, now_ns=50)
    assert broker.orders == {} and broker.active == {}  # no per-symbol leftovers
    assert {o.status for o in resting} == {"cancelled"}


def test_executor_counts_every_fill_and_keeps_the_newest() -> None:
    book = _book()
    sid = book.symbol_id
    executor = Executor(PaperBroker(), RiskLimits(1e9, 1e9), Positions(), recent_fills=5)
    booked = []
    for i in range(12):
        executor.submit([OrderRequest(sid, Side.BUY if i % 2 else Side.SELL, 0.001)], i)
        booked += executor.on_book(sid, book, i)
    assert len(booked) == executor.fill_count == 12
    assert list(executor.fills) == booked[-5:]
    assert executor.positions.get(sid).fills == 12  # every fill still booked in positions
    assert executor.broker.orders == {}


def test_latency_series_keeps_the_last_seconds_and_the_histograms_all() -> None:
    rec = LatencyRecorder(series_seconds=3)
    for second in range(10, 20):
        rec.add((second * 1_000_000_000, *[1000 + second] * len(STAGES)))
    rec.close()
    series = rec.series("tick_to_trade")
    assert series["t_s"].tolist() == [17, 18, 19]
    assert series["max_ns"].tolist() == [1017, 1018, 1019]
    assert rec.summary()["tick_to_trade"]["count"] == 10
    with pytest.raises(ValueError, match="series_seconds must be >= 1, got 0"):
        LatencyRecorder(series_seconds=0)


def test_soak_phase_is_registered_as_a_memory_phase() -> None:
    (phase,) = registry.select(["soak"])
    assert phase.name == "soak.rss_growth" and phase.metric == "memory"
    assert phase.claim.ratio_low is None and phase.claim.ratio_high is None  # measured


def test_growth_per_million_is_the_least_squares_slope() -> None:
    events = np.array([0, 1e6, 2e6, 3e6])
    assert growth_per_million(events, 5.0 + 2.0 * events / 1e6) == pytest.approx(2.0)
    noisy = np.array([10.0, 13.0, 12.0, 15.0])  # slope 1.4 per million
    assert growth_per_million(events, noisy) == pytest.approx(1.4)
    with pytest.raises(ValueError, match="expected >= 2 samples"):
        growth_per_million(events[:1], noisy[:1])


def test_soak_windows_split_one_run_at_the_warmup() -> None:
    events = np.arange(0, 3_000_001, 100_000, dtype=np.float64)
    rss = np.where(events <= 1e6, 100e6 + 30 * events, 130e6 + 0.5 * (events - 1e6))
    soak = Soak(np.column_stack([events, rss, np.zeros_like(events)]), 1_000_000, "run-1",
                {"fills": 3})
    warm, steady = _window(soak, after_warmup=False), _window(soak, after_warmup=True)
    assert warm.nbytes == 30_000_000 and steady.nbytes == 500_000
    assert warm.result == ("run-1", 0, 1_000_000)
    assert steady.result == ("run-1", 1_000_000, 3_000_000)
    assert steady.extra["within_target"] and steady.extra["run"] == {"fills": 3}
    _check(warm.result, steady.result)
    with pytest.raises(PhaseMismatch, match="one run"):
        _check(warm.result, ("run-2", 1_000_000, 3_000_000))
    with pytest.raises(PhaseMismatch, match="after the measured window starts"):
        _check(("run-1", 0, 2_000_000), steady.result)
