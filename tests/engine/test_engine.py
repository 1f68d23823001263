"""The engine end to end on the real Binance spot BTCUSDT recording (41,249 messages), the
simulated exchange over loopback websockets, and a ShmRing fed by the C++ feed handler in
another process."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.strategy import EmaCross
from workbench.feed.replay import ReplayFeed
from workbench.feed.venues import normalizer_for

RECORDING = "binance/hftbacktest/spot/btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def recording(shared_data: Path) -> Path:
    return shared_data / RECORDING


@pytest.fixture(scope="module")
def expected_seqs(recording: Path) -> list[int]:
    """Independent pass: the seq of every message that yields events, in recorded order."""
    normalizer = normalizer_for("binance")
    out = []
    for _, message in ReplayFeed(recording, None):
        batch = normalizer.normalize(message, 0)
        if len(batch):
            out.append(int(batch["seq"][0]))
    return out


def run_replay(recording: Path, strategy=None, **fields) -> Engine:
    cfg = EngineConfig(**{"source": f"replay:{recording}", "speed": 0, "out_dir": None,
                          **fields})
    engine = Engine(cfg, strategy=strategy).start()
    assert engine.wait(120), "the replay did not finish"
    engine.stop()
    return engine


def fills_of(engine: Engine) -> list[tuple]:
    return [(f.seq, f.side, f.price, f.qty, f.fee, f.liquidity) for f in engine.executor.fills]


class Recorder(EmaCross):
    """EmaCross that also records the seq of every batch it is given."""

    def __init__(self) -> None:
        super().__init__(20, 100, 0.01)
        self.seen: list[int] = []

    def on_events(self, book, batch):
        self.seen.append(int(batch["seq"][0]))
        return super().on_events(book, batch)


def test_identical_fills_and_pnl_in_both_modes_and_repeated_runs(recording):
    runs = [run_replay(recording, dispatch="callback"),
            run_replay(recording, dispatch="polling", poll_interval_ms=5),
            run_replay(recording, dispatch="callback")]
    first = fills_of(runs[0])
    assert len(first) > 10
    for engine in runs:
        status = engine.status()
        assert status.error is None and status.state == "stopped"
        assert status.batches == 41249 and status.dispatch_gaps == 0
        assert fills_of(engine) == first
        assert engine.positions.totals() == runs[0].positions.totals()
    assert runs[1].dispatcher.max_depth > 1  # the polling run really queued


def test_latency_warmup_processes_everything_and_measures_only_after_it(recording):
    """latency_warmup_s=60: every batch is processed and trades as without it, but latency
    rows (and spikes) start with the first batch at least 60 s of market time after the
    first one (counted here independently from the normalizer's events)."""
    normalizer = normalizer_for("binance")
    start = last = 0
    after = 0
    for _, message in ReplayFeed(recording, None):
        batch = normalizer.normalize(message, 0)
        if not len(batch) or not batch["symbol_id"][0]:
            continue
        last = int(batch["ts_event_ns"][0]) or last
        start = start or last
        after += last >= start + 60 * 10**9
    warm = run_replay(recording, latency_warmup_s=60.0)
    plain = run_replay(recording)
    assert 0 < after < warm.batches == plain.batches
    assert warm.latency.summary()["tick_to_trade"]["count"] == after
    assert plain.latency.summary()["tick_to_trade"]["count"] == plain.batches
    assert fills_of(warm) == fills_of(plain)
    measured = warm.status().measured
    assert 0 < measured.wall_s <= warm.status().elapsed_s and measured.cpu_s > 0


def test_switching_dispatch_100_times_loses_and_duplicates_nothing(recording, expected_seqs):
    strategy = Recorder()
    cfg = EngineConfig(source=f"replay:{recording}", speed=100, out_dir=None,
                       dispatch="polling", poll_interval_ms=2, strategy_warmup_s=0)
    engine = Engine(cfg, strategy=strategy).start()
    modes = ("callback", "polling", "blocking", "callback", "polling")
    for i in range(100):
        engine.set_dispatch(modes[i % len(modes)])
        time.sleep(0.01)
    assert engine.state == "running", "the run ended before 100 switches"
    status = engine.stop(timeout_s=20)
    assert status.dispatch_switches == 100
    assert status.dispatch_gaps == 0 and status.dispatch_dups == 0
    assert status.submitted == status.handled == status.batches > 1000
    # the strategy saw exactly the recorded messages, in order, each once (it is called once
    # the book is valid: a suffix of the processed prefix)
    processed = expected_seqs[: status.batches]
    seen = strategy.seen
    assert seen == processed[len(processed) - len(seen):]
    assert len(seen) > 1000


class GcAt(EmaCross):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0

    def on_events(self, book, batch):
        self.calls += 1
        if self.calls == self.at:
            self.seq = int(batch["seq"][0])
            gc.collect()
        return super().on_events(book, batch)


def test_forced_gc_collect_appears_as_a_spike_with_that_cause(recording):
    strategy = GcAt(2000)
    engine = run_replay(recording, strategy=strategy, dispatch="callback",
                        spike_threshold_us=100)
    spikes = [s for s in engine.spikes.spikes() if s.seq == strategy.seq]
    assert spikes, "no spike logged for the batch that ran gc.collect()"
    gcs = [c for c in spikes[0].causes if c.name == "gc"]
    assert any(c.detail.startswith("gen2") for c in gcs)
    assert spikes[0].stages["strategy"] >= max(c.duration_ns for c in gcs)


class FailEvery(EmaCross):
    def __init__(self, every: int) -> None:
        super().__init__(5, 20, 0.01)
        self.every = every
        self.calls = 0

    def on_events(self, book, batch):
        self.calls += 1
        if self.calls % self.every == 0:
            raise ZeroDivisionError(f"boom at call {self.calls}")
        return super().on_events(book, batch)


def test_strategy_error_halt_flattens_and_continue_carries_on(recording, caplog):
    caplog.set_level(logging.ERROR, logger="workbench.engine")
    halted = run_replay(recording, strategy=FailEvery(5000), on_strategy_error="halt")
    st = halted.status()
    assert st.strategy_errors == 1 and st.halted and "strategy error" in st.halt_reason
    assert halted.positions.qty(halted.executor.fills[0].symbol_id) == pytest.approx(0.0)
    assert "ZeroDivisionError: boom at call 5000" in halted.last_strategy_traceback
    assert "Traceback" in caplog.text and "boom at call 5000" in caplog.text
    fills_at_halt = [f for f in halted.executor.fills if f.seq > 0]
    assert fills_at_halt[-1].ts_ns >= fills_at_halt[0].ts_ns

    carried = run_replay(recording, strategy=FailEvery(5000), on_strategy_error="continue")
    cs = carried.status()
    calls = carried.strategy.calls
    assert cs.strategy_errors == calls // 5000 >= 5 and not cs.halted
    assert cs.fills > st.fills


def test_stop_under_load_writes_every_fill_and_the_summary(recording, tmp_path):
    cfg = EngineConfig(source=f"replay:{recording}", speed=100, ema_fast=2, ema_slow=5,
                       target_qty=0.01, max_position=0.05, max_orders_per_s=1000,
                       out_dir=str(tmp_path), dispatch="polling", poll_interval_ms=1,
                       journal_flush_ms=200)
    engine = Engine(cfg)
    snapshots = []
    engine.subscribe(snapshots.append)
    engine.start()
    deadline = time.monotonic() + 30
    while len(engine.executor.fills) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.state == "running", "the replay ended before the stop"
    t0 = time.monotonic()
    status = engine.stop(timeout_s=10)
    assert time.monotonic() - t0 <= 10.5
    assert status.state == "stopped" and status.error is None
    fills = pl.read_parquet(engine.run_dir / "fills.parquet")
    assert len(fills) == len(engine.executor.fills) >= 30
    assert fills["qty"].to_list() == [f.qty for f in engine.executor.fills]
    orders = pl.read_parquet(engine.run_dir / "orders.parquet")
    assert len(orders) == status.orders + status.orders_rejected
    summary = orjson.loads((engine.run_dir / "summary.json").read_bytes())
    assert summary["fills"] == len(fills) and summary["batches"] < 41249
    for stage in ("parse", "queue", "book", "strategy", "order", "tick_to_trade"):
        assert set(summary["latency"][stage]) == {"p50_ns", "p99_ns", "p999_ns", "max_ns",
                                                  "count"}
    assert summary["latency"]["tick_to_trade"]["count"] == summary["batches"]
    assert summary["tuning"]["event_loop"] in ("uvloop", "asyncio")
    # UI snapshots: at most 10 per second, the newest one kept
    assert 1 <= len(snapshots) <= status.elapsed_s * 10 + 1
    assert engine.latest.get().run_id == engine.run_id


def test_kill_switch_flattens_and_halts(recording):
    cfg = EngineConfig(source=f"replay:{recording}", speed=100, ema_fast=2, ema_slow=5,
                       out_dir=None)
    engine = Engine(cfg).start()
    deadline = time.monotonic() + 30
    while not any(p.qty for p in engine.positions.all()) and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.kill("test")
    while any(p.qty for p in engine.positions.all()) and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = engine.executor.orders_sent
    time.sleep(0.5)
    status = engine.stop()
    assert status.halted and status.halt_reason == "test"
    assert all(p.qty == 0 for p in status.positions)
    assert status.orders == sent  # nothing new after the flatten


def test_stop_returns_within_its_timeout():
    engine = Engine(EngineConfig(source="sim", speed=10, out_dir=None)).start()
    time.sleep(1.0)
    t0 = time.monotonic()
    status = engine.stop(timeout_s=3.0)
    assert time.monotonic() - t0 <= 3.5
    assert status.state == "stopped" and status.events > 0


def test_ring_source_fed_by_the_cpp_feed_handler_in_another_process(recording, tmp_path):
    from workbench.book.l2 import L2Book
    from workbench.feed.ring import ShmRing

    normalizer = normalizer_for("binance")
    batches = []
    for i, (_, message) in enumerate(ReplayFeed(recording, None)):
        batch = normalizer.normalize(message, i)
        if len(batch):
            batches.append(batch.copy())
        if i == 3000:
            break
    events = np.concatenate(batches)
    source = tmp_path / "events.npy"
    np.save(source, events)
    name = f"t-engine-{os.getpid()}"
    ring = ShmRing.create(name, 1 << 16)
    try:
        engine = Engine(EngineConfig(source=f"ring:{name}", out_dir=None)).start()
        feed = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "feed", "--ring", name, "--source",
             str(source), "--rate", "200000", "--lossless"],
            capture_output=True, text=True, timeout=60)
        assert feed.returncode == 0, feed.stderr
        deadline = time.monotonic() + 30
        while engine.events < len(events) and time.monotonic() < deadline:
            time.sleep(0.05)
        status = engine.stop(timeout_s=10)
    finally:
        ring.close()
    assert status.error is None
    assert status.events == len(events) and status.batches == len(batches)
    reference = L2Book(int(events["symbol_id"][0]))
    reference.apply(events)
    book = engine.sync.book(int(events["symbol_id"][0]))
    assert (book.best_bid, book.best_ask) == (reference.best_bid, reference.best_ask)
    assert engine.latency.summary()["queue"]["count"] == len(batches)


def test_cli_run_replays_flat_out_and_prints_the_tables(recording, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "run", "--source", f"replay:{recording}",
         "--speed", "0", "--dispatch", "callback", "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr
    assert "tick_to_trade" in out.stdout and "positions and PnL" in out.stdout
    (run_dir,) = tmp_path.iterdir()
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["batches"] == 41249 and summary["state"] == "stopped"
    assert len(pl.read_parquet(run_dir / "fills.parquet")) == summary["fills"] > 0


def test_ws_feed_that_drops_reconnects_and_the_book_resyncs(recording):
    """SimExchange (at 200x the recorded pace) skips a book delta 2,000 messages after
    serving the REST snapshot and drops the connection after 10,000: BookSync detects the
    gap, the engine fetches a fresh REST snapshot, the feed reconnects (the stream resumes
    where it stopped) and trading goes on."""
    from workbench.feed.simex import Faults, SimExchange

    strategy = Recorder()
    with SimExchange(recording, venue="binance", speed=200,
                     faults=Faults(gap_after=2000, gap_after_snapshot=True,
                                   disconnect_after=10000)) as simex:
        cfg = EngineConfig(source=f"ws:{simex.url}/stream", rest_url=simex.rest_url,
                           venue="binance", out_dir=None, idle_end_s=1.0)
        engine = Engine(cfg, strategy=strategy).start()
        assert engine.wait(120), "the run did not end"
        status = engine.stop()
    assert status.error is None
    feed, sync = status.feed, status.book_sync
    assert feed["connects"] >= 2, (feed, simex.stats)
    assert feed["reconnects"] >= 1, feed
    assert sync["gaps"] >= 1, (sync, simex.stats)
    assert sync["snapshots"] >= 2 and feed["snapshots"] >= 2, (sync, feed, simex.stats)
    first_after_drop = [s for s in strategy.seen if s > 10000]
    assert first_after_drop, "the strategy never ran again after the reconnect"
    (book,) = engine.sync.books.values()
    assert book.valid and book.best_bid < book.best_ask


def test_malformed_and_deeply_nested_frames_are_counted_and_the_run_goes_on():
    """SimExchange's simulator, flat out, sends one truncated JSON frame after 300 messages and
    one valid JSON frame 1,000 levels deep after 600: both are counted as malformed by the
    feed, nothing else is lost, and the run ends as it was asked to (stopped, no error)."""
    from workbench.feed.simex import Faults, SimExchange

    with SimExchange(venue="binance", speed=None,
                     faults=Faults(malformed_after=300, deep_json_after=600)) as simex:
        cfg = EngineConfig(source=f"ws:{simex.url}/stream", rest_url=simex.rest_url,
                           venue="binance-usdm", out_dir=None, duration_s=3.0)
        engine = Engine(cfg).start()
        assert engine.wait(60), "the run did not end"
        status = engine.stop()
        faults = dict(simex.stats.faults)
    assert faults == {"malformed": 1, "deep_json": 1}
    assert status.state == "stopped" and status.error is None
    feed = status.feed
    assert feed["malformed"] == 2, feed
    assert feed["messages"] > 600 + 2 and feed["connects"] == 1, feed
    assert status.events == feed["events"] > 0


class PoisonedOrders(list):
    """A strategy's order list that cannot be iterated: the Executor meets an exception no
    part of the trading path expects."""

    def __iter__(self):
        raise LookupError("poisoned order list")


class Poisoner(EmaCross):
    """EmaCross that hands the engine a PoisonedOrders after `after` calls."""

    def __init__(self, after: int) -> None:
        super().__init__(20, 100, 0.01)
        self.calls = 0
        self.after = after

    def on_events(self, book, batch):
        self.calls += 1
        orders = super().on_events(book, batch)
        return PoisonedOrders([None]) if self.calls == self.after else orders


@pytest.mark.parametrize("dispatch", ["callback", "polling"])
def test_an_unexpected_exception_on_the_path_fails_the_run_with_that_exception(dispatch,
                                                                               tmp_path):
    """In callback dispatch the exception comes out of the feed thread (through the websocket
    sink and WebSocketFeed.run), in polling dispatch out of the engine thread: either way the
    run ends by itself as failed, with the exception in status(), summary.json and the
    journal's files written."""
    engine = Engine(EngineConfig(source="sim", speed=20, dispatch=dispatch, poll_interval_ms=1,
                                 out_dir=str(tmp_path)), strategy=Poisoner(after=200)).start()
    assert engine.wait(60), "the run did not end on the exception"
    status = engine.stop()
    assert status.state == "failed" and status.finished
    thread = "feed" if dispatch == "callback" else "engine thread"
    assert status.error.startswith(f"{thread} failed: LookupError") and "poisoned" in status.error
    summary = orjson.loads((engine.run_dir / "summary.json").read_bytes())
    assert summary["state"] == "failed" and summary["error"] == status.error
    assert not (engine.run_dir / "journal").exists()


def test_stop_with_a_short_timeout_says_still_running_and_the_run_then_finishes_clean(
        recording, tmp_path):
    cfg = EngineConfig(source=f"replay:{recording}", speed=100, ema_fast=2, ema_slow=5,
                       out_dir=str(tmp_path))
    engine = Engine(cfg).start()
    deadline = time.monotonic() + 30
    while len(engine.executor.fills) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    status = engine.stop(timeout_s=0.001)
    assert status.state == "running" and not status.finished and status.error is None
    assert engine.wait(30), "the run did not finish after stop"
    final = engine.status()
    assert final.state == "stopped" and final.error is None
    summary = orjson.loads((engine.run_dir / "summary.json").read_bytes())
    assert summary["state"] == "stopped" and summary["error"] is None
    fills = pl.read_parquet(engine.run_dir / "fills.parquet")
    assert len(fills) == summary["fills"] == final.fills >= 10
