"""Machine hiccups: how often, and for how long, a running thread is stopped by something other
than its own code (timer interrupts, the hypervisor, other tenants of the host, a thread that
holds the GIL).

Measured here on demand (`measure_hiccups`), as sysjitter (Solarflare) does: a thread spins
reading the clock and records every gap between two consecutive reads longer than a threshold.
Nothing in the loop can take that long, so each gap is time taken from the thread. On a quiet
bare-metal core the count is near zero; on a shared VM it sets a floor under any latency
figure, and the caches and branch predictors the thread finds after a gap hold someone else's
work. It holds a core (and the GIL) while it runs. All along a run, the native probe
`workbench.feed.hiccup_probe.HiccupProbe` measures them without a core.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


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
