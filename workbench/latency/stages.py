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


class SpikeCause(StrEnum):
    """What ran while a spike's message was in flight (`SpikeLog.note_cause` names): the
    engine's housekeeping jobs, a gc collection, or a backed-up dispatch queue."""

    GC = "gc"  # a gc collection (detail: generation, objects collected)
    JOURNAL_FLUSH = "journal_flush"  # the journal handed its buffered rows to its writer
    JOURNAL_WRITE = "journal_write"  # the journal's writer thread wrote a part file
    LATENCY_FOLD = "latency_fold"  # latency rows folded into the per-stage histograms
    LATENCY_SUMMARY = "latency_summary"  # percentiles computed for a UI snapshot
    SNAPSHOT_PUBLISH = "snapshot_publish"  # a UI snapshot built and published
    DISPLAY_REFRESH = "display_refresh"  # snapshot subscribers (the notebook's UI pump) ran
    BOOK_REBUILD = "book_rebuild"  # a book checked, resynced or rebuilt from a snapshot
    QUEUE_DEPTH = "queue_depth"  # the dispatch queue was backed up when the batch was picked


SPIKE_CAUSES: tuple[SpikeCause, ...] = tuple(SpikeCause)
HOUSEKEEPING_CAUSES: frozenset[SpikeCause] = frozenset(SPIKE_CAUSES) - {SpikeCause.GC,
                                                                        SpikeCause.QUEUE_DEPTH}
"""The causes that are the engine's own housekeeping jobs (not gc, not a backed-up queue)."""
