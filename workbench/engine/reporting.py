"""Reporter: builds an engine run's RunStatus and UI Snapshots from its parts.

The engine thread calls `counts()` under the dispatch lock (positions marked at their book's
mid, counters read between batches) and `snapshot(counts)` outside it (the percentiles take
the latency recorder's lock, not the dispatcher's, so the feed goes on meanwhile). `status()`
may be called from any thread at any time.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from workbench.engine.positions import Position
from workbench.engine.status import (
    Measured,
    PnL,
    PositionStatus,
    RunStatus,
    Snapshot,
    stage_latencies,
)
from workbench.feed.symbols import SYMBOLS

if TYPE_CHECKING:
    from workbench.engine.engine import Engine

RATE_WINDOW_NS = 500_000_000  # events/s of a Snapshot: over at least this much time


class Reporter:
    """The status side of one Engine (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._last_rate = (0, 0)  # (perf_counter_ns, events) at the start of the rate window
        self._rate = 0.0

    def started(self, t_start_ns: int) -> None:
        """The run started at `t_start_ns` (perf_counter_ns): the rate window opens."""
        self._last_rate = (t_start_ns, 0)

    def _positions(self) -> tuple[PositionStatus, ...]:
        """Every position, marked at its book's mid (for the unrealized PnL)."""
        e = self.engine
        for sid, book in e.sync.books.items():
            mid = book.mid
            if mid == mid:
                e.positions.mark(sid, mid)
        return tuple(_position(p) for p in e.positions.all())

    def counts(self) -> dict[str, Any]:
        """A Snapshot's fields but the latency (the engine thread, under the dispatch lock)."""
        e = self.engine
        now = time.perf_counter_ns()
        t0, e0 = self._last_rate
        if now - t0 >= RATE_WINDOW_NS:
            self._rate = (e.events - e0) * 1e9 / (now - t0)
            self._last_rate = (now, e.events)
        return {"run_id": e.run_id, "state": e.state, "dispatch": e.dispatcher.mode,
                "elapsed_s": (now - e._t_start) / 1e9, "events": e.events,
                "batches": e.batches, "events_per_s": self._rate,
                "queue_depth": e.dispatcher.depth, "orders": e.executor.orders_sent,
                "fills": e.executor.fill_count, "positions": self._positions(),
                "pnl": PnL(**e.positions.totals()), "halted": e.risk.halted,
                "spikes": e.spikes.spike_count, "dispatch_gaps": e.dispatch_gaps}

    def snapshot(self, counts: dict[str, Any]) -> Snapshot:
        """The Snapshot of `counts` with the per-stage latency now."""
        return Snapshot(**counts, latency=stage_latencies(self.engine.latency.snapshot()))

    def status(self) -> RunStatus:
        """Everything about the run now (thread-safe)."""
        e = self.engine
        positions = self._positions() if e._closed else tuple(
            _position(p) for p in e.positions.all())
        end = e._t_end or time.perf_counter_ns()
        elapsed = (end - e._t_start) / 1e9 if e._t_start else 0.0
        d = e.dispatcher
        source = e.source
        return RunStatus(
            run_id=e.run_id, state=e.state, error=e.error, source=e.config.source.source,
            dispatch=d.mode, dispatch_switches=e.dispatch_switches, elapsed_s=elapsed,
            events=e.events, batches=e.batches,
            events_per_s=e.events / elapsed if elapsed > 0 else 0.0,
            measured=self._measured(), submitted=d.submitted, handled=d.handled,
            queue_depth=d.depth, max_queue_depth=d.max_depth, dispatch_gaps=e.dispatch_gaps,
            dispatch_dups=e.dispatch_dups, orders=e.executor.orders_sent,
            orders_rejected=e.executor.orders_rejected,
            cancels_rejected=e.broker.cancels_rejected, risk_rejects=dict(e.risk.rejects),
            fills=e.executor.fill_count, positions=positions,
            pnl=PnL(**e.positions.totals()), halted=e.risk.halted,
            halt_reason=e.risk.halt_reason, invalid_books=e.invalid_books,
            book_rebuilds=e.housekeeper.book_rebuilds, book_sync=dict(vars(e.sync.stats)),
            strategy_errors=e.strategy_errors, spikes=e.spikes.spike_count,
            spike_causes=e.spikes.cause_counts, spike_summary=e.spikes.summary(),
            housekeeping=e.housekeeper.jobs(),
            feed=source.stats() if source is not None else {},
            warm_runs=e._warmer.runs if e._warmer is not None else 0,
            run_dir=str(e.run_dir) if e.run_dir else None,
            latency=stage_latencies(e.latency.summary()))

    def _measured(self) -> Measured:
        """The measured part of the run (after `latency_warmup_s`): wall seconds from its first
        batch to the end of the run (or now) and the process CPU seconds meanwhile."""
        e = self.engine
        if not e._measured_since:
            return Measured()
        since_ns, cpu0 = e._measured_since
        end = e._t_end or time.perf_counter_ns()
        cpu = e._measured_cpu_s if e._t_end else time.process_time() - cpu0
        return Measured((end - since_ns) / 1e9, cpu)


def _position(p: Position) -> PositionStatus:
    # ids from another process (a ring's producer) are not in this process's registry
    known = 0 < p.symbol_id <= len(SYMBOLS)
    return PositionStatus(
        symbol=SYMBOLS.symbol(p.symbol_id) if known else f"symbol {p.symbol_id}",
        symbol_id=p.symbol_id, qty=p.qty,
        avg_price=p.avg_price, realized_pnl=p.realized_pnl, unrealized_pnl=p.unrealized_pnl,
        fees=p.fees, net_pnl=p.net_pnl, mark=None if math.isnan(p.mark) else p.mark)
