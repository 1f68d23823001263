"""LatencyRecorder: one HdrHistogram per stage (ns), fed from a preallocated row buffer.

The hot path appends one row per batch to an `array.array` of int64 (`add`: one C-level
extend); `fold()` moves the pending rows into the histograms in bulk: a compiled kernel
(numba, `nogil`) computes the HDR bucket index of every value (the same arithmetic as
`hdrh.histogram.HdrHistogram._counts_index_for`, HdrHistogram by Gil Tene) and counts it in
the histogram's own counts array; percentiles come from one compiled pass over the counts.
Both run without the GIL, so a fold or a UI summary in the engine thread (~0.1 ms for 4k rows)
does not hold up the feed thread (the numpy version held the GIL for 1-12 ms: spikes). A
per-second P50/P99/max series per stage is kept for plots, for the last `series_seconds`
(an hour by default: memory stays flat however long the run; the histograms cover all of it).
`summary()` and `snapshot()` are thread-safe (the UI reads them while the engine runs).

Row layout (int64, ns): column 0 is the time the row was closed (`perf_counter_ns`, buckets the
per-second series), then one column per stage of `STAGES` in order; -1 marks a stage not
measured for that batch.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np
from hdrh.histogram import HdrHistogram

from workbench.latency.stages import STAGES, SpikeCause, Stage

HIGHEST_NS = 60_000_000_000  # 60 s: anything above is clamped to it
SIGNIFICANT_FIGURES = 3
PERCENTILES = {"p50_ns": 50.0, "p99_ns": 99.0, "p999_ns": 99.9}
SECOND_NS = 1_000_000_000
SERIES_SECONDS = 3600  # per-second points kept per stage (the newest)


@nb.njit(cache=True, nogil=True)
def _add_rows_kernel(values, counts, mask, unit_magnitude, half_magnitude, half_count,
                     highest, stats):
    """Add every value >= 0 of column j of `values` (int64, (rows, stages), any strides;
    clamped to `highest`) to the HDR counts array `counts[j]` (a tuple, one per stage);
    stats[j] = (how many, min, max) of them (min = highest + 1 if none).

    Index of a value, as HdrHistogram._counts_index_for (HdrHistogram by Gil Tene): bucket =
    bit_length(v | sub_bucket_mask) - unit_magnitude - (sub_bucket_half_count_magnitude + 1);
    sub bucket = v >> (bucket + unit_magnitude); index = ((bucket + 1) <<
    half_count_magnitude) + sub - half_count. bit_length from frexp (exact below 2**53).
    One call for all stages, without the GIL: the feed thread goes on while the engine
    folds."""
    for j in range(values.shape[1]):
        row = counts[j]
        n = 0
        low = highest + 1
        high = -1
        for i in range(values.shape[0]):
            v = values[i, j]
            if v < 0:
                continue
            if v > highest:
                v = highest
            bit_length = math.frexp(float(v | mask))[1]
            bucket = bit_length - unit_magnitude - (half_magnitude + 1)
            sub = v >> (bucket + unit_magnitude)
            row[((bucket + 1) << half_magnitude) + sub - half_count] += 1
            n += 1
            low = min(low, v)
            high = max(high, v)
        stats[j, 0] = n
        stats[j, 1] = low
        stats[j, 2] = high


@nb.njit(cache=True, nogil=True)
def _rank_kernel(counts, bases, targets):
    """out[j, k]: index of the bucket holding rank targets[j, k] (ascending in k, 1-based)
    in the counts `counts[j] - bases[j]` (tuples, one array per stage): one pass each, no
    temporary arrays, one call for all stages, without the GIL."""
    out = np.empty(targets.shape, dtype=np.int64)
    for j in range(targets.shape[0]):
        row = counts[j]
        base = bases[j]
        k = 0
        total = 0
        for i in range(row.shape[0]):
            total += row[i] - base[i]
            while k < targets.shape[1] and total >= targets[j, k]:
                out[j, k] = i
                k += 1
            if k == targets.shape[1]:
                break
        while k < targets.shape[1]:
            out[j, k] = row.shape[0] - 1
            k += 1
    return out


def _percentiles(hists: list[_StageHistogram], bases: tuple[np.ndarray, ...],
                 totals: list[int], pcts: tuple[float, ...]) -> list[list[int]]:
    """Per histogram, the values at percentiles `pcts` (ascending) of `counts - base` holding
    `totals` values (all 0 when a total is 0): the same result as
    `HdrHistogram.get_value_at_percentile`, without its per-bucket Python loop."""
    # an empty histogram gets targets 0: its walk stops at the first bucket
    targets = np.array([[max(int(min(p, 100.0) * total / 100 + 0.5), 1) if total else 0
                         for p in pcts] for total in totals], dtype=np.int64)
    found = _rank_kernel(tuple(hist.counts for hist in hists), bases, targets)
    out = []
    for hist, total, row in zip(hists, totals, found.tolist(), strict=True):
        h = hist.h
        out.append([int(h.get_highest_equivalent_value(h.get_value_from_index(i)))
                    if total else 0 for i in row])
    return out


class _StageHistogram:
    """One stage: the HdrHistogram, its counts as numpy, the exact max, and the counts at the
    start of the open second (this second's counts = counts - base)."""

    def __init__(self) -> None:
        self.h = HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_FIGURES)
        self.counts = np.frombuffer(self.h.counts, dtype=np.int64, count=self.h.counts_len)
        self.zeros = np.zeros_like(self.counts)
        self.max_ns = 0
        self.base = np.zeros_like(self.counts)
        self.second_total = 0
        self.second_max = 0

    def added(self, n: int, vmin: int, vmax: int) -> None:
        """Account n values in [vmin, vmax] the fold kernel put in the counts."""
        if not n:
            return
        h = self.h
        h.total_count += n
        h.min_value = min(h.min_value, vmin)
        h.max_value = max(h.max_value, vmax)
        self.max_ns = max(self.max_ns, vmax)
        self.second_total += n
        self.second_max = max(self.second_max, vmax)


class LatencyRecorder:
    """Per-stage latency histograms (ns) with a per-second P50/P99/max series.

    add((closed_ns, *stage_values)): one row, stage values in `STAGES` order, -1 = absent.
    record(stage, value_ns): one value of one stage (goes through the same buffer).
    fold(): move pending rows into the histograms (call from housekeeping; `add` also folds when
    `buffer_rows` rows are pending, a safety limit: 8 MB by default). on_fold(name, start_ns,
    end_ns) is told about every fold, so the engine can name it as a spike cause.
    series_seconds: per-second points kept per stage (the newest; older ones are dropped).
    Raises ValueError for buffer_rows or series_seconds < 1. Writers
    (`add`, `take`) are one thread at a time (the engine serializes them); `fold_rows` and the
    readers (`summary`, `snapshot`, `series`) may run in any thread.
    """

    def __init__(self, buffer_rows: int = 1 << 17,
                 on_fold: Callable[[str, int, int], None] | None = None,
                 series_seconds: int = SERIES_SECONDS) -> None:
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be >= 1, got {buffer_rows}")
        if series_seconds < 1:
            raise ValueError(f"series_seconds must be >= 1, got {series_seconds}")
        self.stages: tuple[Stage, ...] = STAGES
        self.width = 1 + len(STAGES)
        self._limit = buffer_rows * self.width
        self._rows = array("q")
        self._lock = threading.Lock()
        self._hist = {s: _StageHistogram() for s in STAGES}
        self._hists = [self._hist[s] for s in STAGES]
        self._counts = tuple(hist.counts for hist in self._hists)
        self._zeros = tuple(hist.zeros for hist in self._hists)
        self._current_second: int | None = None
        self._series: dict[Stage, deque[tuple[int, int, int, int]]] = {
            s: deque(maxlen=series_seconds) for s in STAGES}
        self._col = {s: i + 1 for i, s in enumerate(STAGES)}
        self.on_fold = on_fold

    def add(self, row: tuple[int, ...]) -> None:
        """Record one row: (closed_ns, then one value per stage in `STAGES` order: wire, parse,
        queue, book, strategy, order, tick_to_trade), ints in ns, -1 = absent. Folds when
        `buffer_rows` rows are pending."""
        rows = self._rows
        rows.extend(row)
        if len(rows) >= self._limit:
            self.fold()

    def record(self, stage: Stage, value_ns: int, closed_ns: int | None = None) -> None:
        """Record one value of one stage (ns)."""
        row = [-1] * self.width
        row[0] = time.perf_counter_ns() if closed_ns is None else closed_ns
        row[self._col[stage]] = value_ns
        self.add(tuple(row))

    @property
    def pending(self) -> int:
        """Rows written since the last fold."""
        return len(self._rows) // self.width

    def take(self) -> array:
        """Detach the pending rows (O(1)); the writer's next `add` starts a new buffer. Call it
        where writers are excluded, then `fold_rows` anywhere (the engine folds outside its
        dispatch lock, so the feed thread does not wait for the fold)."""
        raw, self._rows = self._rows, array("q")
        return raw

    def fold(self) -> int:
        """Move pending rows into the histograms and the per-second series. Returns the rows."""
        return self.fold_rows(self.take())

    def fold_rows(self, raw: array) -> int:
        """Fold rows detached by `take` into the histograms and the per-second series."""
        if not raw:
            return 0
        t0 = time.perf_counter_ns()
        rows = np.frombuffer(raw, dtype=np.int64).reshape(-1, self.width)
        n = len(rows)
        with self._lock:
            seconds = rows[:, 0] // SECOND_NS
            start = 0
            while start < n:  # rows are in time order: split at second boundaries
                sec = int(seconds[start])
                end = int(np.searchsorted(seconds, sec, side="right"))
                if self._current_second is not None and sec != self._current_second:
                    self._close_second()
                self._current_second = sec
                self._add_rows(rows[start:end, 1:])
                start = end
        if self.on_fold is not None:
            self.on_fold(SpikeCause.LATENCY_FOLD, t0, time.perf_counter_ns())
        return n

    def _add_rows(self, values: np.ndarray) -> None:
        """Each stage's column into its histogram (one compiled call, without the GIL)."""
        hists = self._hists
        h = hists[0].h  # every stage's histogram has the same layout
        stats = np.empty((len(hists), 3), dtype=np.int64)
        _add_rows_kernel(values, self._counts, h.sub_bucket_mask, h.unit_magnitude,
                         h.sub_bucket_half_count_magnitude, h.sub_bucket_half_count,
                         HIGHEST_NS, stats)
        for hist, (n, vmin, vmax) in zip(hists, stats.tolist(), strict=True):
            hist.added(n, vmin, vmax)

    def _close_second(self) -> None:
        hists = self._hists
        points = _percentiles(hists, tuple(hist.base for hist in hists),
                              [hist.second_total for hist in hists], (50.0, 99.0))
        for stage, hist, (p50, p99) in zip(STAGES, hists, points, strict=True):
            if hist.second_total:
                self._series[stage].append((self._current_second, p50, p99, hist.second_max))
                hist.base[:] = hist.counts
                hist.second_total = 0
                hist.second_max = 0

    def summary(self) -> dict[str, dict[str, int]]:
        """Per stage name: p50_ns, p99_ns, p999_ns, max_ns, count (folded rows only)."""
        hists = self._hists
        with self._lock:
            totals = [int(hist.h.total_count) for hist in hists]
            values = _percentiles(hists, self._zeros, totals, tuple(PERCENTILES.values()))
            return {stage.value: {**dict(zip(PERCENTILES, row, strict=True)),
                                  "max_ns": int(hist.max_ns), "count": total}
                    for stage, hist, row, total in zip(STAGES, hists, values, totals,
                                                       strict=True)}

    def series(self, stage: Stage | str) -> dict[str, np.ndarray]:
        """Per-second points of one stage: `t_s` (perf_counter seconds, int64), `p50_ns`,
        `p99_ns`, `max_ns` (int64 arrays, same length), the last `series_seconds` seconds
        that had values. The open second is not included."""
        stage = Stage(stage)
        with self._lock:
            points = np.array(self._series[stage], dtype=np.int64).reshape(-1, 4)
        return {
            "t_s": points[:, 0],
            "p50_ns": points[:, 1],
            "p99_ns": points[:, 2],
            "max_ns": points[:, 3],
        }

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Thread-safe copy of the per-stage summary for the UI (same shape as `summary`)."""
        return self.summary()

    def values(self, stage: Stage | str) -> np.ndarray:
        """Every folded value of a stage as an int64 array (ns), rebuilt from the histogram:
        each recorded value appears as its bucket's highest equivalent value (3 significant
        digits), sorted. For percentile code that wants raw arrays (the bench runner)."""
        hist = self._hist[Stage(stage)]
        with self._lock:
            counts = hist.counts.copy()
        nonzero = np.flatnonzero(counts)
        h = hist.h
        levels = np.array([h.get_highest_equivalent_value(h.get_value_from_index(int(i)))
                           for i in nonzero], dtype=np.int64)
        return np.repeat(levels, counts[nonzero])

    def to_json(self) -> dict[str, Any]:
        """`latency.json` of a run: {"summary": `summary()`, "series": stage name -> `series`
        as lists, "histograms": stage name -> the stage's HdrHistogram in its standard
        compressed encoding (`HdrHistogram.encode`, base64 text; stages with values only;
        `decode_histogram` reads one back)}."""
        with self._lock:
            encoded = {s.value: self._hist[s].h.encode().decode("ascii") for s in STAGES
                       if self._hist[s].h.total_count}
        return {"summary": self.summary(),
                "series": {s.value: {k: v.tolist() for k, v in self.series(s).items()}
                           for s in STAGES},
                "histograms": encoded}

    def histogram(self, stage: Stage | str) -> HdrHistogram:
        """The stage's HdrHistogram (read it under no writer, e.g. after the run)."""
        return self._hist[Stage(stage)].h

    def close(self) -> None:
        """Fold pending rows and close the open second of the series."""
        self.fold()
        with self._lock:
            if self._current_second is not None:
                self._close_second()
                self._current_second = None


def decode_histogram(encoded: str) -> HdrHistogram:
    """A histogram `LatencyRecorder.to_json` encoded (ValueError for text that is not one)."""
    try:
        return HdrHistogram.decode(encoded.encode("ascii"))
    except Exception as exc:  # hdrh raises several types for bad input
        raise ValueError(f"not an encoded HdrHistogram: {exc}") from exc


def _warm() -> None:
    """Load the compiled kernels (numba cache) for the layouts the recorder passes."""
    recorder = LatencyRecorder(buffer_rows=4)
    for _ in range(3):  # several rows: the columns are strided views, as in real folds
        recorder.add((1, *range(1, len(STAGES) + 1)))
    recorder.close()
    recorder.summary()


_warm()
