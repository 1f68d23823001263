"""Housekeeping: the engine thread's jobs between batches, and the UI snapshots they publish.

Jobs (periods in `HousekeepingConfig`, ms): `journal_flush` (the journal hands its rows to its
writer thread), `latency_fold` (latency rows into the per-stage histograms: the rows are
detached under the dispatch lock and folded outside it), `publish` (a UI `Snapshot`: counts
under the lock, percentiles outside it, then the subscribers) and `book_check` (a valid but
crossed book is resynced). Each job is timed, accounted in `jobs` and noted in the SpikeLog
as a `SpikeCause`, so a spike that overlapped it names it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from workbench.engine.config import HOUSEKEEPING_JOBS
from workbench.engine.status import JobStats, Snapshot
from workbench.latency.stages import SpikeCause

if TYPE_CHECKING:
    from workbench.engine.engine import Engine

log = logging.getLogger("workbench.engine")


class LatestSnapshot:
    """The newest UI Snapshot, set by the engine thread, read by any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Snapshot | None = None
        self.version = 0

    def set(self, value: Snapshot) -> None:
        with self._lock:
            self._value = value
            self.version += 1

    def get(self) -> Snapshot | None:
        """The newest snapshot, or None before the first publish."""
        with self._lock:
            return self._value


class Housekeeper:
    """The jobs of one engine (see the module docstring). `latest` holds the newest Snapshot;
    `subscribe(fn)` callbacks run on the engine thread at each publish (<= 10 a second)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.latest = LatestSnapshot()
        self.book_rebuilds = 0
        self._jobs: dict[str, list[int]] = {}  # cause -> [runs, total_ns, max_ns]
        self._subscribers: list[Callable[[Snapshot], None]] = []
        hk = engine.config.housekeeping
        self._periods = {job: int(hk.period_ms(job) * 1_000_000) for job in HOUSEKEEPING_JOBS}
        self._due: dict[str, int] = {}

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Snapshot], None]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def next_due_ns(self, now_ns: int) -> int:
        """perf_counter_ns when the next job is due (the first call starts every period)."""
        if not self._due:
            self._due = {job: now_ns + p for job, p in self._periods.items()}
        return min(self._due.values())

    def run_due(self, now_ns: int) -> None:
        """Run every job due at `now_ns` and schedule its next run."""
        for job, at in self._due.items():
            if now_ns >= at:
                getattr(self, f"_{job}")()
                self._due[job] = now_ns + self._periods[job]

    def note(self, cause: str, start_ns: int, end_ns: int) -> None:
        """Account one job run (any thread) and note it as a spike cause."""
        duration = end_ns - start_ns
        stats = self._jobs.setdefault(cause, [0, 0, 0])
        stats[0] += 1
        stats[1] += duration
        stats[2] = max(stats[2], duration)
        self.engine.spikes.note_cause(cause, duration, end_ns=end_ns)

    def jobs(self) -> dict[str, JobStats]:
        """cause -> runs, mean and max µs so far."""
        return {name: JobStats(n, total / n / 1e3, mx / 1e3)
                for name, (n, total, mx) in list(self._jobs.items())}

    # -- the jobs -----------------------------------------------------------------------
    def _latency_fold(self) -> None:
        e = self.engine
        with e.dispatcher.lock:
            rows = e.latency.take()
        e.latency.fold_rows(rows)  # notes LATENCY_FOLD through the recorder's on_fold

    def _journal_flush(self) -> None:
        e = self.engine
        with e.dispatcher.lock:
            t0 = time.perf_counter_ns()
            if e.journal is not None:
                e.journal.flush()
            self.note(SpikeCause.JOURNAL_FLUSH, t0, time.perf_counter_ns())

    def _book_check(self) -> None:
        e = self.engine
        with e.dispatcher.lock:
            t0 = time.perf_counter_ns()
            for sid, book in e.sync.books.items():
                if book.valid and book.crossed:
                    self.book_rebuilds += 1
                    e.sync.request_resync(sid)
            self.note(SpikeCause.BOOK_REBUILD, t0, time.perf_counter_ns())

    def _publish(self) -> None:
        e = self.engine
        with e.dispatcher.lock:
            t0 = time.perf_counter_ns()
            counts = e.reporter.counts()
            t1 = time.perf_counter_ns()
            self.note(SpikeCause.SNAPSHOT_PUBLISH, t0, t1)
        snapshot = e.reporter.snapshot(counts)  # percentiles outside the lock
        self.latest.set(snapshot)
        t2 = time.perf_counter_ns()
        self.note(SpikeCause.LATENCY_SUMMARY, t1, t2)
        if self._subscribers:
            for callback in list(self._subscribers):
                try:
                    callback(snapshot)
                except Exception:
                    log.exception("snapshot subscriber failed; unsubscribed")
                    self.unsubscribe(callback)
            self.note(SpikeCause.DISPLAY_REFRESH, t2, time.perf_counter_ns())
