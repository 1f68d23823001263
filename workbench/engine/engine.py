"""Engine: the background paper-trading engine (feed thread + engine thread + journal writer).

    engine = Engine(EngineConfig(source="replay:/path/rec.gz", speed=0, dispatch="polling"))
    engine.start()                 # returns at once
    engine.set_dispatch("callback")  # while running; loses and duplicates no batch
    engine.status()                # counts, positions, PnL, latency summary
    engine.stop(timeout_s=10)      # returns within the timeout, every record flushed

Threads: the *feed thread* reads the source (SimExchange over a websocket, a recording, a
ShmRing or a live websocket), normalizes messages into EVENT_DTYPE batches and submits them to
the Dispatcher; the *engine thread* owns an asyncio event loop (uvloop when installed) that
drains the queue in the polling modes and runs the housekeeping jobs; a journal thread writes
Parquet. Every batch goes through `on_events`: book apply -> strategy -> Executor ->
PaperBroker, stamped at each stage (see `workbench.latency.stages`):

  parse = publish - receive, queue = pick-up - publish, book, strategy, order (only when the
  strategy sent orders: decision -> broker ack), tick_to_trade = receive -> ack (the broker ack
  when orders went out, else the no-order decision). wire (exchange time -> receive) is
  recorded for `ws:` sources only, with the clock offset taken at start (reported apart).

Housekeeping (journal flush, latency fold, snapshot publish, display refresh, book rebuild)
runs in the engine thread between batches, under the dispatch lock, each timed and noted as a
spike cause. UI snapshots are published at most every `publish_ms` (>= 100 ms): `latest` holds
the newest one (thread-safe); `subscribe(fn)` callbacks are invoked from the engine thread with
each snapshot (the Jupyter layer marshals them with `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import dataclasses
import logging
import math
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workbench import tuning
from workbench.book.sync import BookSync
from workbench.engine.broker import PaperBroker
from workbench.engine.config import DISPATCH_MODES, EngineConfig
from workbench.engine.dispatch import Dispatcher
from workbench.engine.execution import Executor
from workbench.engine.journal import Journal
from workbench.engine.positions import Positions
from workbench.engine.risk import RiskLimits
from workbench.engine.strategy import EmaCross, Strategy
from workbench.engine.warm import PathWarmer
from workbench.errors import ConfigError, EngineError
from workbench.events import EventFlag, EventKind
from workbench.feed.symbols import SYMBOLS
from workbench.feed.venues.base import M_DELTA, M_OTHER, M_SNAPSHOT, MessageInfo
from workbench.latency.recorder import LatencyRecorder
from workbench.latency.spikes import SpikeLog
from workbench.latency.stages import STAGES

log = logging.getLogger("workbench.engine")

MAX_WAIT_S = 0.05  # the engine thread re-checks stop/duration at least this often
SECOND_NS = 1_000_000_000
LAST_IN_MSG = int(EventFlag.LAST_IN_MSG)
SNAPSHOT_FLAG = int(EventFlag.SNAPSHOT)
BID = int(EventKind.BID_LEVEL)
ASK = int(EventKind.ASK_LEVEL)
SNAPSHOT_BEGIN = int(EventKind.SNAPSHOT_BEGIN)
SNAPSHOT_LIMIT = 1000
SNAPSHOT_RETRY_S = 1.0
REST_MARKETS = {"binance": "spot", "binance-usdm": "usdm", "binance-coinm": "coinm"}
HOUSEKEEPING = ("journal_flush", "latency_fold", "publish", "book_check")
_now = time.perf_counter_ns

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    """Interpreter exit: stop every running engine so its journal is flushed."""
    for engine in list(_LIVE):
        with contextlib.suppress(Exception):
            engine.stop(timeout_s=10.0)


class LatestSnapshot:
    """The newest UI snapshot (a dict), set by the engine thread, read by any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self.version = 0

    def set(self, value: dict[str, Any]) -> None:
        with self._lock:
            self._value = value
            self.version += 1

    def get(self) -> dict[str, Any] | None:
        """The newest snapshot, or None before the first publish."""
        with self._lock:
            return self._value


class Engine:
    """A paper-trading engine run (see the module docstring). Not restartable: one run each.

    config: EngineConfig (default: the simulator, callback dispatch). strategy: any object
    with `on_events(book, batch) -> list[OrderRequest]` (default EmaCross from the config).
    Raises ConfigError for a bad config; start() raises EngineError if the source cannot open.
    """

    def __init__(self, config: EngineConfig | None = None, strategy: Strategy | None = None
                 ) -> None:
        self.config = config if config is not None else EngineConfig()
        cfg = self.config
        self.run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.strategy = strategy if strategy is not None else EmaCross(
            cfg.ema_fast, cfg.ema_slow, cfg.target_qty, cfg.order_type)
        self.positions = Positions()
        self.risk = RiskLimits(cfg.max_position, cfg.max_orders_per_s, cfg.invalid_book_streak)
        self.broker = PaperBroker(cfg.maker_fee_bps, cfg.taker_fee_bps,
                                  int(cfg.broker_latency_us * 1000))
        self.run_dir = Path(cfg.out_dir) / self.run_id if cfg.out_dir else None
        self.journal: Journal | None = None
        self.executor = Executor(self.broker, self.risk, self.positions, cfg.slice_qty)
        self.latency = LatencyRecorder(on_fold=self._job_done)
        self.spikes = SpikeLog(cfg.spike_threshold_us)
        self.dispatcher = Dispatcher(self.on_events, cfg.dispatch, cfg.poll_interval_ms)
        self.latest = LatestSnapshot()
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self.venue = _normalizer_venue(cfg)
        self.sync = BookSync("tardis" if cfg.source_kind == "ring" else self.venue,
                             on_resync=self._on_resync)
        self._ever_valid: set[int] = set()
        self._wire = cfg.source_kind == "ws"
        self._ring_source = cfg.source_kind == "ring"
        self._clock_offset_ns = 0
        self._threshold_ns = self.spikes.threshold_ns
        self._warmup_ns = int(cfg.strategy_warmup_s * SECOND_NS)
        self._latency_warmup_ns = int(cfg.latency_warmup_s * SECOND_NS)
        self._trade_from_ns = 0
        self._measure_from_ns = 0
        # (perf_counter_ns, process_time) at the first measured batch
        self._measured_since: tuple[int, float] | None = None
        self._measured_cpu_s = 0.0
        self._market_ns = 0  # venue time of the last batch (ns)
        self._state = "new"
        self._stop_requested = threading.Event()
        self._source_done = threading.Event()
        self._finished = threading.Event()
        self._closed = False
        self._feed_thread: threading.Thread | None = None
        self._engine_thread: threading.Thread | None = None
        self._simex = None
        self._ws_feed = None
        self._tuning: dict[str, Any] = {}
        self._error: str | None = None
        self.events = 0
        self.batches = 0
        self.dispatch_gaps = 0
        self.dispatch_dups = 0
        self._last_dseq = 0
        self.strategy_errors = 0
        self._strategy_halted = False
        self._flatten_pending = False
        self._stop_deadline = math.inf  # time.monotonic() by which stop() must return
        self.last_strategy_traceback = ""
        self.invalid_books = 0
        self.book_rebuilds = 0
        self.snapshots_applied = 0
        self._rest = None
        self._resync_wanted: set[int] = set()
        self._resync_inflight: set[int] = set()
        # symbols whose book comes from a REST snapshot taken ahead of the batches still in
        # flight: not traded on until a delta in sequence has been applied after it
        self._ahead: set[int] = set()
        self._snapshot_normalizer = None
        self.housekeeping: dict[str, list[int]] = {}  # cause -> [runs, total_ns, max_ns]
        self.dispatch_switches = 0
        self._t_start = 0
        self._t_end = 0
        self._last_rate = (0, 0)
        self._rate = 0.0
        self._feed_stats: dict[str, Any] = {}
        self._warmer: PathWarmer | None = None
        if cfg.feed_warm_us and cfg.source_kind in ("sim", "ws"):
            self._warmer = PathWarmer(self._shadow_engine(), self.sync, self.venue)

    def _shadow_engine(self) -> Engine:
        """The engine a PathWarmer runs shadow messages through: this config without journal,
        warm-ups or warmer, callback dispatch, and a deep copy of the strategy (ConfigError
        when it cannot be copied)."""
        try:
            strategy = copy.deepcopy(self.strategy)
        except Exception as exc:
            raise ConfigError(f"feed_warm_us: the strategy must be copyable (copy.deepcopy) to "
                              f"run on shadow messages: {type(exc).__name__}: {exc}") from exc
        return Engine(dataclasses.replace(
            self.config, out_dir=None, run_id=f"{self.run_id}-shadow", dispatch="callback",
            strategy_warmup_s=0.0, latency_warmup_s=0.0, feed_spin=False, feed_warm_us=0.0),
            strategy)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Engine:
        """Open the source and start the threads; returns at once (self)."""
        if self._state != "new":
            raise EngineError(f"start: expected a new engine, this one is {self._state}")
        cfg = self.config
        self._state = "starting"
        try:
            if self.run_dir is not None:
                self.journal = Journal(self.run_dir, on_write=self._job_done)
                self.executor.journal = self.journal
            self._open_source()
            self._tuning = tuning.apply_gc_mode(cfg.gc_mode)
            self._tuning.update(tuning.apply_switch_interval(cfg.gil_switch_interval_us))
        except Exception:
            self._state = "failed"
            self._close_source()
            if self.journal is not None:
                self.journal.close()
            raise
        self.spikes.install_gc_hook()
        self._clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._t_start = time.perf_counter_ns()
        self._last_rate = (self._t_start, 0)
        self._state = "running"
        _LIVE.add(self)
        self._engine_thread = threading.Thread(target=self._engine_main, name="wb-engine",
                                               daemon=True)
        self._feed_thread = threading.Thread(target=self._feed_main, name="wb-feed",
                                             daemon=True)
        self._engine_thread.start()
        self._feed_thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop the feed, process what is queued, flush the journal, write summary.json.
        Returns within `timeout_s` (if the threads have not finished by then, the status says
        so in `error`). Returns the final status. Idempotent."""
        deadline = time.monotonic() + timeout_s
        self._stop_deadline = min(self._stop_deadline, deadline)
        if self._state == "new":
            self._state = "stopped"
            return self.status()
        self._stop_requested.set()
        self.dispatcher.set_mode(self.dispatcher.mode)  # wakes a blocked engine thread
        thread = self._engine_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._error = self._error or f"stop: engine thread still busy after {timeout_s} s"
        return self.status()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run has finished (end of data, duration, stop or failure); False on
        timeout."""
        return self._finished.wait(timeout_s)

    def set_dispatch(self, mode: str) -> None:
        """Switch dispatch mode while running: `polling`, `blocking` or `callback`."""
        if mode not in DISPATCH_MODES:
            raise ConfigError(f"dispatch: expected {' | '.join(DISPATCH_MODES)}, got {mode!r}")
        if mode != self.dispatcher.mode:
            self.dispatch_switches += 1
        self.dispatcher.set_mode(mode)

    def kill(self, reason: str = "kill switch") -> None:
        """Kill switch: halt trading and flatten every position (at the next batch)."""
        self.risk.kill(reason)
        self._flatten_pending = True

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(snapshot)` from the engine thread at each publish (<= 10/s)."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    @property
    def market_time_ns(self) -> int:
        """Venue event time of the last batch processed (ns since the epoch; 0 before any)."""
        return self._market_ns

    @property
    def state(self) -> str:
        """new | starting | running | stopped | failed."""
        return self._state

    # -- the trading path ---------------------------------------------------------------
    def on_events(self, batch: np.ndarray, info: MessageInfo | None = None, publish_ns: int = 0,
                  dseq: int = 0, queue_depth: int = 0) -> None:
        """Process one batch (one message's events) and its MessageInfo: book (through
        BookSync), strategy, orders, latency. info None (ring source): derived from the events.

        Called by the Dispatcher (callback mode: on the feed thread) with the dispatch lock
        held; `publish_ns` is the submit stamp, `dseq` the dispatch sequence number."""
        t_pick = _now()
        n = len(batch)
        if self._closed or n == 0:
            return
        if dseq:
            last = self._last_dseq
            if dseq != last + 1:
                if dseq <= last:
                    self.dispatch_dups += 1
                    return
                self.dispatch_gaps += 1
            self._last_dseq = dseq
        first = batch.item(0)
        # ring source: events were received by another process; our receive is its publish
        recv_ns = first[2] if self._ring_source else first[1]
        seq, sid = first[3], first[5]
        if not sid:  # no instrument (venue heartbeats): nothing to book or trade
            if info is not None:
                self.sync.process(batch, info)  # per-connection sequence checks still apply
            self.events += n
            self.batches += 1
            return
        market_ns = first[0] or self._market_ns  # venue time; messages without one keep the last
        self._market_ns = market_ns
        if not self._trade_from_ns:
            self._trade_from_ns = market_ns + self._warmup_ns
            self._measure_from_ns = market_ns + self._latency_warmup_ns
        sync = self.sync
        if info is None:
            info = _info_of(batch, first)
        changed = sync.process(batch, info)
        book = changed or sync.book(sid)
        ahead = self._ahead
        if ahead and sid in ahead and changed is not None and info.kind == M_DELTA:
            ahead.discard(sid)  # the stream has caught up with the REST snapshot
        valid = book.valid and book.best_bid < book.best_ask  # NaN compares False
        if valid and ahead and sid in ahead:  # synced but ahead of these batches: no streak
            valid = None
        t_book = _now()
        executor = self.executor
        orders = None
        if valid:
            if sid not in self._ever_valid:
                self._ever_valid.add(sid)
            risk = self.risk
            if risk.bad_books:
                risk.on_book(True)
            if market_ns >= self._trade_from_ns and not self._strategy_halted:
                try:
                    orders = self.strategy.on_events(book, batch)
                except Exception:
                    orders = None
                    self._strategy_failed(sid, market_ns, seq)
        elif valid is False and sid in self._ever_valid:
            self.invalid_books += 1
            if self.risk.on_book(False):
                log.warning("trading halted: %s", self.risk.halt_reason)
        t_strat = _now()
        if executor.broker.active.get(sid):
            executor.on_book(sid, book, market_ns, seq)
        if self._flatten_pending:
            self._flatten_pending = False
            for symbol, symbol_book in list(sync.books.items()):
                if executor.flatten(symbol, market_ns, seq):
                    executor.on_book(symbol, symbol_book, market_ns, seq)
        if orders:
            executor.submit(orders, market_ns, seq)
            executor.on_book(sid, book, market_ns, seq)
            t_ack = _now()
            order_ns = t_ack - t_strat
        else:
            t_ack = t_strat
            order_ns = -1
        self.events += n
        self.batches += 1
        if market_ns < self._measure_from_ns:  # latency warm-up: processed, not measured
            return
        if not self._measured_since:
            self._measured_since = (t_pick, time.process_time())
        if not publish_ns:
            publish_ns = t_pick
        t2t = t_ack - recv_ns
        wire = recv_ns + self._clock_offset_ns - first[0] if self._wire and first[0] else -1
        if self._ring_source:  # the ring is the queue: from the C++ publish to pick-up
            publish_ns, parse = recv_ns, -1
        else:
            parse = publish_ns - recv_ns
        self.latency.add((t_ack, wire, parse, t_pick - publish_ns, t_book - t_pick,
                          t_strat - t_book, order_ns, t2t))
        if t2t > self._threshold_ns:
            self._spike(recv_ns, queue_depth, t2t, seq, publish_ns, t_pick, t_book, t_strat,
                        order_ns)

    def _spike(self, recv_ns: int, depth: int, t2t: int, seq: int, publish_ns: int,
               t_pick: int, t_book: int, t_strat: int, order_ns: int) -> None:
        stages = {"parse": publish_ns - recv_ns, "queue": t_pick - publish_ns,
                  "book": t_book - t_pick, "strategy": t_strat - t_book, "order": order_ns}
        self.spikes.begin_iteration(recv_ns, depth)
        spike = self.spikes.end_iteration(t2t, stages, seq)
        if spike is not None and self.journal is not None:
            self.journal.append("spikes", {
                "seq": seq, "end_ns": spike.end_ns, "tick_to_trade_ns": t2t, **{
                    f"{k}_ns": v for k, v in stages.items()},
                "queue_depth": depth, "causes": ";".join(
                    f"{c.name}:{c.detail}:{c.duration_ns}" for c in spike.causes),
            })

    def _strategy_failed(self, sid: int, market_ns: int, seq: int) -> None:
        self.strategy_errors += 1
        self.last_strategy_traceback = traceback.format_exc()
        log.error("strategy error #%d at seq %d:\n%s", self.strategy_errors, seq,
                  self.last_strategy_traceback)
        if self.config.on_strategy_error == "halt":
            self._strategy_halted = True
            self.risk.kill(f"strategy error at seq {seq}")
            self._flatten_pending = True

    def _on_resync(self, symbol_id: int) -> None:
        """BookSync asks for a snapshot. Binance websocket sources: the engine thread fetches
        the REST depth snapshot (its loop; the feed thread never waits for it); other venues:
        the websocket feed resubscribes (the venue sends a fresh snapshot)."""
        if self._rest is not None:
            self._resync_wanted.add(symbol_id)
        elif self._ws_feed is not None:
            self._ws_feed.request_resync(SYMBOLS.symbol(symbol_id))

    async def _fetch_snapshot(self, symbol_id: int) -> None:
        symbol = SYMBOLS.symbol(symbol_id)
        try:
            body = await self._rest.afetch(symbol, SNAPSHOT_LIMIT)
        except Exception as exc:  # the client already retried with backoff
            log.warning("snapshot of %s failed (%s); asking again in %g s", symbol, exc,
                        SNAPSHOT_RETRY_S)
            await asyncio.sleep(SNAPSHOT_RETRY_S)
            self._resync_wanted.add(symbol_id)
            return
        finally:
            self._resync_inflight.discard(symbol_id)
        recv_ns = time.perf_counter_ns()
        with self.dispatcher.lock:
            t0 = time.perf_counter_ns()
            batch = self._snapshot_normalizer.normalize_snapshot(body, recv_ns, symbol)
            info = self._snapshot_normalizer.last
            self.sync.process(batch, info)
            self._ahead.add(info.symbol_id)
            self.snapshots_applied += 1
            t1 = time.perf_counter_ns()
        self._job_done("book_rebuild", t0, t1)

    # -- engine thread ------------------------------------------------------------------
    def _engine_main(self) -> None:
        cfg = self.config
        loop = None
        try:
            self._tuning.update(tuning.pin_current_thread(cfg.engine_cpus, "engine"))
            loop, name = tuning.new_event_loop(cfg.event_loop)
            self._tuning["event_loop"] = name
            loop.run_until_complete(self._engine_loop())
        except Exception as exc:
            self._error = f"engine thread failed: {exc!r}"
            log.exception("engine thread failed")
        finally:
            if loop is not None:
                loop.close()
            self._finalize()

    async def _engine_loop(self) -> None:
        cfg = self.config
        dispatcher = self.dispatcher
        periods = {name: int(cfg.period_ms(name) * 1_000_000) for name in HOUSEKEEPING}
        now = time.perf_counter_ns()
        due = {name: now + p for name, p in periods.items()}
        end_ns = self._t_start + int(cfg.duration_s * SECOND_NS) if cfg.duration_s else None
        tasks: set[asyncio.Task] = set()
        while not self._stop_requested.is_set():
            if self._resync_wanted:
                for sid in list(self._resync_wanted - self._resync_inflight):
                    self._resync_wanted.discard(sid)
                    self._resync_inflight.add(sid)
                    task = asyncio.ensure_future(self._fetch_snapshot(sid))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            now = time.perf_counter_ns()
            wait_s = min(MAX_WAIT_S, max(0.0, (min(due.values()) - now) / 1e9))
            await dispatcher.wait(wait_s)
            dispatcher.poll()
            now = time.perf_counter_ns()
            for name, at in due.items():
                if now >= at:
                    self._housekeep(name)
                    due[name] = now + periods[name]
            if end_ns is not None and now >= end_ns:
                break
            if self._source_done.is_set() and dispatcher.depth == 0:
                break
        for task in tasks:
            task.cancel()
        if self._rest is not None:
            with contextlib.suppress(Exception):
                await self._rest.aclose()

    def _job_done(self, name: str, start_ns: int, end_ns: int) -> None:
        """Account one housekeeping job and note it as a spike cause."""
        duration = end_ns - start_ns
        stats = self.housekeeping.setdefault(name, [0, 0, 0])
        stats[0] += 1
        stats[1] += duration
        stats[2] = max(stats[2], duration)
        self.spikes.note_cause(name, duration, end_ns=end_ns)

    def _housekeep(self, name: str) -> None:
        note = self._job_done
        if name == "latency_fold":  # detach under the lock, fold outside it (see on_fold)
            with self.dispatcher.lock:
                rows = self.latency.take()
            self.latency.fold_rows(rows)
            return
        with self.dispatcher.lock:
            t0 = time.perf_counter_ns()
            if name == "journal_flush":
                if self.journal is not None:
                    self.journal.flush()
            elif name == "book_check":
                name = "book_rebuild"
                for sid, book in self.sync.books.items():
                    if book.valid and book.crossed:
                        self.book_rebuilds += 1
                        self.sync.request_resync(sid)
            else:
                name = "snapshot_publish"
                snapshot = self._snapshot()
            t1 = time.perf_counter_ns()
            note(name, t0, t1)
        if name == "snapshot_publish":  # percentiles outside the lock: the feed goes on
            snapshot["latency"] = self.latency.snapshot()
            self.latest.set(snapshot)
            t2 = time.perf_counter_ns()
            note("latency_summary", t1, t2)
            t1 = t2
        if name == "snapshot_publish" and self._subscribers:
            for callback in list(self._subscribers):
                try:
                    callback(snapshot)
                except Exception:
                    log.exception("snapshot subscriber failed; unsubscribed")
                    self.unsubscribe(callback)
            note("display_refresh", t1, time.perf_counter_ns())

    def _finalize(self) -> None:
        """Engine thread, last: stop the feed, drain, flush and write the run files."""
        self._stop_requested.set()
        self._close_source()
        if self._feed_thread is not None:
            self._feed_thread.join(self._time_left(5.0))
        with self.dispatcher.lock:
            if not self._error and self.dispatcher.depth:
                self.dispatcher._drain_locked()
            self._closed = True
            self._t_end = time.perf_counter_ns()
            if self._measured_since:
                self._measured_cpu_s = time.process_time() - self._measured_since[1]
        self.latency.close()
        self.spikes.remove_gc_hook()
        tuning.restore_gc(self.config.gc_mode)
        tuning.apply_switch_interval(self._tuning["gil_switch_interval_before_us"])
        if self._state == "running":
            self._state = "failed" if self._error else "stopped"
        if self.journal is not None:
            try:
                self.journal.write_json("summary.json", self.summary())
                self.journal.write_json("latency.json", {
                    "summary": self.latency.summary(),
                    "series": {s.value: {k: v.tolist() for k, v in self.latency.series(s).items()}
                               for s in STAGES},
                })
                self.journal.close()
            except Exception as exc:
                self._error = self._error or f"journal: {exc!r}"
                log.exception("writing the run files failed")
        _LIVE.discard(self)
        self._finished.set()

    # -- feed thread --------------------------------------------------------------------
    def _open_source(self) -> None:
        cfg = self.config
        kind = cfg.source_kind
        if kind == "sim":
            from workbench.feed.simex import SimExchange

            speed = cfg.speed if cfg.speed > 0 else None
            self._simex = SimExchange(cfg.recording, venue=_simex_venue(cfg.venue), speed=speed)
            self._simex.start()
        elif kind == "ring":
            from workbench.feed.ring import ShmRing

            self._ring = ShmRing.attach(cfg.source_arg)
        if kind in ("sim", "ws") and self.venue in REST_MARKETS:
            from workbench.feed.rest import DepthSnapshotClient
            from workbench.feed.venues import normalizer_for

            rest_url = self._simex.rest_url if kind == "sim" else cfg.rest_url
            self._rest = DepthSnapshotClient(REST_MARKETS[self.venue], rest_url)
            self._snapshot_normalizer = normalizer_for(self.venue)
        if kind == "replay":
            path = Path(cfg.source_arg)
            if not path.exists():
                raise ConfigError(f"source: replay file {path} does not exist")

    def _close_source(self) -> None:
        feed = self._ws_feed
        if feed is not None:
            with contextlib.suppress(Exception):
                feed.stop()
        if self._simex is not None:
            with contextlib.suppress(Exception):
                self._simex.stop(self._time_left(5.0))

    def _time_left(self, most_s: float) -> float:
        """Seconds a shutdown step may take: at most `most_s`, and within stop()'s timeout."""
        return max(0.05, min(most_s, self._stop_deadline - time.monotonic()))

    def _feed_main(self) -> None:
        cfg = self.config
        try:
            self._tuning.update(tuning.pin_current_thread(cfg.feed_cpus, "feed"))
            kind = cfg.source_kind
            if kind == "replay":
                self._run_replay()
            elif kind == "ring":
                self._run_ring()
            else:
                self._run_ws()
        except Exception as exc:
            self._error = f"feed failed: {exc!r}"
            log.exception("feed thread failed")
        finally:
            self._source_done.set()

    def _run_replay(self) -> None:
        from workbench.feed.replay import ReplayFeed
        from workbench.feed.venues import normalizer_for

        cfg = self.config
        normalizer = normalizer_for(_normalizer_venue(cfg))
        submit = self.dispatcher.submit
        stop = self._stop_requested
        speed = cfg.speed if cfg.speed > 0 else None
        clock = time.perf_counter_ns
        messages = 0
        for _, message in ReplayFeed(cfg.source_arg, speed):
            if stop.is_set():
                break
            batch = normalizer.normalize(message, clock())
            messages += 1
            if len(batch):
                submit(batch, normalizer.last)
        self._feed_stats = {"messages": messages, "events": normalizer.stats.events,
                            "malformed": normalizer.stats.malformed_total}

    def _run_ring(self) -> None:
        ring = self._ring
        submit = self.dispatcher.submit
        stop = self._stop_requested
        idle = 0
        cutter = _MessageCutter()
        try:
            while not stop.is_set():
                view = ring.read()
                if not len(view):
                    idle += 1
                    if idle == 1000:
                        for message in cutter.flush():
                            submit(message)
                    time.sleep(0 if idle < 1000 else 0.0005)
                    continue
                idle = 0
                for message in cutter.cut(view):
                    submit(message)
            self._feed_stats = {"ring": dataclasses.asdict(ring.stats)}
        finally:
            ring.close()

    def _run_ws(self) -> None:
        from workbench.feed.ws import WebSocketFeed

        cfg = self.config
        venue = _normalizer_venue(cfg)
        url = self._simex.url + _ws_path(venue) if cfg.source_kind == "sim" else cfg.source_arg
        submit = self.dispatcher.submit

        warmer = self._warmer
        remember = warmer.remember if warmer is not None else None
        loop, name = tuning.new_event_loop(cfg.event_loop, spin=cfg.feed_spin, on_idle=warmer,
                                           idle_period_ns=int(cfg.feed_warm_us * 1000))
        self._tuning["feed_event_loop"] = name
        self._tuning["feed_warm_us"] = cfg.feed_warm_us if warmer is not None else 0.0
        try:
            feed = WebSocketFeed(url, venue, list(cfg.symbols), lambda *_: None,
                                 rest_url=cfg.rest_url, snapshots=False)
            info = feed.normalizer.last

            def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
                if len(batch):
                    submit(batch, info)
                    if remember is not None:
                        remember(message, info.channel)

            feed.sink = sink
            self._ws_feed = feed
            loop.run_until_complete(self._watch_ws(feed))
        finally:
            loop.close()
            if self._ws_feed is not None:
                self._feed_stats = dict(vars(self._ws_feed.stats))

    async def _watch_ws(self, feed) -> None:
        task = asyncio.ensure_future(feed.run())
        idle_ns = int(self.config.idle_end * SECOND_NS) if self.config.idle_end else None
        seen, seen_at = 0, time.perf_counter_ns()
        while not task.done() and not self._stop_requested.is_set():
            await asyncio.sleep(0.05)
            if idle_ns is not None:
                now = time.perf_counter_ns()
                if feed.stats.messages != seen:
                    seen, seen_at = feed.stats.messages, now
                elif seen and now - seen_at >= idle_ns:
                    break
        feed.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5.0)

    # -- reporting ----------------------------------------------------------------------
    def _mark_positions(self) -> None:
        """Mark every position at its book's mid (for unrealized PnL)."""
        for sid, book in self.sync.books.items():
            mid = book.mid
            if mid == mid:
                self.positions.mark(sid, mid)

    def _snapshot(self) -> dict[str, Any]:
        self._mark_positions()
        now = time.perf_counter_ns()
        t0, e0 = self._last_rate
        if now - t0 >= 500_000_000:
            self._rate = (self.events - e0) * 1e9 / (now - t0)
            self._last_rate = (now, self.events)
        return {
            "run_id": self.run_id,
            "state": self._state,
            "dispatch": self.dispatcher.mode,
            "elapsed_s": (now - self._t_start) / 1e9,
            "events": self.events,
            "batches": self.batches,
            "events_per_s": self._rate,
            "queue_depth": self.dispatcher.depth,
            "orders": self.executor.orders_sent,
            "fills": len(self.executor.fills),
            "positions": [_position_dict(p) for p in self.positions.all()],
            "pnl": self.positions.totals(),
            "halted": self.risk.halted,
            "spikes": self.spikes.spike_count,
        }

    def status(self) -> dict[str, Any]:
        """Everything about the run now (thread-safe to call any time)."""
        if self._closed:
            self._mark_positions()
        end = self._t_end or time.perf_counter_ns()
        elapsed = (end - self._t_start) / 1e9 if self._t_start else 0.0
        return {
            "run_id": self.run_id,
            "state": self._state,
            "error": self._error,
            "source": self.config.source,
            "dispatch": self.dispatcher.mode,
            "dispatch_switches": self.dispatch_switches,
            "elapsed_s": elapsed,
            "events": self.events,
            "batches": self.batches,
            "events_per_s": self.events / elapsed if elapsed > 0 else 0.0,
            "measured": self._measured(),
            "submitted": self.dispatcher.submitted,
            "handled": self.dispatcher.handled,
            "queue_depth": self.dispatcher.depth,
            "max_queue_depth": self.dispatcher.max_depth,
            "dispatch_gaps": self.dispatch_gaps,
            "dispatch_dups": self.dispatch_dups,
            "orders": self.executor.orders_sent,
            "orders_rejected": self.executor.orders_rejected,
            "risk_rejects": dict(self.risk.rejects),
            "fills": len(self.executor.fills),
            "positions": [_position_dict(p) for p in self.positions.all()],
            "pnl": self.positions.totals(),
            "halted": self.risk.halted,
            "halt_reason": self.risk.halt_reason,
            "invalid_books": self.invalid_books,
            "book_rebuilds": self.book_rebuilds,
            "book_sync": dict(vars(self.sync.stats)),
            "strategy_errors": self.strategy_errors,
            "spikes": self.spikes.spike_count,
            "spike_causes": dict(self.spikes.cause_counts),
            "housekeeping": {
                name: {"runs": n, "mean_us": total / n / 1e3, "max_us": mx / 1e3}
                for name, (n, total, mx) in list(self.housekeeping.items())},
            "feed": dict(self._feed_stats),
            "warm_runs": self._warmer.runs if self._warmer is not None else 0,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }

    def _measured(self) -> dict[str, float]:
        """The measured part of the run (after `latency_warmup_s`): wall seconds from its first
        batch to the end of the run (or now) and the process CPU seconds meanwhile."""
        if not self._measured_since:
            return {"wall_s": 0.0, "cpu_s": 0.0}
        since_ns, cpu0 = self._measured_since
        end = self._t_end or time.perf_counter_ns()
        cpu = self._measured_cpu_s if self._t_end else time.process_time() - cpu0
        return {"wall_s": (end - since_ns) / 1e9, "cpu_s": cpu}

    def summary(self) -> dict[str, Any]:
        """What summary.json holds: config, counts, fills, PnL, tuning, per-stage latency."""
        status = self.status()
        return {
            **status,
            "config": self.config.to_dict(),
            "tuning": dict(self._tuning),
            "latency": self.latency.summary(),
        }


def _position_dict(p) -> dict[str, Any]:
    return {"symbol_id": p.symbol_id, "qty": p.qty, "avg_price": p.avg_price,
            "realized_pnl": p.realized_pnl, "unrealized_pnl": p.unrealized_pnl,
            "fees": p.fees, "net_pnl": p.net_pnl, "mark": None if math.isnan(p.mark) else p.mark}


class _MessageCutter:
    """Cuts ring reads into messages at LAST_IN_MSG flags. A read may end inside a message
    (the ring's wrap, or the producer mid-message): that tail is kept and completed by the
    next read. Batches are copies (a read's view is handed back at the next read)."""

    def __init__(self) -> None:
        self._tail: np.ndarray | None = None

    def cut(self, view: np.ndarray) -> list[np.ndarray]:
        ends = (np.flatnonzero(view["flags"] & LAST_IN_MSG) + 1).tolist()
        out = []
        start = 0
        for end in ends:
            part = view[start:end]
            if self._tail is not None:
                part = np.concatenate((self._tail, part))
                self._tail = None
            else:
                part = part.copy()
            out.append(part)
            start = end
        if start < len(view):
            rest = view[start:]
            self._tail = rest.copy() if self._tail is None else np.concatenate((self._tail, rest))
        return out

    def flush(self) -> list[np.ndarray]:
        """The incomplete tail as a batch of its own (the producer went quiet mid-message)."""
        tail, self._tail = self._tail, None
        return [] if tail is None else [tail]


def _info_of(batch: np.ndarray, first: tuple) -> MessageInfo:
    """MessageInfo of a batch that came without one (ring source, sequenced by order only):
    snapshot if flagged so, delta if it carries level events, else other."""
    info = MessageInfo()
    info.symbol_id = first[5]
    info.first_id = info.last_id = first[4]
    if first[6] == SNAPSHOT_BEGIN or first[8] & SNAPSHOT_FLAG:
        info.kind = M_SNAPSHOT
    elif ((batch["kind"] == BID) | (batch["kind"] == ASK)).any():
        info.kind = M_DELTA
    else:
        info.kind = M_OTHER
    return info


def _simex_venue(venue: str) -> str:
    return venue.split("-", 1)[0]


def _normalizer_venue(cfg: EngineConfig) -> str:
    """The normalizer key: `binance` means USD-M for the simulator (it speaks USD-M) and for
    recordings under a `usdm` folder, COIN-M under `cm`/`coinm`; other venues as given."""
    if cfg.venue != "binance":
        return cfg.venue
    where = (cfg.recording or cfg.source_arg or "").replace("\\", "/").lower()
    if cfg.source_kind == "sim" and not cfg.recording:
        return "binance-usdm"
    if "/usdm/" in where:
        return "binance-usdm"
    if "/cm/" in where or "coinm" in where:
        return "binance-coinm"
    return "binance"


def _ws_path(venue: str) -> str:
    """Path of the venue's stream endpoint on SimExchange (Binance combined streams, Bybit v5
    public categories, Coinbase at the root)."""
    if venue.startswith("binance"):
        return "/stream"
    if venue.startswith("bybit"):
        return "/v5/public/" + {"bybit": "linear", "bybit-spot": "spot",
                                "bybit-inverse": "inverse"}[venue]
    return ""
