"""SpikeLog: every batch whose tick-to-trade exceeds a threshold, attributed, over the whole run.

Attribution starts from the spike's own stage breakdown: its *dominant stage* (the one of
parse, queue, book, strategy, order that took longest; `unmeasured` when the caller gave no
breakdown) is always recorded. Then the *causes*: things that ran and took time while the
spike's message was in flight, recorded as they happen by whoever runs them (`note_cause`, with
their end time): a gc collection (generation and duration, from `gc.callbacks`), a
housekeeping job (journal flush and write, latency fold, snapshot publish, display refresh,
book check), a backed-up queue, a burst of messages processed ahead of it, a machine hiccup
(the native probe thread woke late: `hiccups`, a `feed.hiccup_probe.HiccupProbe`, asked at each
spike). A spike claims every cause whose run ended inside its own window, from
`begin_iteration` (the batch's receive stamp) to `end_iteration`; nothing is guessed
afterwards. Its *primary cause* is the one that ran longest (`unexplained` when none was seen),
so the primary causes add up to the spikes; how many spikes saw each cause at all is counted
apart (`seen`: a spike may see several).

Storage is fixed-size whatever the run length (`SpikeSummary`): exact whole-run counts by
dominant stage, by primary cause and by both; tick-to-trade histograms (log bins, 4 per
octave from 1 µs) by stage and by primary cause; a timeline of counts in at most
`TIMELINE_BUCKETS` buckets over the whole run (the bucket width doubles when the run outgrows
them); and the `detail` worst spikes in full (stages, causes). Totals and the worst spike are
therefore exact for any number of spikes.

Usage (the engine, and the bench "spikes" topic):

    log = SpikeLog(threshold_us=1000)
    log.install_gc_hook()                      # gc collections become causes
    log.hiccups = HiccupProbe(); log.hiccups.start()  # late probe wake-ups become causes
    log.begin_iteration(start_ns=recv_ns, queue_depth=len(queue))
    ... work ...
    log.note_cause("journal_flush", duration_ns)   # from any thread
    spike = log.end_iteration(tick_to_trade_ns, {"book": 1200, ...}, seq=...)
    log.summary()                              # SpikeSummary: the whole run
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from workbench.latency.stages import (
    HOUSEKEEPING_CAUSES,
    SPIKE_CAUSES,
    SPIKE_STAGES,
    SpikeCause,
)

MAX_CAUSES = 16  # causes kept per spike (the most recent ones in its window)
UNMEASURED = "unmeasured"  # the dominant "stage" of a spike given without a breakdown
OTHER = "other"  # a cause name outside SpikeCause
UNEXPLAINED = "unexplained"  # the primary cause of a spike that saw none
STAGE_KEYS: tuple[str, ...] = (*(s.value for s in SPIKE_STAGES), UNMEASURED)
CAUSE_KEYS: tuple[str, ...] = (*(c.value for c in SPIKE_CAUSES), OTHER, UNEXPLAINED)
HIST_LOW_NS = 1_000  # the first histogram bin starts at 1 µs
HIST_PER_OCTAVE = 4
HIST_BINS = 26 * HIST_PER_OCTAVE  # to 2**26 µs (67 s); longer spikes count in the last bin
HIST_EDGES_NS: tuple[int, ...] = tuple(round(HIST_LOW_NS * 2 ** (k / HIST_PER_OCTAVE))
                                       for k in range(HIST_BINS + 1))
TIMELINE_BUCKETS = 512
TIMELINE_BUCKET_S = 1.0  # the initial width (doubles as the run outgrows the buckets)
DETAIL = 1000  # spikes kept in full: the worst ones

_STAGE_INDEX = {k: i for i, k in enumerate(STAGE_KEYS)}
_CAUSE_INDEX = {k: i for i, k in enumerate(CAUSE_KEYS)}


class LateWakeups(Protocol):
    """What the spike log asks a machine-hiccup probe (`workbench.feed.hiccup_probe.
    HiccupProbe`): (end_ns, late_ns) of its late wake-ups inside [start_ns, end_ns]."""

    def late_between(self, start_ns: int, end_ns: int) -> list[tuple[int, int]]: ...


class Cause(NamedTuple):
    """One thing that ran: `name`, `duration_ns`, `end_ns` (perf_counter_ns), `detail`."""

    name: str
    duration_ns: int
    end_ns: int
    detail: str = ""


class Spike(NamedTuple):
    """A batch over the threshold: when (`end_ns`, perf_counter_ns), how long, per stage (ns,
    -1 = not measured), the queue depth behind it, the causes observed, its dominant stage
    (a `STAGE_KEYS` name) and its primary cause (a `CAUSE_KEYS` name)."""

    seq: int
    end_ns: int
    tick_to_trade_ns: int
    stages: dict[str, int]
    queue_depth: int
    causes: tuple[Cause, ...] = ()
    dominant: str = UNMEASURED
    primary: str = UNEXPLAINED

    def cause_names(self) -> list[str]:
        """Names of the causes, in the order they were noted (`gc` carries its generation in
        `detail`)."""
        return [c.name for c in self.causes]


def dominant_stage(stages: dict[str, int] | None) -> str:
    """The `SPIKE_STAGES` name with the longest time in `stages` (ns; negative = absent), or
    `unmeasured` when none is there."""
    best, best_ns = UNMEASURED, -1
    for stage in STAGE_KEYS[:-1]:
        value = stages.get(stage, -1) if stages else -1
        if value > best_ns:
            best, best_ns = stage, value
    return best


def primary_cause(causes: tuple[Cause, ...] | list[Cause]) -> str:
    """The `CAUSE_KEYS` name of the cause that ran longest (the first on a tie), `other` for
    a name outside SpikeCause, `unexplained` when there is none."""
    if not causes:
        return UNEXPLAINED
    name = max(causes, key=lambda c: c.duration_ns).name
    return name if name in _CAUSE_INDEX else OTHER


def _hist_bin(ns: int) -> int:
    if ns <= HIST_LOW_NS:
        return 0
    return min(HIST_BINS - 1, int(HIST_PER_OCTAVE * math.log2(ns / HIST_LOW_NS)))


@dataclass(frozen=True)
class SpikeSummary:
    """A whole run's spikes (see the module docstring); every count is exact.

    threshold_ns: the spike threshold. count: spikes. max_ns / total_ns: the worst and the
    summed tick-to-trade (ns). by_stage: dominant stage -> spikes (every `STAGE_KEYS` name).
    by_cause: primary cause -> spikes (every `CAUSE_KEYS` name; sums to `count`). seen: cause
    -> spikes that saw it at all (every `CAUSE_KEYS` name; `unexplained` as in by_cause; the
    others may add up to more than `count`). housekeeping: spikes that
    saw at least one housekeeping job. stage_cause: dominant stage -> primary cause -> spikes.
    hist_edges_ns: the `HIST_BINS + 1` bin edges (ns); hist_by_stage / hist_by_cause: stage /
    primary cause -> spikes per bin. bucket_s: timeline bucket width (s); timeline_stage /
    timeline_cause: stage / primary cause -> spikes per bucket, bucket i covering
    [i * bucket_s, (i + 1) * bucket_s) seconds after the log's origin (as many buckets as the
    run has reached). worst: the worst spikes in full, worst first (at most `detail`).
    """

    threshold_ns: int
    count: int
    max_ns: int
    total_ns: int
    by_stage: dict[str, int]
    by_cause: dict[str, int]
    seen: dict[str, int]
    housekeeping: int
    stage_cause: dict[str, dict[str, int]]
    hist_edges_ns: tuple[int, ...]
    hist_by_stage: dict[str, list[int]]
    hist_by_cause: dict[str, list[int]]
    bucket_s: float
    timeline_stage: dict[str, list[int]]
    timeline_cause: dict[str, list[int]]
    worst: tuple[Spike, ...]

    @property
    def unexplained(self) -> int:
        """Spikes that saw no cause (only their dominant stage says where the time went)."""
        return self.by_cause[UNEXPLAINED]

    def share(self, count: int) -> float:
        """`count` as a fraction of the spikes (0.0 when there are none)."""
        return count / self.count if self.count else 0.0

    @property
    def timeline_t_s(self) -> list[float]:
        """Start of each timeline bucket, seconds after the log's origin."""
        n = len(next(iter(self.timeline_stage.values()), []))
        return [i * self.bucket_s for i in range(n)]

    def to_dict(self, worst: int | None = None) -> dict[str, Any]:
        """JSON-ready form (summary.json; `worst`: keep only that many of the worst spikes, a
        compact form for the bench history); `from_dict` reads it back."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "worst"}
        out["hist_edges_ns"] = list(self.hist_edges_ns)
        out["worst"] = [{**s._asdict(), "causes": [c._asdict() for c in s.causes]}
                        for s in self.worst[:worst]]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpikeSummary:
        """The summary `to_dict` wrote. Raises KeyError for a dict missing a field."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "worst"}
        fields["hist_edges_ns"] = tuple(fields["hist_edges_ns"])
        worst = tuple(Spike(**{**s, "causes": tuple(Cause(**c) for c in s["causes"])})
                      for s in data["worst"])
        return cls(**fields, worst=worst)


def empty_summary(threshold_ns: int = 1_000_000) -> SpikeSummary:
    """The summary of a log that saw no spike."""
    return SpikeLog(threshold_ns / 1000).summary()


class SpikeLog:
    """Spikes (tick-to-trade over `threshold_us` µs), attributed (module docstring).

    detail: how many of the worst spikes are kept in full. queue_depth_cause: a queue this
    deep behind the batch when it was picked up is a cause. origin_ns: time zero of the
    timeline (perf_counter_ns; default: now; the engine sets its start).

    Thread-safety: `note_cause` may be called from any thread (gc callbacks run in whichever
    thread triggered the collection); `begin_iteration`/`end_iteration` come from the one thread
    processing a batch at a time; `summary()`, `spikes()` and `worst()` from any thread.
    """

    def __init__(self, threshold_us: float = 1000.0, detail: int = DETAIL,
                 queue_depth_cause: int = 1000, origin_ns: int | None = None) -> None:
        if threshold_us <= 0:
            raise ValueError(f"threshold_us must be > 0, got {threshold_us}")
        if detail < 1:
            raise ValueError(f"detail must be >= 1, got {detail}")
        self.threshold_ns = int(threshold_us * 1000)
        self.detail = detail
        self.queue_depth_cause = queue_depth_cause
        self.origin_ns = time.perf_counter_ns() if origin_ns is None else origin_ns
        self._causes: deque[Cause] = deque(maxlen=4096)
        self._lock = threading.Lock()
        self._start_ns = 0
        self._queue_depth = 0
        self._gc_start: dict[int, int] = {}
        self._gc_hooked = False
        self.hiccups: LateWakeups | None = None  # its late wake-ups become causes
        self.spike_count = 0
        self._max_ns = 0
        self._total_ns = 0
        self._housekeeping = 0
        n_stages, n_causes = len(STAGE_KEYS), len(CAUSE_KEYS)
        self._by_stage = [0] * n_stages
        self._by_cause = [0] * n_causes
        self._seen = [0] * n_causes
        self._stage_cause = [[0] * n_causes for _ in range(n_stages)]
        self._hist_stage = [[0] * HIST_BINS for _ in range(n_stages)]
        self._hist_cause = [[0] * HIST_BINS for _ in range(n_causes)]
        self._bucket_ns = int(TIMELINE_BUCKET_S * 1e9)
        self._buckets = 0  # timeline buckets reached
        self._tl_stage = [[0] * TIMELINE_BUCKETS for _ in range(n_stages)]
        self._tl_cause = [[0] * TIMELINE_BUCKETS for _ in range(n_causes)]
        self._worst: list[tuple[int, int, Spike]] = []  # min-heap of (t2t, n, spike)
        self._order = itertools.count()

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
                      seq: int = 0, extra: tuple[Cause, ...] = ()) -> Spike | None:
        """Close the window. Over the threshold: log and return the Spike with every cause
        whose run ended inside the window, the `extra` causes the caller measured itself (a
        burst), and `queue_depth` when the queue was backed up; else None. Causes that ended
        before the window are discarded."""
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
        seen.extend(extra)
        if self.hiccups is not None:
            seen.extend(Cause(SpikeCause.MACHINE_HICCUP, late, end, f"probe woke {late / 1e3:,.0f}"
                              " µs late") for end, late in self.hiccups.late_between(start, now))
        if self._queue_depth >= self.queue_depth_cause:
            seen.append(Cause(SpikeCause.QUEUE_DEPTH, 0, now, str(self._queue_depth)))
        t2t = int(tick_to_trade_ns)
        spike = Spike(seq, now, t2t, stages or {}, self._queue_depth, tuple(seen),
                      dominant_stage(stages), primary_cause(seen))
        self.add(spike)
        return spike

    def add(self, spike: Spike) -> None:
        """Count `spike` in every column of the store and keep it if among the worst (the
        engine goes through `end_iteration`; a journal read back adds its spikes here)."""
        t2t = spike.tick_to_trade_ns
        s, c = _STAGE_INDEX[spike.dominant], _CAUSE_INDEX[spike.primary]
        names = {cause.name for cause in spike.causes}
        b = _hist_bin(t2t)
        with self._lock:
            self.spike_count += 1
            self._max_ns = max(self._max_ns, t2t)
            self._total_ns += t2t
            self._by_stage[s] += 1
            self._by_cause[c] += 1
            self._stage_cause[s][c] += 1
            for name in names:
                self._seen[_CAUSE_INDEX.get(name, _CAUSE_INDEX[OTHER])] += 1
            if not names:
                self._seen[c] += 1
            if not HOUSEKEEPING_CAUSES.isdisjoint(names):
                self._housekeeping += 1
            self._hist_stage[s][b] += 1
            self._hist_cause[c][b] += 1
            k = max(0, spike.end_ns - self.origin_ns) // self._bucket_ns
            while k >= TIMELINE_BUCKETS:
                self._coarsen()
                k //= 2
            self._buckets = max(self._buckets, k + 1)
            self._tl_stage[s][k] += 1
            self._tl_cause[c][k] += 1
            item = (t2t, next(self._order), spike)
            if len(self._worst) < self.detail:
                heapq.heappush(self._worst, item)
            elif t2t > self._worst[0][0]:
                heapq.heapreplace(self._worst, item)

    def _coarsen(self) -> None:
        """Halve the timeline's resolution: bucket pairs merge, the width doubles."""
        for rows in (self._tl_stage, self._tl_cause):
            for row in rows:
                merged = [row[2 * i] + row[2 * i + 1] for i in range(TIMELINE_BUCKETS // 2)]
                row[:] = merged + [0] * (TIMELINE_BUCKETS - len(merged))
        self._bucket_ns *= 2
        self._buckets = (self._buckets + 1) // 2

    # -- reading ------------------------------------------------------------------------
    @property
    def cause_counts(self) -> dict[str, int]:
        """cause -> spikes that saw it (non-zero ones; a spike with three gc passes counts
        once under `gc`; `unexplained`: spikes that saw none)."""
        with self._lock:
            return {k: n for k, n in zip(CAUSE_KEYS, self._seen, strict=True) if n}

    @property
    def housekeeping_spikes(self) -> int:
        """Spikes that saw at least one of the engine's housekeeping jobs."""
        return self._housekeeping

    def worst(self, n: int | None = None) -> list[Spike]:
        """The worst `n` spikes kept (default all, at most `detail`), worst first."""
        with self._lock:
            items = sorted(self._worst, reverse=True)
        return [spike for _, _, spike in items[:n]]

    def spikes(self) -> list[Spike]:
        """The spikes kept in full (the worst `detail`), oldest first."""
        return sorted(self.worst(), key=lambda s: s.end_ns)

    def summary(self) -> SpikeSummary:
        """The whole run so far (a consistent copy)."""
        with self._lock:
            n = self._buckets
            return SpikeSummary(
                threshold_ns=self.threshold_ns, count=self.spike_count, max_ns=self._max_ns,
                total_ns=self._total_ns,
                by_stage=dict(zip(STAGE_KEYS, self._by_stage, strict=True)),
                by_cause=dict(zip(CAUSE_KEYS, self._by_cause, strict=True)),
                seen=dict(zip(CAUSE_KEYS, self._seen, strict=True)),
                housekeeping=self._housekeeping,
                stage_cause={stage: dict(zip(CAUSE_KEYS, row, strict=True))
                             for stage, row in zip(STAGE_KEYS, self._stage_cause,
                                                   strict=True)},
                hist_edges_ns=HIST_EDGES_NS,
                hist_by_stage={k: list(row) for k, row in zip(STAGE_KEYS, self._hist_stage,
                                                              strict=True)},
                hist_by_cause={k: list(row) for k, row in zip(CAUSE_KEYS, self._hist_cause,
                                                              strict=True)},
                bucket_s=self._bucket_ns / 1e9,
                timeline_stage={k: row[:n] for k, row in zip(STAGE_KEYS, self._tl_stage,
                                                             strict=True)},
                timeline_cause={k: row[:n] for k, row in zip(CAUSE_KEYS, self._tl_cause,
                                                             strict=True)},
                worst=tuple(spike for _, _, spike in sorted(self._worst, reverse=True)))
