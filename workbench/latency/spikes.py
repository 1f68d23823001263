"""SpikeLog: every batch whose tick-to-trade exceeds a threshold, with the causes seen meanwhile.

A *cause* is something that ran and took time: a gc collection (generation and duration, from
`gc.callbacks`), a housekeeping job (journal flush, snapshot publish, book rebuild, display
refresh, latency fold), a backed-up queue. Causes are recorded as they happen, by whoever runs
them (`note_cause`), with their end time; a spike claims every cause whose run overlapped its
own window, from `begin_iteration` (normally the batch's receive stamp) to `end_iteration`.
Nothing is guessed afterwards.

Usage (the engine, and the bench "spikes" topic):

    log = SpikeLog(threshold_us=1000)
    log.install_gc_hook()                      # gc collections become causes
    log.begin_iteration(start_ns=recv_ns, queue_depth=len(queue))
    ... work ...
    log.note_cause("journal_flush", duration_ns)   # from any thread
    spike = log.end_iteration(tick_to_trade_ns, {"book": 1200, ...}, seq=...)
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from workbench.latency.stages import SpikeCause

MAX_CAUSES = 16  # causes kept per spike (the most recent ones in its window)


class Cause(NamedTuple):
    """One thing that ran: `name`, `duration_ns`, `end_ns` (perf_counter_ns), `detail`."""

    name: str
    duration_ns: int
    end_ns: int
    detail: str = ""


class Spike(NamedTuple):
    """A batch over the threshold: when, how long, per stage (ns), and the causes observed."""

    seq: int
    end_ns: int
    tick_to_trade_ns: int
    stages: dict[str, int]
    queue_depth: int
    causes: tuple[Cause, ...] = ()

    def cause_names(self) -> list[str]:
        """Names of the causes, in the order they were noted (`gc` carries its generation in
        `detail`)."""
        return [c.name for c in self.causes]


class SpikeLog:
    """Spikes (tick-to-trade over `threshold_us` µs) and the causes overlapping each one.

    Thread-safety: `note_cause` may be called from any thread (gc callbacks run in whichever
    thread triggered the collection); `begin_iteration`/`end_iteration` come from the one thread
    processing a batch at a time. `spikes()` returns a copy.
    """

    def __init__(self, threshold_us: float = 1000.0, max_spikes: int = 10_000,
                 queue_depth_cause: int = 1000) -> None:
        if threshold_us <= 0:
            raise ValueError(f"threshold_us must be > 0, got {threshold_us}")
        self.threshold_ns = int(threshold_us * 1000)
        self.queue_depth_cause = queue_depth_cause
        self._causes: deque[Cause] = deque(maxlen=4096)
        self._spikes: deque[Spike] = deque(maxlen=max_spikes)
        self._lock = threading.Lock()
        self._start_ns = 0
        self._queue_depth = 0
        self._gc_start: dict[int, int] = {}
        self._gc_hooked = False
        self.spike_count = 0
        self.cause_counts: dict[str, int] = {}

    # -- causes -------------------------------------------------------------------------
    def note_cause(self, name: str, duration_ns: int, detail: str = "",
                   end_ns: int | None = None) -> None:
        """Record that `name` ran for `duration_ns` ns, ending now (or at `end_ns`)."""
        end = time.perf_counter_ns() if end_ns is None else end_ns
        self._causes.append(Cause(name, int(duration_ns), end, detail))

    def install_gc_hook(self) -> None:
        """Record every gc collection (generation, duration) as a cause via `gc.callbacks`."""
        if not self._gc_hooked:
            gc.callbacks.append(self._on_gc)
            self._gc_hooked = True

    def remove_gc_hook(self) -> None:
        """Undo `install_gc_hook`."""
        if self._gc_hooked:
            gc.callbacks.remove(self._on_gc)
            self._gc_hooked = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        ident = threading.get_ident()
        if phase == "start":
            self._gc_start[ident] = now
            return
        start = self._gc_start.pop(ident, now)
        detail = f"gen{info.get('generation')} collected={info.get('collected', 0)}"
        self._causes.append(Cause(SpikeCause.GC, now - start, now, detail))

    # -- iterations ---------------------------------------------------------------------
    def begin_iteration(self, start_ns: int | None = None, queue_depth: int = 0) -> None:
        """Open the window of one batch: from `start_ns` (default now; the engine passes the
        receive stamp) with the dispatch queue depth seen when it was picked up."""
        self._start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        self._queue_depth = queue_depth

    def end_iteration(self, tick_to_trade_ns: int, stages: dict[str, int] | None = None,
                      seq: int = 0) -> Spike | None:
        """Close the window. Over the threshold: log and return the Spike with every cause
        whose run ended inside the window (plus `queue_depth` when the queue was backed up);
        else None. Causes that ended before the window are discarded. `cause_counts` counts
        spikes per cause name (a spike with three gc passes counts once under `gc`)."""
        start = self._start_ns
        causes = self._causes
        while causes and causes[0].end_ns < start:
            causes.popleft()
        if tick_to_trade_ns <= self.threshold_ns:
            return None
        now = time.perf_counter_ns()
        seen: list[Cause] = []
        # newest first, at most MAX_CAUSES; by index because a gc callback may append meanwhile
        i = len(causes) - 1
        lowest = max(-1, i - MAX_CAUSES)
        while i > lowest:
            cause = causes[i]
            if cause.end_ns < start:
                break
            seen.append(cause)
            i -= 1
        seen.reverse()
        if self._queue_depth >= self.queue_depth_cause:
            seen.append(Cause(SpikeCause.QUEUE_DEPTH, 0, now, str(self._queue_depth)))
        spike = Spike(seq, now, int(tick_to_trade_ns), stages or {}, self._queue_depth,
                      tuple(seen))
        with self._lock:
            self._spikes.append(spike)
            self.spike_count += 1
            for name in {c.name for c in seen}:
                self.cause_counts[name] = self.cause_counts.get(name, 0) + 1
        return spike

    def spikes(self) -> list[Spike]:
        """A copy of the logged spikes, oldest first (the last `max_spikes`)."""
        with self._lock:
            return list(self._spikes)
