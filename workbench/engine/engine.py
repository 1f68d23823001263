"""Engine: the background paper-trading engine (feed thread + engine thread + journal writer).

    engine = Engine(EngineConfig(source="replay:/path/rec.gz", speed=0, dispatch="polling"))
    engine.start()                 # returns at once
    engine.set_dispatch("callback")  # while running; loses and duplicates no batch
    engine.status()                # RunStatus: counts, positions, PnL, latency
    engine.stop(timeout_s=10)      # returns within the timeout, every record flushed

Threads: the *feed thread* runs the run's Source (`engine.sources`: SimExchange over a
websocket, a recording, a ShmRing or a live websocket), which submits one EVENT_DTYPE batch per
message to the Dispatcher; the *engine thread* owns an asyncio event loop (uvloop when
installed) that drains the queue in the polling modes and runs the housekeeping jobs; a journal
thread appends orders and fills to the run's write-ahead journal (`engine.journal`: Parquet at
the end, `workbench runs repair` after a crash). Every batch goes through `on_events`: book
apply -> strategy -> Executor -> PaperBroker, stamped at each stage (see
`workbench.latency.stages`):

  parse = publish - receive, queue = pick-up - publish, book, strategy, order (only when the
  strategy sent orders: decision -> broker ack), tick_to_trade = receive -> ack (the broker ack
  when orders went out, else the no-order decision). wire (exchange time -> receive) is
  recorded for `ws:` sources only, with the clock offset taken at start (reported apart).

Housekeeping (journal flush, latency fold, snapshot publish, display refresh, book check)
runs in the engine thread between batches, under the dispatch lock, each timed and noted as a
spike cause (`SpikeCause`). UI snapshots (`Snapshot`) are published at most every `publish_ms`
(>= 100 ms): `latest` holds the newest one (thread-safe); `subscribe(fn)` callbacks are
invoked from the engine thread with each snapshot (the Jupyter layer marshals them with
`loop.call_soon_threadsafe`).

Failure: an exception out of the feed thread (the source: a normalizer, the websocket sink,
the trading path in callback dispatch, a source found unreachable) or the engine thread ends
the run with state `failed` and the exception in `error` (RunStatus, summary.json); the
websocket sources reconnect on connection errors themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import os
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from workbench import tuning
from workbench.book.sync import BookSync
from workbench.engine.broker import PaperBroker
from workbench.engine.config import EngineConfig
from workbench.engine.dispatch import Dispatcher
from workbench.engine.execution import Executor
from workbench.engine.housekeeping import Housekeeper
from workbench.engine.journal import Journal
from workbench.engine.positions import Positions
from workbench.engine.reporting import Reporter
from workbench.engine.risk import RiskLimits
from workbench.engine.sources import Source, make_source, resolve_venue, sequencing_of
from workbench.engine.status import RunStatus, Snapshot
from workbench.engine.strategy import EmaCross, Strategy
from workbench.engine.warm import PathWarmer, shadow_of
from workbench.errors import EngineError
from workbench.events import MessageInfo
from workbench.feed.hiccup_probe import HiccupProbe
from workbench.latency.recorder import LatencyRecorder
from workbench.latency.spikes import Cause, SpikeLog
from workbench.latency.stages import SpikeCause, Stage

log = logging.getLogger("workbench.engine")

MAX_WAIT_S = 0.05  # the engine thread re-checks stop/duration at least this often
FEED_JOIN_S = 30.0  # at most this long for the feed thread to end when a run finishes
SECOND_NS = 1_000_000_000
_now = time.perf_counter_ns

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    """Interpreter exit: stop every running engine so its journal is flushed."""
    for engine in list(_LIVE):
        with contextlib.suppress(Exception):
            engine.stop(timeout_s=10.0)


class Engine:
    """A paper-trading engine run (see the module docstring). Not restartable: one run each.

    config: EngineConfig (default: the simulator, callback dispatch). strategy: any object
    with `on_events(book, batch) -> list[OrderRequest]` (default EmaCross from the config).
    Raises ConfigError for a bad config (or, with `feed_warm_us`, a strategy that cannot be
    deep-copied); start() raises EngineError when called twice and ConfigError when the
    source cannot open.
    """

    def __init__(self, config: EngineConfig | None = None, strategy: Strategy | None = None
                 ) -> None:
        self.config = cfg = config if config is not None else EngineConfig()
        s, hk = cfg.strategy, cfg.housekeeping
        self.run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.strategy = strategy if strategy is not None else EmaCross(
            s.ema_fast, s.ema_slow, s.target_qty, s.order_type)
        self.positions = Positions()
        self.risk = RiskLimits(cfg.risk.max_position, cfg.risk.max_orders_per_s,
                               cfg.risk.invalid_book_streak)
        b = cfg.broker
        self.broker = PaperBroker(b.maker_fee_bps, b.taker_fee_bps,
                                  int(b.broker_latency_us * 1000), b.queue_model, b.lot_size)
        self.run_dir = Path(cfg.out_dir) / self.run_id if cfg.out_dir else None
        self.journal: Journal | None = None
        self.executor = Executor(self.broker, self.risk, self.positions, b.slice_qty)
        if hasattr(self.strategy, "bind_executor"):  # engine.adapter.CompiledAdapter
            self.strategy.bind_executor(self.executor)
        self.housekeeper = Housekeeper(self)
        self.latency = LatencyRecorder(on_fold=self.housekeeper.note)
        self.spikes = SpikeLog(hk.spike_threshold_us)
        if hk.hiccup_threshold_us > 0:
            self.spikes.hiccups = HiccupProbe(hk.hiccup_threshold_us)
        self.dispatcher = Dispatcher(self.on_events, cfg.dispatch, cfg.poll_interval_ms)
        self.latest = self.housekeeper.latest
        self.venue = resolve_venue(cfg.source)
        self.sync = BookSync(sequencing_of(cfg.source), on_resync=self._on_resync)
        self.source: Source | None = None
        self._ever_valid: set[int] = set()
        self._upstream = self._wire = self._native = False
        self._clock_offset_ns = 0
        self._threshold_ns = self.spikes.threshold_ns
        self._warmup_ns = int(s.strategy_warmup_s * SECOND_NS)
        self._latency_warmup_ns = int(hk.latency_warmup_s * SECOND_NS)
        self._trade_from_ns = 0
        self._measure_from_ns = 0
        # (perf_counter_ns, process_time) at the first measured batch
        self._measured_since: tuple[int, float] | None = None
        self._measured_cpu_s = 0.0
        self._market_ns = 0  # venue time of the last batch (ns)
        # bursts: a batch received before the previous one was acked waited behind it
        self._prev_ack_ns = self._burst_start_ns = self._burst_pos = 0
        # the socket read a batch came in (every source stamps the frames of one read with
        # its time) and the batch's position in it
        self._read_ns = self._read_pos = 0
        self._state = "new"
        self._stop_requested = threading.Event()
        self._source_done = threading.Event()
        self._finished = threading.Event()
        self._closed = False
        self._feed_thread: threading.Thread | None = None
        self._engine_thread: threading.Thread | None = None
        self._tuning: dict[str, object] = {}
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
        self.dispatch_switches = 0
        self._t_start = 0
        self._t_end = 0
        self.reporter = Reporter(self)
        self._warmer: PathWarmer | None = None
        if cfg.tuning.feed_warm_us and cfg.source.kind in ("sim", "ws"):
            self._warmer = PathWarmer(functools.partial(shadow_of, self), self.sync,
                                      self.venue)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Engine:
        """Open the source and start the threads; returns at once (self)."""
        if self._state != "new":
            raise EngineError(f"start: expected a new engine, this one is {self._state}")
        cfg = self.config
        warmer = self._warmer
        self.source = source = make_source(
            cfg.source, cfg.tuning, warmer, warmer.remember if warmer is not None else None)
        self._upstream, self._wire = source.upstream_stamped, source.measures_wire
        self._native = source.native_stamped
        self._state = "starting"
        try:
            source.open(self.dispatcher.submit, self._stop_requested)
            if self.run_dir is not None:
                self.journal = Journal(self.run_dir, meta={
                    "run_id": self.run_id, "pid": os.getpid(), "started_unix_ns": time.time_ns(),
                    "config": cfg.to_dict()}, on_write=self.housekeeper.note)
                self.executor.journal = self.journal
            self._tuning = tuning.apply_gc_mode(cfg.tuning.gc_mode)
            self._tuning.update(tuning.apply_switch_interval(cfg.tuning.gil_switch_interval_us))
        except Exception:
            self._state = "failed"
            source.close(self._time_left(5.0))
            if self.journal is not None:  # nothing ran: no run files
                self.journal.close()
                self.journal.discard()
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()  # only when nothing else is in it
            raise
        self.spikes.install_gc_hook()
        if self.spikes.hiccups is not None:
            self.spikes.hiccups.start()
        self._clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._t_start = time.perf_counter_ns()
        self.spikes.origin_ns = self._t_start
        self.reporter.started(self._t_start)
        self._state = "running"
        _LIVE.add(self)
        self._engine_thread = threading.Thread(target=self._engine_main, name="wb-engine",
                                               daemon=True)
        self._feed_thread = threading.Thread(target=self._feed_main, name="wb-feed",
                                             daemon=True)
        self._engine_thread.start()
        self._feed_thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> RunStatus:
        """Stop the feed, process what is queued, flush the journal, write summary.json.
        Returns within `timeout_s` the status then, which says what happened: finished
        (`state` stopped or failed, `finished` True: the run files are written and the journal
        fsynced), or still running (`state` running, `finished` False: the engine thread is
        still finishing; it writes the run files with the real outcome when it ends, and
        `wait()` waits for that). Shutdown steps are shortened to fit `timeout_s`. Idempotent."""
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
                log.warning("stop: the engine thread is still finishing after %s s; the run "
                            "files follow when it ends", timeout_s)
        return self.status()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run has finished (end of data, duration, stop or failure); False on
        timeout."""
        return self._finished.wait(timeout_s)

    def set_dispatch(self, mode: str) -> None:
        """Switch dispatch mode while running: `polling`, `blocking` or `callback` (ConfigError
        for another)."""
        if mode != self.dispatcher.mode:
            self.dispatcher.set_mode(mode)
            self.dispatch_switches += 1

    def kill(self, reason: str = "kill switch") -> None:
        """Kill switch: halt trading and flatten every position (at the next batch)."""
        self.risk.kill(reason)
        self._flatten_pending = True

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        """Call `callback(snapshot)` from the engine thread at each publish (<= 10/s)."""
        self.housekeeper.subscribe(callback)

    def unsubscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self.housekeeper.unsubscribe(callback)

    @property
    def market_time_ns(self) -> int:
        """Venue event time of the last batch processed (ns since the epoch; 0 before any)."""
        return self._market_ns

    @property
    def state(self) -> str:
        """new | starting | running | stopped | failed."""
        return self._state

    @property
    def error(self) -> str | None:
        """Why the run failed (None while it has not)."""
        return self._error

    def status(self) -> RunStatus:
        """Everything about the run now (thread-safe to call any time)."""
        return self.reporter.status()

    def summary(self) -> dict[str, object]:
        """What summary.json holds: the status, config and tuning, per-stage latency, and the
        machine-hiccup probe's counters (`hiccup_probe`, None without a probe)."""
        probe = self.spikes.hiccups
        return {**self.status().to_dict(), "config": self.config.to_dict(),
                "tuning": dict(self._tuning),
                "hiccup_probe": None if probe is None else asdict(probe.stats())}

    # -- the trading path ---------------------------------------------------------------
    def on_events(self, batch: np.ndarray, info: MessageInfo, publish_ns: int = 0,
                  dseq: int = 0, queue_depth: int = 0) -> None:
        """Process one batch (one message's events) and its MessageInfo: book (through
        BookSync), strategy, orders, latency.

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
        # events received by another process (ring): our receive is its publish
        recv_ns = first[2] if self._upstream else first[1]
        seq, sid = first[3], first[5]
        if not sid:  # no instrument (venue heartbeats): nothing to book or trade
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
        executor = self.executor
        if executor.broker.active.get(sid):  # requests arriving before this batch's time
            executor.on_arrivals(sid, sync.book(sid), market_ns, seq)
        book = sync.process(batch, info) or sync.book(sid)
        valid = book.valid and book.best_bid < book.best_ask  # NaN compares False
        t_book = _now()
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
        elif sid in self._ever_valid:
            self.invalid_books += 1
            if self.risk.on_book(False):
                log.warning("trading halted: %s", self.risk.halt_reason)
        t_strat = _now()
        if executor.deferred:  # jittered children whose delay has passed
            executor.release(market_ns, seq)
        if executor.broker.active.get(sid):
            executor.on_book(sid, book, market_ns, seq, batch)
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
        if recv_ns < self._prev_ack_ns:
            self._burst_pos += 1
        else:
            self._burst_pos, self._burst_start_ns = 0, t_pick
        if recv_ns == self._read_ns:
            self._read_pos += 1
        else:
            self._read_ns, self._read_pos = recv_ns, 0
        self._prev_ack_ns = t_ack
        self.events += n
        self.batches += 1
        if market_ns < self._measure_from_ns:  # latency warm-up: processed, not measured
            return
        if not self._measured_since:
            self._measured_since = (t_pick, time.process_time())
        if self._native:  # the native handler's ring push, in this process's clock
            publish_ns = first[2]
        elif not publish_ns:
            publish_ns = t_pick
        t2t = t_ack - recv_ns
        wire = recv_ns + self._clock_offset_ns - first[0] if self._wire and first[0] else -1
        if self._upstream:  # the ring is the queue: from the C++ publish to pick-up
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
        stages = {Stage.PARSE: publish_ns - recv_ns, Stage.QUEUE: t_pick - publish_ns,
                  Stage.BOOK: t_book - t_pick, Stage.STRATEGY: t_strat - t_book,
                  Stage.ORDER: order_ns}
        measured = []
        if self._burst_pos:  # the time the earlier messages of its burst were processed
            where = (f"message {self._read_pos + 1} of its socket read" if self._read_pos
                     else "its own socket read")
            measured.append(Cause(SpikeCause.BURST, t_pick - max(recv_ns, self._burst_start_ns),
                                  t_pick, f"position {self._burst_pos + 1} in its burst, "
                                  f"{where}"))
        if self.dispatcher.mode == "polling" and self._burst_start_ns > publish_ns:
            measured.append(Cause(SpikeCause.POLL_WAIT, self._burst_start_ns - publish_ns,
                                  self._burst_start_ns))
        self.spikes.begin_iteration(recv_ns, depth)
        spike = self.spikes.end_iteration(t2t, stages, seq, tuple(measured))
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
        if self.config.strategy.on_strategy_error == "halt":
            self._strategy_halted = True
            self.risk.kill(f"strategy error at seq {seq}")
            self._flatten_pending = True

    def _on_resync(self, symbol_id: int) -> None:
        """BookSync asks for a snapshot: the source fetches it (REST) or resubscribes, and
        the snapshot comes back through the dispatcher like any message."""
        if self.source is not None:
            self.source.request_resync(symbol_id)

    # -- threads ------------------------------------------------------------------------
    def _feed_main(self) -> None:
        """The feed thread: the source until its data ends or the run stops. Any exception
        out of it (a connection error the source did not recover from included) fails the
        run with that exception as the error."""
        try:
            self._tuning.update(tuning.pin_current_thread(self.config.tuning.feed_cpus, "feed"))
            self.source.run()
        except BaseException as exc:
            self._error = self._error or f"feed failed: {type(exc).__name__}: {exc}"
            log.exception("feed thread failed")
        finally:
            self._tuning.update(self.source.tuning)
            self._source_done.set()

    def _engine_main(self) -> None:
        t = self.config.tuning
        loop = None
        try:
            self._tuning.update(tuning.pin_current_thread(t.engine_cpus, "engine"))
            loop, name = tuning.new_event_loop(t.event_loop)
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
        duration_s = self.config.duration_s
        dispatcher, housekeeper = self.dispatcher, self.housekeeper
        end_ns = self._t_start + int(duration_s * SECOND_NS) if duration_s else None
        while not self._stop_requested.is_set():
            now = time.perf_counter_ns()
            wait_s = min(MAX_WAIT_S, max(0.0, (housekeeper.next_due_ns(now) - now) / 1e9))
            await dispatcher.wait(wait_s)
            dispatcher.poll()
            now = time.perf_counter_ns()
            housekeeper.run_due(now)
            if end_ns is not None and now >= end_ns:
                break
            if self._source_done.is_set() and dispatcher.depth == 0:
                break

    def _time_left(self, most_s: float) -> float:
        """Seconds a shutdown step may take: at most `most_s`, and within stop()'s timeout."""
        return max(0.05, min(most_s, self._stop_deadline - time.monotonic()))

    def _finalize(self) -> None:
        """Engine thread, last: stop the feed, drain, flush and write the run files."""
        self._stop_requested.set()
        self.source.close(self._time_left(5.0))
        if self._feed_thread is not None:
            # what it submits after the drain below is lost: give a feed thread that is
            # slow to finish (a flat-out feed on a loaded machine) time, within stop()'s
            self._feed_thread.join(self._time_left(FEED_JOIN_S))
        with self.dispatcher.lock:
            if not self._error and self.dispatcher.depth:
                self.dispatcher.drain_locked()
            self._closed = True
            self._t_end = time.perf_counter_ns()
            if self._measured_since:
                self._measured_cpu_s = time.process_time() - self._measured_since[1]
        self.latency.close()
        self.spikes.remove_gc_hook()
        if self.spikes.hiccups is not None:
            self.spikes.hiccups.stop()
        tuning.restore_gc(self.config.tuning.gc_mode)
        tuning.apply_switch_interval(self._tuning["gil_switch_interval_before_us"])
        journal = self.journal
        if journal is not None:  # fsynced, Parquet written (never cut short by stop's timeout)
            self._error = self._error or journal.end_run()
        if self._state == "running":
            self._state = "failed" if self._error else "stopped"
        if journal is not None:
            error = journal.complete({"latency.json": self.latency.to_json,
                                      "summary.json": self.summary})
            if error:
                self._error, self._state = self._error or error, "failed"
        _LIVE.discard(self)
        self._finished.set()
