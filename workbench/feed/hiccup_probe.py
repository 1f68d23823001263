"""HiccupProbe: machine hiccups measured all along a run, without holding a core.

As jHiccup (Azul Systems, github.com/giltene/jHiccup, README "How it works") does: a native
thread of `workbench._feed` (csrc/wb_hiccup.h, no GIL) sleeps 1 ms at a time and records each
wake-up later than a threshold, when it stamps it. The engine's spike log
(`workbench.latency.spikes.SpikeLog.hiccups`) claims those that ended inside a spike's window
as the cause `machine_hiccup`. It costs about a thousand short wake-ups a second, not a core
(18 ms of CPU a second, about 4 µs a wake-up, on the 2-core CI VM). Late means runnable without
a core: the hypervisor, other processes, or, on a machine with few cores, our own busy
threads. The spinning probe `workbench.latency.hiccups.measure_hiccups` measures the same on
demand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PROBE_INTERVAL_US = 1000.0
"""How long the probe thread sleeps at a time (µs)."""
PROBE_RECENT = 256
"""Late wake-ups a HiccupProbe keeps for `late_between` (the newest ones)."""


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
