"""Parity: the engine replaying a recording flat out and the tick backtester on the same
recording, configured alike, give identical fills (order id, side, price, qty, liquidity, fee,
time), for EmaCross (Python, market orders), a quoting strategy resting post-only limits (the
risk-averse queue model on in both), CompiledEmaCross (the adapter in the engine, the kernel
in the backtester), and the compiled `Quoter`, which cancels; with entry latency 0 and 1 ms.

The recording: the first SLICE_LINES messages of the Binance USD-M BTCUSDT capture (its REST
snapshot is message 55), replayed by a real Engine (`replay:` source, speed 0, callback
dispatch) and converted by the backtester's converter (`events_for`).

The parity setting, and why each part is needed:

- One timeline. The engine has one book and one clock: each message is booked, shown to the
  strategy and matched in receive order, at market time = the message's `ts_event_ns`. The
  backtester keeps two books, matching on exchange time and feeding the strategy on local
  time, so their books and order of events differ from the engine's unless the timelines are
  one. `one_timeline` gives it the converted local rows (receive order, one receive time per
  message, so one feed per engine batch) with exchange time = local time. This is the input
  changed, not the kernel: with a real feed latency the backtester is the more faithful model
  (the two-timeline difference remains: measured below).
- The same order-entry latency in both. Both follow the kernel's exchange-time rules (the
  engine's `workbench.engine.broker` docstring): a request (order or cancel) sent on the
  batch at T arrives at T + latency; one arriving before a batch's time is matched on the
  book before that batch, one arriving at it after its rows. With latency 0 the engine's
  clock (`ts_event_ns`) and the backtester's one timeline (receive times) are never compared,
  so the recording is used as it is. With a latency they are: the engine's clock is the
  message's event time, in milliseconds for Binance, which many messages share, while the
  backtester's one timeline needs one time per message (a feed per local timestamp). The
  latency tests therefore use `distinct_times`: the same messages with their event times
  made distinct (t_i = max(E_i, t_(i-1) + 1) ms) and received at them, so both clocks are
  t_i. Gaps between messages are 1 ms or more, so with 1 ms an order arrives either at a
  later message's time or between two: both rules are exercised.
- Response latency. The engine's compiled strategy (through the adapter) learns at its call
  at T what happened at exchange times up to T - response_ns (`CompiledAdapter`); with 0,
  all the broker did before the call, i.e. before T, which is the kernel's 1 ns response
  (its strategy at T sees the responses due at or before T; receive times are distinct
  integers). The engine's market times are not distinct on the recording as it is (many
  messages share a millisecond), so a response latency above 0 in the adapter needs
  `distinct_times`; there the cancelling Quoter is also tested with entry 1 ms and response
  5 ms (1 ms would not tell: gaps between messages are 1 ms or more). It matters: with the
  kernel's response at 5 ms, the adapter at 5 ms gives the kernel's 236 fills, at 0 or 1 ms
  288. (The strategies without fills, EmaCross and TouchQuoter, are unaffected by it.)
- Partial fills on (`TickConfig(partial=True)`): the engine's market orders walk the visible
  levels and cancel the rest, which is the kernel's partial-fill taker.
- The same fees; for resting orders the risk-averse queue model in both (the engine's
  `PaperBroker(queue_model="risk_averse")`).
- The strategies ignore a book without both sides (the engine does not call a strategy while
  the book is invalid, before the snapshot; the backtester calls it at every feed).

Compared as they are defined: prices in ticks (the kernel's price is tick * tick_size,
61800.100000000006 for 61800.1, so fees agree to 1e-12 relative, not bit for bit); times as
the engine's market time: with the recording as it is, the backtester's fill (at the
message's receive time) mapped to the `ts_event_ns` of that message's first row; with
`distinct_times` the two clocks are one.

Not at parity (so not tested here): two timelines (the converted file as it is, latency 0,
measured on this slice with the broker's exchange-time rules): EmaCross gets the same 32
fills in order id, side, price and qty, none at the same time; TouchQuoter 180 fills in the
engine and 178 in the backtester (the 13th differs); the compiled Quoter 323 and 220 (the 5th
differs). The engine's clock is the venue's event time; the backtester's exchange matches on
event time but its strategy sees the book on receive time, later.
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from tickrows import SID, rows_of, scripted

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.backtest.tick.events import TF_EXCH, TF_LOCAL, TickData, events_for
from workbench.book.l2 import L2Book
from workbench.engine.adapter import CompiledAdapter
from workbench.engine.broker import PaperBroker
from workbench.engine.compiled import BUY, GTX, IOC, LIMIT, MARKET, CompiledEmaCross, Quoter
from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.run import add_arguments, config_from_args
from workbench.engine.strategy import EmaCross, OrderRequest
from workbench.errors import ConfigError
from workbench.events import Side

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
SLICE_LINES = 20_000  # messages of the recording (~70 s of market time)
TICK, LOT = 0.1, 0.001
FEES = {"maker_fee_bps": -0.5, "taker_fee_bps": 4.0}
PARITY = TickConfig(latency=ConstantLatency(0, 1), partial=True, **FEES)
MS = 1_000_000
EVENT_TIME = re.compile(rb'"([ET])":\d+')  # a Binance message's event / transaction time (ms)


class TouchQuoter:
    """Every `every`-th batch with a two-sided book: a post-only buy of `qty` at the best bid
    and a post-only sell at the best ask; never cancels (orders rest until filled)."""

    def __init__(self, every: int, qty: float) -> None:
        self.every, self.qty, self.calls = every, qty, 0

    def on_events(self, book, batch: np.ndarray) -> list[OrderRequest]:
        bid, ask = book.best_bid, book.best_ask
        if not bid < ask:  # NaN (a side empty) compares False
            return []
        self.calls += 1
        if self.calls % self.every:
            return []
        sid = book.symbol_id
        return [OrderRequest(sid, Side.BUY, self.qty, "limit", bid, True, "quote"),
                OrderRequest(sid, Side.SELL, self.qty, "limit", ask, True, "quote")]


@pytest.fixture(scope="module")
def recording(shared_data, tmp_path_factory) -> Path:
    """The first SLICE_LINES messages of the USD-M capture (under a `usdm/` directory, as the
    venue is sniffed from the path)."""
    out = tmp_path_factory.mktemp("parity") / "usdm" / "btcusdt_slice.gz"
    out.parent.mkdir()
    with gzip.open(shared_data / USDM, "rb") as src, gzip.open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i == SLICE_LINES:
                break
            dst.write(line)
    return out


@pytest.fixture(scope="module")
def converted(recording, tmp_path_factory) -> TickData:
    return events_for(recording, directory=tmp_path_factory.mktemp("tick"))


@pytest.fixture(scope="module")
def distinct_times(recording, tmp_path_factory) -> Path:
    """The slice with one event time per message (module docstring, latency): message i's
    `E` and `T` become t_i = max(its E, t_(i-1) + 1) ms, and its receive time t_i too."""
    out = tmp_path_factory.mktemp("distinct") / "usdm" / "btcusdt_slice.gz"
    out.parent.mkdir()
    t_ms = 0
    with gzip.open(recording, "rb") as src, gzip.open(out, "wb") as dst:
        for line in src:
            body = line.split(b" ", 1)[1]
            t_ms = max(int(re.search(rb'"E":(\d+)', body).group(1)), t_ms + 1)
            body = EVENT_TIME.sub(rb'"\1":%d' % t_ms, body)
            dst.write(b"%d %s" % (t_ms * MS, body))
    return out


@pytest.fixture(scope="module")
def distinct_converted(distinct_times, tmp_path_factory) -> TickData:
    return events_for(distinct_times, directory=tmp_path_factory.mktemp("tick"))


def one_timeline(data: TickData) -> tuple[TickData, dict[int, int]]:
    """The parity input (module docstring): the local rows with exchange time = local time,
    and receive time -> ts_event_ns of that message's first row (the engine's market time)."""
    rows = np.asarray(data.rows)
    local = rows[(rows["flags"] & TF_LOCAL) != 0].copy()
    market: dict[int, int] = {}
    for recv, event in zip(local["ts_recv_ns"].tolist(), local["ts_event_ns"].tolist(),
                           strict=True):
        market.setdefault(recv, event)
    local["ts_event_ns"] = local["ts_recv_ns"]
    local["flags"] = TF_EXCH | TF_LOCAL
    return TickData.in_memory(local, data.meta), market


def engine_fills(recording: Path, strategy, **fields) -> tuple[Engine, list[tuple]]:
    """A real engine run over `recording`, flat out; its fills as compared."""
    cfg = EngineConfig(source=f"replay:{recording}", speed=0, out_dir=None,
                       max_orders_per_s=1e6, max_position=10.0, **FEES, **fields)
    engine = Engine(cfg, strategy=strategy).start()
    assert engine.wait(120), "the replay did not finish"
    engine.stop()
    assert engine.state == "stopped" and engine.strategy_errors == 0
    assert engine.executor.fill_count == len(engine.executor.fills)  # none dropped
    return engine, [(f.order_id, f.side, round(f.price / TICK), f.qty, f.liquidity, f.fee,
                     f.ts_ns) for f in engine.executor.fills]


def backtest_fills(result, market: dict[int, int] | None) -> list[tuple]:
    """The backtester's fills in the engine's terms (Side codes, liquidity, market time; market
    None: the times are the engine's already)."""
    f = result.fill_columns
    return [(int(oid), int(Side.BUY if side == BUY else Side.SELL), round(price / TICK),
             float(qty), "maker" if maker else "taker", float(fee),
             int(ts) if market is None else market[int(ts)])
            for oid, side, price, qty, maker, fee, ts in zip(
                f["order_id"], f["side"], f["price"], f["qty"], f["maker"], f["fee"],
                f["ts_exch_ns"], strict=True)]


def assert_same(engine: list[tuple], backtest: list[tuple]) -> None:
    """Identical fills; the fee to 1e-12 relative (module docstring)."""
    assert len(engine) == len(backtest)
    for e, b in zip(engine, backtest, strict=True):
        assert e[:5] + e[6:] == b[:5] + b[6:]
        assert e[5] == pytest.approx(b[5], rel=1e-12, abs=0.0)


class WatchedEmaCross(EmaCross):
    """EmaCross that also records the top of book (in ticks) of every call with both sides."""

    def __init__(self) -> None:
        super().__init__(5, 40, 0.01)
        self.tops: list[tuple[int, int]] = []

    def on_events(self, book, batch: np.ndarray) -> list[OrderRequest]:
        bid, ask = book.best_bid, book.best_ask
        if bid < ask:
            self.tops.append((round(bid / TICK), round(ask / TICK)))
        return super().on_events(book, batch)


def test_ema_cross_market_orders(recording, converted):
    data, market = one_timeline(converted)
    in_engine, in_backtest = WatchedEmaCross(), WatchedEmaCross()
    _, engine = engine_fills(recording, in_engine)
    backtest = backtest_fills(tick_backtest(data, in_backtest, PARITY), market)
    # the strategy saw the same books, call by call; the kernel makes no call at the last
    # feed (nothing follows it: hftbacktest's rule), the engine does at the last message
    assert len(in_backtest.tops) > 19_000
    assert in_backtest.tops == in_engine.tops[:-1]
    assert len(engine) >= 30
    assert {f[4] for f in engine} == {"taker"}
    assert any(f[3] != 0.01 and f[3] != 0.02 for f in engine)  # an order walked two levels
    assert_same(engine, backtest)


def test_quoting_with_the_risk_averse_queue_model(recording, converted):
    data, market = one_timeline(converted)
    cfg = TickConfig(latency=ConstantLatency(0, 1), partial=True, queue="risk_averse", **FEES)
    result = tick_backtest(data, TouchQuoter(200, LOT), cfg)
    backtest = backtest_fills(result, market)
    _, engine = engine_fills(recording, TouchQuoter(200, LOT), queue_model="risk_averse",
                             lot_size=LOT)
    assert len(engine) >= 150 and {f[4] for f in engine} == {"maker"}
    queued = result.order_columns["queue_ahead"]
    assert (queued > 0).sum() >= 150  # the orders joined a queue, not an empty level
    assert_same(engine, backtest)
    # without the queue model the engine fills a resting order only when the book crosses it
    _, plain = engine_fills(recording, TouchQuoter(200, LOT))
    assert len(plain) < len(engine)


def test_compiled_ema_cross_through_the_adapter(recording, converted):
    data, market = one_timeline(converted)
    adapter = CompiledAdapter(CompiledEmaCross(5, 40, 0.01, 1), TICK, LOT)
    engine_run, engine = engine_fills(recording, adapter)
    result = tick_backtest(data, CompiledEmaCross(5, 40, 0.01, 1), PARITY)
    backtest = backtest_fills(result, market)
    assert len(engine) >= 30
    assert_same(engine, backtest)
    sid = next(iter(engine_run.sync.books))
    assert adapter.gw.position == pytest.approx(engine_run.positions.qty(sid))
    assert result.position == pytest.approx(adapter.gw.position)


# (kind, aggressor side, price, qty, time): tick 1, lot 1 (tickrows.rows_of)
QUEUE_ROWS = [
    ("bid", 0, 100, 5, 1), ("bid", 0, 99, 3, 1), ("ask", 0, 102, 4, 1), ("ask", 0, 103, 1, 1),
    ("trade", 2, 100, 3, 2),    # ahead of the buy at 100: 5 -> 2
    ("bid", 0, 100, 1, 3),      # its level drops to 1: ahead min(2, 1) = 1
    ("trade", 2, 100, 1.4, 4),  # ahead -0.4: 0.4 lot traded through it, rounds to 0
    ("trade", 2, 100, 0.2, 5),  # ahead -0.6: 1 lot executable: fills 1 of 2
    ("trade", 2, 99, 5, 6),     # a sell through 100: fills the last 1
    ("ask", 0, 104, 2, 7),      # the sell at 104 (sent at 6, nothing ahead) keeps 0 ahead
    ("bid", 0, 104, 1, 8),      # the bid side reaches 104: the sell fills whole (3)
]
# (feed, order id, side, price, qty, order type, time in force) for tickrows.scripted
QUEUE_ORDERS = [(1, 1, BUY, 100.0, 2.0, 0, 1), (6, 2, -1, 104.0, 3.0, 0, 1)]
# (order id, Side, price, qty, time): worked out by hand from the rules above
QUEUE_FILLS = [(1, Side.BUY, 100.0, 1.0, 5), (1, Side.BUY, 100.0, 1.0, 6),
               (2, Side.SELL, 104.0, 3.0, 8)]


def queue_fills_in_both(spec: list[tuple], orders: list[tuple]) -> tuple[list, list]:
    """(kernel fills, broker fills) as (order id, Side, price, qty, time), every fill a maker's,
    of hand-written rows (tickrows.rows_of) and orders (tickrows.scripted, limit GTX): the
    kernel with partial fills and entry latency 0; the PaperBroker driven as the engine drives
    it (book, then the batch's rows; orders sent at a batch join after it); risk-averse queue,
    lot 1."""
    data = rows_of(spec)
    cfg = TickConfig(latency=ConstantLatency(0, 1), partial=True, queue="risk_averse")
    f = tick_backtest(data, scripted(orders), cfg).fill_columns
    assert f["maker"].all()
    kernel = [(int(o), Side.BUY if s == BUY else Side.SELL, float(p), float(q), int(t))
              for o, s, p, q, t in zip(f["order_id"], f["side"], f["price"], f["qty"],
                                       f["ts_exch_ns"], strict=True)]
    broker = PaperBroker(queue_model="risk_averse", lot_size=1.0)
    book = L2Book(SID, tick_size=1.0)
    rows = np.asarray(data.rows)
    fills = []
    for feed, t in enumerate(np.unique(rows["ts_event_ns"]).tolist(), start=1):
        batch = rows[rows["ts_event_ns"] == t]
        book.apply(batch)
        fills += broker.on_book(SID, book, t, batch=batch)
        for at, _, side, price, qty, _, _ in orders:
            if at == feed:
                broker.submit(OrderRequest(SID, Side.BUY if side == BUY else Side.SELL, qty,
                                           "limit", price, True), t)
                fills += broker.on_book(SID, book, t)
    assert {x.liquidity for x in fills} <= {"maker"} and not broker.orders
    return kernel, [(x.order_id, x.side, x.price, x.qty, x.ts_ns) for x in fills]


def test_risk_averse_queue_rules_by_hand_in_both():
    """Each queue rule on hand-written rows: the PaperBroker and the kernel give the fills
    worked out by hand."""
    assert queue_fills_in_both(QUEUE_ROWS, QUEUE_ORDERS) == (QUEUE_FILLS, QUEUE_FILLS)


# 60 bid levels of 2 (1000 down to 941) and an ask: the buy at 945 rests 56 levels deep (within
# the kernel's default price range, the median price +-25%)
DEEP_ROWS = [*(("bid", 0, 1000 - i, 2, 1) for i in range(60)), ("ask", 0, 1001, 1, 1),
             ("trade", 2, 945, 2, 2),  # the 2 ahead of it trade: ahead 0, nothing executable
             ("trade", 2, 945, 1, 3)]  # 1 past it: fills its 1
DEEP_ORDERS = [(1, 1, BUY, 945.0, 1.0, 0, 1)]


def test_the_starting_queue_is_read_deep_in_the_book_in_both():
    """An order resting far below the top (56 levels; in the L2 book's overflow table past a
    small window) starts behind the whole visible quantity of its level in both (the broker
    used to read the top 50 levels only, and put it at the front)."""
    want = [(1, Side.BUY, 945.0, 1.0, 3)]
    assert queue_fills_in_both(DEEP_ROWS, DEEP_ORDERS) == (want, want)
    book = L2Book(SID, tick_size=1.0, window=16)
    book.apply(np.asarray(rows_of(DEEP_ROWS[:61]).rows))
    assert book.level_qty(True, 945.0) == 2.0 and book.level_qty(True, 945 + 1e-10, 1e-9) == 2.0
    assert book.level_qty(True, 945 + 1e-10) == 0.0 and book.level_qty(False, 945.0) == 0.0


def test_the_queue_model_is_opt_in_and_needs_a_lot_size():
    assert PaperBroker().queue_model == EngineConfig().broker.queue_model == "none"
    with pytest.raises(ConfigError, match="lot_size"):
        PaperBroker(queue_model="risk_averse")
    with pytest.raises(ConfigError, match="lot_size"):
        EngineConfig(queue_model="risk_averse")
    with pytest.raises(ConfigError, match="queue_model"):
        EngineConfig(queue_model="power", lot_size=LOT)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--queue-model", "risk_averse", "--lot-size",
                                              "0.001"]))
    assert (cfg.broker.queue_model, cfg.broker.lot_size) == ("risk_averse", LOT)
    assert Engine(cfg).broker.queue_model == "risk_averse"


def _message_times(data: TickData) -> set[int]:
    return set(np.asarray(data.rows)["ts_event_ns"].tolist())


def test_ema_cross_with_an_entry_latency(distinct_times, distinct_converted):
    """1 ms entry latency in both (response 1 ns in the backtester): the same fills. Each
    market order reaches the exchange 1 ms after the batch it was sent on, which is either the
    time of a later message (matched after that message's rows) or between two (matched on
    the book before the next one, stamped with its arrival time): both occur."""
    data, _ = one_timeline(distinct_converted)
    cfg = TickConfig(latency=ConstantLatency(MS, 1), partial=True, **FEES)
    _, engine = engine_fills(distinct_times, WatchedEmaCross(), broker_latency_us=1000.0)
    backtest = backtest_fills(tick_backtest(data, WatchedEmaCross(), cfg), None)
    assert len(engine) >= 30
    at_message = [f[6] in _message_times(data) for f in engine]
    assert any(at_message) and not all(at_message)
    assert_same(engine, backtest)


def test_quoting_with_an_entry_latency(distinct_times, distinct_converted):
    data, _ = one_timeline(distinct_converted)
    cfg = TickConfig(latency=ConstantLatency(MS, 1), partial=True, queue="risk_averse", **FEES)
    backtest = backtest_fills(tick_backtest(data, TouchQuoter(200, LOT), cfg), None)
    _, engine = engine_fills(distinct_times, TouchQuoter(200, LOT), queue_model="risk_averse",
                             lot_size=LOT, broker_latency_us=1000.0)
    assert len(engine) >= 150 and {f[4] for f in engine} == {"maker"}
    assert_same(engine, backtest)


@pytest.mark.parametrize(("latency_ns", "response_ns", "adapter_ns"),
                         [(0, 1, 0), (MS, 1, 1), (MS, 5 * MS, 5 * MS)])
def test_the_cancelling_quoter_through_the_adapter(recording, converted, distinct_times,
                                                   distinct_converted, latency_ns, response_ns,
                                                   adapter_ns):
    """The compiled Quoter (cancels a quote off the touch, re-quotes once the cancel is
    acknowledged, so when it learns of it matters) through the adapter and in the kernel,
    risk-averse queue model in both, entry and response latency alike: the same fills. A
    cancel travels with the entry latency and lands after the batch's rows (with latency 0
    too), so some quotes fill before their cancel arrives, which the exchange then rejects:
    in both."""
    source, tick = (recording, converted) if latency_ns == 0 else (distinct_times,
                                                                   distinct_converted)
    data, market = one_timeline(tick)
    cfg = TickConfig(latency=ConstantLatency(latency_ns, response_ns), partial=True,
                     queue="risk_averse", **FEES)
    result = tick_backtest(data, Quoter(LOT, 0.01), cfg)
    backtest = backtest_fills(result, market if latency_ns == 0 else None)
    adapter = CompiledAdapter(Quoter(LOT, 0.01), TICK, LOT, adapter_ns)
    run, engine = engine_fills(source, adapter, queue_model="risk_averse", lot_size=LOT,
                               broker_latency_us=latency_ns / 1000)
    assert len(engine) >= 200 and {f[4] for f in engine} == {"maker"}
    assert run.broker.cancels_rejected > 0
    assert_same(engine, backtest)
    assert adapter.gw.position == pytest.approx(result.position)


# (kind, aggressor side, price, qty, time): tick 1, lot 1; entry latency 2, response 1
LATENCY_ROWS = [
    ("bid", 0, 100, 5, 1), ("bid", 0, 99, 5, 1), ("ask", 0, 102, 5, 1), ("ask", 0, 103, 5, 1),
    ("ask", 0, 101, 2, 2),   # the market buy sent at 1 arrives at 3, before the next batch
    ("ask", 0, 101, 0, 4),   # the one sent at 2 arrives at 4, with this batch: after its rows
    ("trade", 2, 99, 3, 5),  # through the buy at 100, whose cancel (sent at 4) is in flight
    ("bid", 0, 100, 4, 6),   # both cancels arrive: the buy at 100 is filled (rejected), the
    ("trade", 2, 98, 9, 7),  # one at 99 cancelled, so this trade through it fills nothing
    ("bid", 0, 100, 3, 8),
]
# (feed, order id, side, price, qty, order type, time in force); side 0: cancel. Feeds are at
# times 1, 2, 4, 5, ... (no rows at 3); a cancel can go once the ack came back (3 + 1 = 4)
LATENCY_ORDERS = [(1, 1, BUY, 0.0, 1.0, MARKET, IOC), (1, 2, BUY, 100.0, 1.0, LIMIT, GTX),
                  (1, 3, BUY, 99.0, 1.0, LIMIT, GTX), (2, 4, BUY, 0.0, 1.0, MARKET, IOC),
                  (3, 2, 0, 0.0, 0.0, 0, 0), (3, 3, 0, 0.0, 0.0, 0, 0)]
# (order id, Side, price, qty, time, liquidity): worked out by hand from the broker's rules
LATENCY_FILLS = [(1, Side.BUY, 101.0, 1.0, 3, "taker"), (4, Side.BUY, 102.0, 1.0, 4, "taker"),
                 (2, Side.BUY, 100.0, 1.0, 5, "maker")]


def test_arrivals_and_cancels_by_hand_in_both():
    """The exchange-time rules on hand-written rows, in the kernel and in the PaperBroker
    driven as the engine drives it (per batch at T: `on_arrivals` before the book applies it,
    the strategy's requests, `on_book` with the batch): an order arriving between two batches
    meets the book before the later one, one arriving at a batch's time meets the book after
    it; a cancel takes effect when it arrives, so an order can fill while it travels."""
    data = rows_of(LATENCY_ROWS)
    cfg = TickConfig(latency=ConstantLatency(2, 1), partial=True, queue="risk_averse")
    f = tick_backtest(data, scripted(LATENCY_ORDERS), cfg).fill_columns
    kernel = [(int(o), Side.BUY if s == BUY else Side.SELL, float(p), float(q), int(t),
               "maker" if m else "taker")
              for o, s, p, q, t, m in zip(f["order_id"], f["side"], f["price"], f["qty"],
                                          f["ts_exch_ns"], f["maker"], strict=True)]
    assert kernel == LATENCY_FILLS

    broker = PaperBroker(latency_ns=2, queue_model="risk_averse", lot_size=1.0)
    book = L2Book(SID, tick_size=1.0)
    rows = np.asarray(data.rows)
    fills, ids = [], {}
    for feed, t in enumerate(np.unique(rows["ts_event_ns"]).tolist(), start=1):
        batch = rows[rows["ts_event_ns"] == t]
        fills += broker.on_arrivals(SID, book, t)
        book.apply(batch)
        for at, oid, side, price, qty, otype, tif in LATENCY_ORDERS:
            if at != feed:
                continue
            if side == 0:
                assert broker.cancel(ids[oid].order_id, t)
                continue
            ids[oid] = broker.submit(OrderRequest(
                SID, Side.BUY if side == BUY else Side.SELL, qty,
                "market" if otype == MARKET else "limit", price, tif == GTX), t)
        fills += broker.on_book(SID, book, t, batch=batch)
    broker_ids = {o.order_id: oid for oid, o in ids.items()}
    assert [(broker_ids[x.order_id], x.side, x.price, x.qty, x.ts_ns, x.liquidity)
            for x in fills] == LATENCY_FILLS
    assert ids[3].status == "cancelled" and broker.cancels_rejected == 1 and not broker.orders


def test_the_adapter_refuses_a_negative_response_latency():
    with pytest.raises(ConfigError, match="response_ns"):
        CompiledAdapter(Quoter(LOT, 0.01), TICK, LOT, -1)
