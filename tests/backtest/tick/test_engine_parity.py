"""Parity: the engine replaying a recording flat out and the tick backtester on the same
recording, configured alike, give identical fills (order id, side, price, qty, liquidity, fee,
time), for EmaCross (Python, market orders), a quoting strategy resting post-only limits (the
risk-averse queue model on in both), and CompiledEmaCross (the adapter in the engine, the
kernel in the backtester).

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
  changed, not the kernel: with a real feed latency the backtester is the more faithful model.
- Order-entry latency 0 in both. The engine's broker latency is counted on `ts_event_ns`
  (milliseconds for Binance: many messages share one), and an order that has arrived is
  matched on the book after the first batch at or after its arrival time; the kernel matches
  it at its arrival time on the book as it is then. With 0 both match on the book the strategy
  just saw (the engine: `Executor.on_book` right after the submit; the kernel: the request is
  due at the feed's own time, after every row of it).
- Response latency 1 ns in the backtester. The engine matches resting orders after the
  strategy ran on the batch (the adapter hands a fill to a compiled strategy at the next
  batch); the kernel fills at the exchange row, before that feed's call, and a 1 ns response
  reaches the strategy before the next feed (receive times are distinct integers), as in the
  engine. (None of the strategies here acts on its fills, so 0 gives the same fills for them.)
- Partial fills on (`TickConfig(partial=True)`): the engine's market orders walk the visible
  levels and cancel the rest, which is the kernel's partial-fill taker.
- The same fees; for resting orders the risk-averse queue model in both (the engine's
  `PaperBroker(queue_model="risk_averse")`).
- The strategies ignore a book without both sides (the engine does not call a strategy while
  the book is invalid, before the snapshot; the backtester calls it at every feed).

Compared as they are defined: prices in ticks (the kernel's price is tick * tick_size,
61800.100000000006 for 61800.1, so fees agree to 1e-12 relative, not bit for bit); times as
the engine's market time, the backtester's fill (at the message's receive time here) mapped to
the `ts_event_ns` of that message's first row.

Not at parity (so not tested here), measured on this slice:
- two timelines (the converted file as it is) or a 1 ms entry latency in both: EmaCross gets
  the same 32 fills in side, price and qty, at other times (the engine's is the market time of
  the batch it matched at, the kernel's the exchange time the order arrived); TouchQuoter gets
  180 fills in the engine and 178 in the backtester with two timelines (order 4 filled at
  market time ...258650 ms in the engine, exchange time ...258668 ms in the kernel), 177 and
  180 with 1 ms (the 13th fill differs);
- cancels: the engine cancels at once, before the batch's resting-order matching, the kernel
  after the entry latency and after that feed's exchange rows. The compiled `Quoter` (which
  cancels a quote off the touch) through the adapter: 198 fills in the engine, 217 in the
  backtester. The first difference: its buy 1 at 61800.2, which the kernel fills at the rows
  of the batch at market time 1723161256719000000, where the engine's strategy, seeing the
  touch move, cancels it before the broker matches those rows (the kernel then rejects the
  cancel).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import pytest
from tickrows import SID, rows_of, scripted

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.backtest.tick.events import TF_EXCH, TF_LOCAL, TickData, events_for
from workbench.book.l2 import L2Book
from workbench.engine.adapter import CompiledAdapter
from workbench.engine.broker import PaperBroker
from workbench.engine.compiled import BUY, CompiledEmaCross
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


def backtest_fills(result, market: dict[int, int]) -> list[tuple]:
    """The backtester's fills in the engine's terms (Side codes, liquidity, market time)."""
    f = result.fill_columns
    return [(int(oid), int(Side.BUY if side == BUY else Side.SELL), round(price / TICK),
             float(qty), "maker" if maker else "taker", float(fee), market[int(ts)])
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


def test_risk_averse_queue_rules_by_hand_in_both():
    """Each queue rule on hand-written rows: the PaperBroker (driven as the engine drives it:
    book, then the batch's rows; orders sent at a batch join after it) and the kernel
    (partial fills, entry latency 0) give the fills worked out by hand."""
    data = rows_of(QUEUE_ROWS)
    cfg = TickConfig(latency=ConstantLatency(0, 1), partial=True, queue="risk_averse")
    f = tick_backtest(data, scripted(QUEUE_ORDERS), cfg).fill_columns
    kernel = [(int(o), Side.BUY if s == BUY else Side.SELL, float(p), float(q), int(t))
              for o, s, p, q, t in zip(f["order_id"], f["side"], f["price"], f["qty"],
                                       f["ts_exch_ns"], strict=True)]
    assert kernel == QUEUE_FILLS
    assert f["maker"].all()

    broker = PaperBroker(queue_model="risk_averse", lot_size=1.0)
    book = L2Book(SID, tick_size=1.0)
    rows = np.asarray(data.rows)
    fills = []
    for feed, t in enumerate(np.unique(rows["ts_event_ns"]).tolist(), start=1):
        batch = rows[rows["ts_event_ns"] == t]
        book.apply(batch)
        fills += broker.on_book(SID, book, t, batch=batch)
        for at, _, side, price, qty, _, _ in QUEUE_ORDERS:
            if at == feed:
                broker.submit(OrderRequest(SID, Side.BUY if side == BUY else Side.SELL, qty,
                                           "limit", price, True), t)
                fills += broker.on_book(SID, book, t)
    assert [(x.order_id, x.side, x.price, x.qty, x.ts_ns) for x in fills] == QUEUE_FILLS
    assert {x.liquidity for x in fills} == {"maker"} and not broker.orders


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
