"""What an engine run reports about itself: frozen, typed records.

`Engine.status()` returns a `RunStatus` (everything, any time, from any thread); the engine
publishes a lighter `Snapshot` at most 10 times a second for the UI (`Engine.latest`,
`Engine.subscribe`). The panel, the plots, the CLI tables, the journal's `summary.json` and the
report all read these types; `to_dict()` gives the JSON form written to `summary.json` (the
same keys as the field names, nested records as dicts).

Units: times in ns unless the name says `_s` (seconds) or `_us` (µs); prices and PnL in quote
units; quantities in base units.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from workbench.latency.spikes import SpikeSummary
from workbench.latency.stages import STAGES, Stage


@dataclass(frozen=True, slots=True)
class StageLatency:
    """One stage's folded latency: P50/P99/P99.9/max in ns and the number of values."""

    p50_ns: int = 0
    p99_ns: int = 0
    p999_ns: int = 0
    max_ns: int = 0
    count: int = 0


def stage_latencies(summary: dict[str, dict[str, int]]) -> dict[Stage, StageLatency]:
    """`LatencyRecorder.summary()` (stage name -> figures) as StageLatency per Stage, every
    stage present (empty ones with count 0)."""
    return {stage: StageLatency(**summary[stage.value]) if stage.value in summary
            else StageLatency() for stage in STAGES}


@dataclass(frozen=True, slots=True)
class PositionStatus:
    """One symbol's position: signed qty, average entry price, PnL parts, the mark (last mid;
    None before any)."""

    symbol: str
    symbol_id: int
    qty: float
    avg_price: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    net_pnl: float
    mark: float | None


@dataclass(frozen=True, slots=True)
class PnL:
    """Totals over every symbol (quote units): net = realized + unrealized - fees."""

    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    fees: float = 0.0
    net_pnl: float = 0.0


@dataclass(frozen=True, slots=True)
class Measured:
    """The measured part of a run (after `latency_warmup_s`): wall and process CPU seconds."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


@dataclass(frozen=True, slots=True)
class JobStats:
    """One housekeeping job (a spike cause): runs, mean and max duration in µs."""

    runs: int
    mean_us: float
    max_us: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the engine publishes to the UI at most 10 times a second.

    state: new | starting | running | stopped | failed. dispatch: the mode now. events_per_s:
    the rate over the last >= 0.5 s. latency: per-stage figures at publish time.
    """

    run_id: str
    state: str
    dispatch: str
    elapsed_s: float
    events: int
    batches: int
    events_per_s: float
    queue_depth: int
    orders: int
    fills: int
    positions: tuple[PositionStatus, ...]
    pnl: PnL
    halted: bool
    spikes: int
    dispatch_gaps: int
    latency: dict[Stage, StageLatency]

    @property
    def position_qty(self) -> float:
        """Sum of the signed position quantities over every symbol."""
        return position_qty(self.positions)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """Everything about a run now (see the module docstring for units).

    error: why the run failed (None when it did not). measured: see `Measured`. submitted /
    handled: batches through the Dispatcher; dispatch_gaps / dispatch_dups: out-of-order
    dispatch sequence numbers (0 in a correct run). risk_rejects: reason -> count.
    cancels_rejected: cancels the paper broker rejected on arrival (the order had filled or
    ended while the cancel travelled its latency; `engine.broker`).
    book_sync: `SyncStats` counts; feed: the source's counters (`Source.stats()`);
    spike_causes: cause -> spikes that saw it (`unexplained`: spikes that saw none);
    spike_summary: the whole run's spike attribution (`SpikeSummary`: by dominant stage and
    primary cause, histograms, timeline, the worst spikes); housekeeping: job -> JobStats;
    warm_runs: shadow messages run by the path warmer; run_dir: where the journal writes
    (None: none).
    """

    run_id: str
    state: str
    error: str | None
    source: str
    dispatch: str
    dispatch_switches: int
    elapsed_s: float
    events: int
    batches: int
    events_per_s: float
    measured: Measured
    submitted: int
    handled: int
    queue_depth: int
    max_queue_depth: int
    dispatch_gaps: int
    dispatch_dups: int
    orders: int
    orders_rejected: int
    cancels_rejected: int
    risk_rejects: dict[str, int]
    fills: int
    positions: tuple[PositionStatus, ...]
    pnl: PnL
    halted: bool
    halt_reason: str
    invalid_books: int
    book_rebuilds: int
    book_sync: dict[str, int]
    strategy_errors: int
    spikes: int
    spike_causes: dict[str, int]
    spike_summary: SpikeSummary
    housekeeping: dict[str, JobStats]
    feed: dict[str, Any]
    warm_runs: int
    run_dir: str | None
    latency: dict[Stage, StageLatency]

    @property
    def position_qty(self) -> float:
        """Sum of the signed position quantities over every symbol."""
        return position_qty(self.positions)

    @property
    def finished(self) -> bool:
        """True once the run has ended (stopped or failed)."""
        return self.state in ("stopped", "failed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: field names as keys, nested records as dicts, stages by name."""
        return to_dict(self)


def position_qty(positions: tuple[PositionStatus, ...]) -> float:
    """Sum of the signed quantities of `positions` (base units)."""
    return math.fsum(p.qty for p in positions)


def to_dict(record: RunStatus | Snapshot) -> dict[str, Any]:
    """A RunStatus or Snapshot as plain JSON-ready data (stage keys as their names; the spike
    summary as `SpikeSummary.to_dict`)."""
    out = dataclasses.asdict(record)
    out["latency"] = {str(k): v for k, v in out["latency"].items()}
    if isinstance(record, RunStatus):
        out["spike_summary"] = record.spike_summary.to_dict()
    return out
