"""The latency stages of one market-data message, named once (see shared/DESIGN.md).

Every hop stamps `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux).
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A measured hop, from one stamp to the next."""

    WIRE = "wire"  # exchange event time -> local receive (needs a fitted clock offset)
    PARSE = "parse"  # receive -> normalized events
    QUEUE = "queue"  # normalized -> engine picks it up (what dispatch mode changes)
    BOOK = "book"  # picked up -> book updated
    STRATEGY = "strategy"  # book updated -> decision
    ORDER = "order"  # decision -> paper broker ack
    TICK_TO_TRADE = "tick_to_trade"  # receive -> ack (the headline figure)


STAGES: tuple[Stage, ...] = tuple(Stage)
LOCAL_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s is not Stage.WIRE)
SPIKE_STAGES: tuple[Stage, ...] = (Stage.PARSE, Stage.QUEUE, Stage.BOOK, Stage.STRATEGY,
                                   Stage.ORDER)
"""The stages that add up to a batch's tick-to-trade: one of them is a spike's dominant stage."""

STAGE_NOTES: dict[str, str] = {
    "wire": "exchange time to receive",
    "parse": "receive to normalized",
    "queue": "normalized to picked up by the engine",
    "book": "picked up to book updated",
    "strategy": "book to decision",
    "order": "decision to broker ack",
    "tick_to_trade": "receive to ack",
    "unmeasured": "no stage breakdown given",
}
"""One line per stage: what its time is (tables and legends)."""

WIRE_EMPTY_REASON = ("no exchange clock offset fitted: wire latency is measured for ws: sources "
                     "only (sim, replay and ring runs have no independent exchange clock)")
"""Why the `wire` row of a latency table has no values (shown beside it)."""


class SpikeCause(StrEnum):
    """What ran while a spike's message was in flight (`SpikeLog.note_cause` names): the
    engine's housekeeping jobs, a gc collection, a backed-up dispatch queue, a burst of
    messages processed ahead of it, the wait for the next poll, or a machine hiccup (the
    native probe thread, `feed.hiccup_probe.HiccupProbe`, woke late: no core was free for it)."""

    GC = "gc"  # a gc collection (detail: generation, objects collected)
    JOURNAL_FLUSH = "journal_flush"  # the journal handed its buffered rows to its writer
    JOURNAL_WRITE = "journal_write"  # the journal's writer thread wrote a part file
    LATENCY_FOLD = "latency_fold"  # latency rows folded into the per-stage histograms
    LATENCY_SUMMARY = "latency_summary"  # percentiles computed for a UI snapshot
    SNAPSHOT_PUBLISH = "snapshot_publish"  # a UI snapshot built and published
    DISPLAY_REFRESH = "display_refresh"  # snapshot subscribers (the notebook's UI pump) ran
    BOOK_REBUILD = "book_rebuild"  # a book checked, resynced or rebuilt from a snapshot
    QUEUE_DEPTH = "queue_depth"  # the dispatch queue was backed up when the batch was picked
    BURST = "burst"  # it arrived while earlier messages were processed (detail: position)
    POLL_WAIT = "poll_wait"  # polling dispatch: it waited in the queue for the next poll
    MACHINE_HICCUP = "machine_hiccup"  # the hiccup probe's thread got no core (detail: how long)


SPIKE_CAUSES: tuple[SpikeCause, ...] = tuple(SpikeCause)
HOUSEKEEPING_CAUSES: frozenset[SpikeCause] = frozenset(SPIKE_CAUSES) - {
    SpikeCause.GC, SpikeCause.QUEUE_DEPTH, SpikeCause.BURST, SpikeCause.POLL_WAIT,
    SpikeCause.MACHINE_HICCUP}
"""The causes that are the engine's own housekeeping jobs (not gc, not the queue's: backed up,
a burst, the poll wait; not the machine's hiccups)."""
UI_CAUSES: frozenset[SpikeCause] = frozenset({SpikeCause.DISPLAY_REFRESH})
"""The causes that are a UI's own work (the notebook perturbing the measurement)."""
