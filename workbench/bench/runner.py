"""Run phases: prepare once, warm up, alternate the two variants, check they agree, compare.

For each phase the runner calls `prepare(quick)` once, runs `warmup` unmeasured pairs, then
`repeats` measured pairs (at most `quick_repeats` with quick; more, up to 10x, for phases
whose pair takes less than the repeat budget), alternating which variant goes first so that
drift (thermal, other processes on the 2 shared cores) hits both. The improvement ratio is computed
pair by pair within the run (baseline/optimized for time, latency, memory, bytes;
optimized/baseline for throughput) and summarized as median, min and max. The first pair's
results go through the phase's `check`: a `PhaseMismatch` marks the phase INVALID with the first
difference and no ratio is reported. A phase that raises becomes an error row; the run goes
on. Automatic garbage collection is off during the measured calls unless the phase measures
latency (see `Phase.gc_during`).

Per-call figures by metric:
  time        wall ns of the call (`clock`, default `time.perf_counter_ns`), or
              Outcome.wall_ns when the variant timed itself
  throughput  Outcome.items / wall s of the call (items/s)
  latency     P99 of Outcome.latencies_ns (P50, P99.9 and max are reported too)
  memory      Outcome.nbytes (e.g. bytes per instance, from tracemalloc)
  bytes       Outcome.nbytes (e.g. payload size)
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from workbench.bench.registry import Claim, Outcome, Phase
from workbench.errors import PhaseMismatch

Verdict = Literal["confirmed", "smaller", "larger", "refuted", "measured", "invalid", "error"]
Clock = Callable[[], int]
Progress = Callable[[Phase, str], None]

# Fast phases get more repeats (up to 10x) until a phase's measured pairs fill this many seconds.
REPEAT_BUDGET_S = {True: 0.3, False: 1.5}
MAX_REPEAT_FACTOR = 10
POINT_TOLERANCE = 0.10
PACKAGES = (
    "hft-workbench", "numpy", "orjson", "msgpack", "lz4", "polars", "pandas", "websockets",
    "picows", "uvloop", "numba", "msgspec", "hdrhistogram", "rich",
)


def improvement_ratio(metric: str, baseline: float, optimized: float) -> float:
    """How much better the optimized figure is (>1 better): optimized/baseline for throughput,
    baseline/optimized for every other metric. inf when the optimized figure is 0."""
    if metric == "throughput":
        return optimized / baseline if baseline else float("inf")
    return baseline / optimized if optimized else float("inf")


def verdict(claim: Claim, ratio: float) -> Verdict:
    """Measured ratio against the claimed range.

    confirmed: within [ratio_low, ratio_high] (a point claim, low == high, is +-10%);
    larger: above the range; smaller: below it but still an improvement (> 1);
    refuted: no improvement at all (<= 1) for a claimed gain, or below ratio_low for a claimed
    cost (ratio_low < 1); measured: nothing numeric was claimed.
    """
    low, high = claim.ratio_low, claim.ratio_high
    if low is None and high is None:
        return "measured"
    if low is None:
        low = 1.0
    if high is not None and high == low:
        low, high = low * (1 - POINT_TOLERANCE), high * (1 + POINT_TOLERANCE)
    if high is not None and ratio > high:
        return "larger"
    if ratio >= low:
        return "confirmed"
    if low < 1.0 or ratio <= 1.0:
        return "refuted"
    return "smaller"


def percentiles_ns(latencies_ns: np.ndarray) -> dict[str, float]:
    """P50, P99, P99.9 and max of an int64 ns array (numpy 'linear' percentiles)."""
    lat = np.asarray(latencies_ns, dtype=np.int64)
    if lat.size == 0:
        raise ValueError("latency phase returned an empty latencies_ns array")
    p50, p99, p999 = np.percentile(lat, [50.0, 99.0, 99.9])
    return {"p50_ns": float(p50), "p99_ns": float(p99), "p999_ns": float(p999),
            "max_ns": float(lat.max())}


@dataclass
class Sample:
    """One measured call of one variant."""

    wall_ns: int
    outcome: Outcome

    def value(self, metric: str) -> float:
        """The figure the ratio is taken on (see the module docstring)."""
        if metric == "time":
            return float(self.wall_ns)
        if metric == "throughput":
            if not self.outcome.items:
                raise ValueError("throughput phase returned no Outcome.items")
            return self.outcome.items / (self.wall_ns / 1e9)
        if metric == "latency":
            if self.outcome.latencies_ns is None:
                raise ValueError("latency phase returned no Outcome.latencies_ns")
            return percentiles_ns(self.outcome.latencies_ns)["p99_ns"]
        if metric in ("memory", "bytes"):
            if self.outcome.nbytes is None:
                raise ValueError(f"{metric} phase returned no Outcome.nbytes")
            return float(self.outcome.nbytes)
        raise ValueError(f"unknown metric {metric!r}; "
                         "expected time|throughput|latency|memory|bytes")


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def summarize(metric: str, samples: list[Sample]) -> dict[str, Any]:
    """Median/min/max of the metric figure over the repeats, plus items/s and latency
    percentiles (medians over the repeats) where the outcomes carry them."""
    values = [s.value(metric) for s in samples]
    out: dict[str, Any] = {
        "median": _median(values), "min": float(min(values)), "max": float(max(values)),
        "wall_ns_median": _median(s.wall_ns for s in samples),
    }
    items = [s.outcome.items for s in samples]
    if all(items):
        out["items"] = int(items[0])
        out["items_per_s"] = _median(i / (s.wall_ns / 1e9) for i, s in zip(items, samples,
                                                                            strict=True))
    if all(s.outcome.latencies_ns is not None for s in samples):
        pcts = [percentiles_ns(s.outcome.latencies_ns) for s in samples]
        for key in ("p50_ns", "p99_ns", "p999_ns", "max_ns"):
            out[key] = _median(p[key] for p in pcts)
    if samples[-1].outcome.nbytes is not None:
        out["nbytes"] = int(samples[-1].outcome.nbytes)
    out["extra"] = samples[-1].outcome.extra
    return out


@dataclass
class PhaseResult:
    """The measured comparison of one phase; `record()` flattens it for JSON and parquet."""

    phase: Phase
    status: Literal["ok", "invalid", "error"]
    verdict: Verdict
    quick: bool
    repeats: int = 0
    baseline: dict[str, Any] = field(default_factory=dict)
    optimized: dict[str, Any] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)
    p50_ratio: float | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ratio(self) -> float | None:
        """Median of the pair-by-pair improvement ratios, None when invalid or failed."""
        return _median(self.ratios) if self.ratios else None

    def record(self) -> dict[str, Any]:
        """One flat JSON-able row: scalars only (extras as a dict under 'extra')."""
        p, c = self.phase, self.phase.claim
        row: dict[str, Any] = {
            "phase": p.name, "topic": p.topic, "metric": p.metric,
            "baseline_label": p.baseline_label, "optimized_label": p.optimized_label,
            "claim": c.text, "claim_low": c.ratio_low, "claim_high": c.ratio_high,
            "status": self.status, "verdict": self.verdict, "quick": self.quick,
            "repeats": self.repeats, "ratio": self.ratio,
            "ratio_min": min(self.ratios) if self.ratios else None,
            "ratio_max": max(self.ratios) if self.ratios else None,
            "p50_ratio": self.p50_ratio, "error": self.error, "seconds": self.seconds,
        }
        for side, stats in (("baseline", self.baseline), ("optimized", self.optimized)):
            for key in ("median", "min", "max", "wall_ns_median", "items", "items_per_s",
                        "p50_ns", "p99_ns", "p999_ns", "max_ns", "nbytes"):
                row[f"{side}_{key}"] = stats.get(key)
        row["extra"] = {"baseline": self.baseline.get("extra", {}),
                        "optimized": self.optimized.get("extra", {})}
        return row


def _call(fn: Callable[[Any], Outcome], prepared: Any, clock: Clock, gc_during: bool
          ) -> Sample:
    enabled = gc.isenabled()
    if not gc_during:
        gc.disable()
    try:
        t0 = clock()
        outcome = fn(prepared)
        wall = clock() - t0
    finally:
        if enabled:
            gc.enable()
    if not isinstance(outcome, Outcome):
        raise TypeError(f"a variant must return an Outcome, got {type(outcome).__name__}")
    return Sample(wall if outcome.wall_ns is None else outcome.wall_ns, outcome)


def run_phase(phase: Phase, quick: bool = False, clock: Clock = time.perf_counter_ns,
              progress: Progress | None = None) -> PhaseResult:
    """Measure one phase (see the module docstring). Never raises for the phase's own faults:
    a mismatch gives status 'invalid', any other exception status 'error'."""
    started = time.perf_counter()
    repeats = max(1, min(phase.repeats, phase.quick_repeats) if quick else phase.repeats)
    warmup = min(phase.warmup, 1) if quick else phase.warmup
    note = progress or (lambda _p, _s: None)
    gc_during = phase.metric == "latency" if phase.gc_during is None else phase.gc_during
    result = PhaseResult(phase, "ok", "measured", quick, repeats)
    try:
        note(phase, "prepare")
        prepared = phase.prepare(quick)
        base_samples: list[Sample] = []
        opt_samples: list[Sample] = []
        checked = False
        i = 0
        while i < warmup + repeats:
            note(phase, f"{'warmup' if i < warmup else 'repeat'} {i + 1}/{warmup + repeats}")
            if i % 2 == 0:
                b = _call(phase.baseline, prepared, clock, gc_during)
                o = _call(phase.optimized, prepared, clock, gc_during)
            else:
                o = _call(phase.optimized, prepared, clock, gc_during)
                b = _call(phase.baseline, prepared, clock, gc_during)
            if not checked:
                note(phase, "check")
                phase.check(b.outcome.result, o.outcome.result)
                checked = True
            if i == 0 and phase.metric in ("time", "throughput", "latency"):
                repeats = extended_repeats(repeats, b.wall_ns + o.wall_ns, quick)
                result.repeats = repeats
            if i >= warmup:
                base_samples.append(b)
                opt_samples.append(o)
            i += 1
        result.baseline = summarize(phase.metric, base_samples)
        result.optimized = summarize(phase.metric, opt_samples)
        result.ratios = [
            improvement_ratio(phase.metric, b.value(phase.metric), o.value(phase.metric))
            for b, o in zip(base_samples, opt_samples, strict=True)
        ]
        if phase.metric == "latency":
            result.p50_ratio = _median(
                improvement_ratio("latency", percentiles_ns(b.outcome.latencies_ns)["p50_ns"],
                                  percentiles_ns(o.outcome.latencies_ns)["p50_ns"])
                for b, o in zip(base_samples, opt_samples, strict=True)
            )
        result.verdict = verdict(phase.claim, _median(result.ratios))
    except PhaseMismatch as exc:
        result.status, result.verdict, result.error = "invalid", "invalid", str(exc)
        result.ratios = []
    except Exception as exc:  # a broken phase is a row in the table, not the end of the run
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.status, result.verdict = "error", "error"
        result.error = f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})"
        result.ratios = []
    result.seconds = time.perf_counter() - started
    return result


def extended_repeats(repeats: int, pair_ns: int, quick: bool) -> int:
    """Repeats for a phase whose first pair took pair_ns: enough to fill the repeat budget,
    never fewer than `repeats` nor more than MAX_REPEAT_FACTOR times it."""
    wanted = int(REPEAT_BUDGET_S[quick] * 1e9 // max(pair_ns, 1))
    return max(repeats, min(wanted, repeats * MAX_REPEAT_FACTOR))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """cpu model, logical cores, python version, platform string and package versions."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": _cpu_model(), "cores": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "packages": versions,
    }


def run_phases(phases: Iterable[Phase], quick: bool = False, clock: Clock = time.perf_counter_ns,
               progress: Progress | None = None,
               on_result: Callable[[PhaseResult], None] | None = None,
               ) -> tuple[list[PhaseResult], list[dict[str, Any]]]:
    """Run phases in order; returns the results and their JSON records, each record stamped
    with the run id, UTC time (ISO 8601) and `machine_info()`."""
    run_id = uuid.uuid4().hex[:12]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    results, records = [], []
    for phase in phases:
        res = run_phase(phase, quick=quick, clock=clock, progress=progress)
        results.append(res)
        records.append({"run_id": run_id, "time_utc": stamp, **res.record(), "machine": machine})
        if on_result is not None:
            on_result(res)
    return results, records
