"""Machine hiccups: how often, and for how long, a running thread is stopped by something other
than its own code (timer interrupts, the hypervisor, other tenants of the host, a thread that
holds the GIL).

Two probes:
- `measure_hiccups`, on demand, as sysjitter (Solarflare) does: a thread spins reading the
  clock and records every gap between two consecutive reads longer than a threshold. Nothing
  in the loop can take that long, so each gap is time taken from the thread. On a quiet
  bare-metal core the count is near zero; on a shared VM it sets a floor under any latency
  figure, and the caches and branch predictors the thread finds after a gap hold someone
  else's work. It holds a core (and the GIL) while it runs.
- `HiccupProbe`, all along a run, as jHiccup (Azul Systems, github.com/giltene/jHiccup, README
  "How it works") does: a native thread (csrc/wb_hiccup.h, no GIL) sleeps 1 ms at a time and
  records each wake-up later than a threshold, when it stamps it. The engine's spike log
  claims those that ended inside a spike's window as the cause `machine_hiccup`. It costs
  about a thousand short wake-ups a second, not a core (18 ms of CPU a second, about 4 µs a
  wake-up, on the 2-core CI VM). Late means runnable without a core:
  the hypervisor, other processes, or, on a machine with few cores, our own busy threads.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass

PROBE_INTERVAL_US = 1000.0
"""How long the probe thread sleeps at a time (µs)."""
PROBE_RECENT = 256
"""Late wake-ups a HiccupProbe keeps for `late_between` (the newest ones)."""


@dataclass(frozen=True)
class Hiccups:
    """What one probe saw. seconds: wall time spun. count: gaps over threshold_us (µs).
    per_s: count per second. stolen_pct: their total as a share of `seconds` (%). p50_us,
    p99_us, max_us: their lengths (µs; 0 when there were none)."""

    seconds: float
    threshold_us: float
    count: int
    per_s: float
    stolen_pct: float
    p50_us: float
    p99_us: float
    max_us: float


def measure_hiccups(seconds: float = 1.0, threshold_us: float = 5.0) -> Hiccups:
    """Spin `seconds` on the calling thread reading `time.perf_counter_ns()` and summarize the
    gaps between two reads longer than `threshold_us` µs (module docstring). The thread holds
    a core and the GIL (but for the switch interval) meanwhile. Raises ValueError unless both
    arguments are > 0."""
    if not (seconds > 0 and threshold_us > 0):
        raise ValueError(f"seconds and threshold_us must be > 0, got {seconds!r}, "
                         f"{threshold_us!r}")
    clock = time.perf_counter_ns
    threshold = int(threshold_us * 1000)
    gaps: list[int] = []
    start = last = clock()
    end = start + int(seconds * 1e9)
    while last < end:
        now = clock()
        if now - last > threshold:
            gaps.append(now - last)
        last = now
    wall = last - start
    if not gaps:
        return Hiccups(wall / 1e9, threshold_us, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    gaps.sort()
    return Hiccups(
        seconds=wall / 1e9, threshold_us=threshold_us, count=len(gaps),
        per_s=len(gaps) / (wall / 1e9), stolen_pct=100.0 * sum(gaps) / wall,
        p50_us=statistics.median(gaps) / 1e3,
        p99_us=gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] / 1e3, max_us=gaps[-1] / 1e3)


@dataclass(frozen=True)
class ProbeStats:
    """The native probe's counters since its thread last started: wakeups (sleeps completed),
    late (wake-ups later than threshold_us), max_late_us and total_late_us (of those),
    interval_us, threshold_us, running."""

    wakeups: int
    late: int
    max_late_us: float
    total_late_us: float
    interval_us: float
    threshold_us: float
    running: bool


class HiccupProbe:
    """The native machine-hiccup probe (module docstring; csrc/wb_hiccup.h).

    start() starts the process's probe thread, or joins it when it already runs with the same
    settings; stop() leaves it (the last user stops the thread). late_between(start_ns, end_ns)
    -> [(end_ns, late_ns)]: the wake-ups later than `threshold_us` µs that the thread stamped
    inside [start_ns, end_ns] (time.perf_counter_ns clock), oldest first, among the newest
    PROBE_RECENT. Raises ValueError for a threshold or interval <= 0, RuntimeError when the
    thread runs with other settings or cannot be created.
    """

    def __init__(self, threshold_us: float = 100.0, interval_us: float = PROBE_INTERVAL_US
                 ) -> None:
        if not (threshold_us > 0 and interval_us > 0):
            raise ValueError(f"threshold_us and interval_us must be > 0, got {threshold_us!r}, "
                             f"{interval_us!r}")
        self.threshold_us = float(threshold_us)
        self.interval_us = float(interval_us)
        self._started = False
        self._next = 0
        self._recent: deque[tuple[int, int]] = deque(maxlen=PROBE_RECENT)
        self.lost = 0  # records the thread overwrote before this probe read them

    def start(self) -> None:
        from workbench._feed import ffi, lib

        if self._started:
            return
        code = lib.wb_hiccup_start(int(self.interval_us * 1000), int(self.threshold_us * 1000))
        if code == lib.WB_EEXIST:
            running = self.stats()
            raise RuntimeError(
                f"the hiccup probe runs with interval {running.interval_us:g} µs and threshold "
                f"{running.threshold_us:g} µs; asked for {self.interval_us:g} and "
                f"{self.threshold_us:g}")
        if code != lib.WB_OK:
            raise RuntimeError(f"the hiccup probe thread did not start (code {code})")
        self._started = True
        stats = ffi.new("wb_hiccup_stats *")
        lib.wb_hiccup_stats_get(stats)
        self._next = int(stats.recorded)  # what came before this user is not its business
        self._recent.clear()

    def stop(self) -> None:
        from workbench._feed import lib

        if self._started:
            lib.wb_hiccup_stop()
            self._started = False

    @property
    def running(self) -> bool:
        """Whether this probe has started and not stopped."""
        return self._started

    def late_between(self, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """(end_ns, late_ns) of the late wake-ups stamped in [start_ns, end_ns] (class
        docstring), then, when end_ns is now and the thread is late in a sleep it has not woken
        from yet (its core still taken), (end_ns, lateness so far); [] when the probe is not
        running."""
        if not self._started:
            return []
        from workbench._feed import lib

        self._poll()
        seen = [(end, late) for end, late in self._recent if start_ns <= end <= end_ns]
        pending = lib.wb_hiccup_pending(end_ns)
        if pending:
            seen.append((end_ns, int(pending)))
        return seen

    def _poll(self) -> None:
        from workbench._feed import ffi, lib

        max_n = PROBE_RECENT
        ends = ffi.new("int64_t[]", max_n)
        lates = ffi.new("int64_t[]", max_n)
        nxt = ffi.new("uint64_t *")
        lost = ffi.new("uint64_t *")
        while True:
            n = lib.wb_hiccup_read(self._next, ends, lates, max_n, nxt, lost)
            self.lost += int(lost[0])
            full = int(nxt[0]) - self._next >= max_n  # a full batch: more may wait
            self._next = int(nxt[0])
            self._recent.extend(zip(ends[0:n], lates[0:n], strict=True))
            if not full:
                return

    def stats(self) -> ProbeStats:
        """The probe thread's counters (ProbeStats)."""
        from workbench._feed import ffi, lib

        s = ffi.new("wb_hiccup_stats *")
        lib.wb_hiccup_stats_get(s)
        return ProbeStats(int(s.wakeups), int(s.late), s.max_late_ns / 1e3,
                          s.total_late_ns / 1e3, s.interval_ns / 1e3, s.threshold_ns / 1e3,
                          bool(s.running))
