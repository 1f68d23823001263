"""Soak: the engine on the simulator, flat out, for a fixed number of events; RSS growth per
million events after warm-up (issue 14, "Flat memory"; target: under 1 MiB per million).

soak.rss_growth: one engine run (`source="sim"`: SimExchange serving the seeded simulator flat
out, `speed=0`; callback dispatch; the default EmaCross trading; the journal in a temporary
directory, removed afterwards) for WARMUP + MEASURED events (QUICK_* with --quick), sampled
every SAMPLE_S from the bench's thread: events processed, RSS (psutil), pymalloc blocks
(`sys.getallocatedblocks`: Python objects). Growth per million events is the least-squares
slope of RSS against events over a window, in bytes per million events. Both variants read
the same run: baseline = the warm-up window (the first WARMUP events), optimized = the window
after it, the one the target is about. A soak has no "before" to run beside it, so no ratio is
claimed (verdict `measured`); `extra` says whether the target was met, with the run's counts.

What is bounded, so that the warm-up fills it and then memory stays flat (by what):
- the Executor's fills in memory: the newest `execution.RECENT_FILLS` (the journal has all);
  the PaperBroker keeps live orders only;
- BookSync: at most `sync.MAX_SYMBOLS` symbols, least recently used evicted; each book's
  delta buffer `max_buffer`; the L2Book ladder is fixed, its overflow table sized by levels;
- LatencyRecorder: fixed HDR histograms, a per-second series of `recorder.SERIES_SECONDS`;
- SpikeLog: the newest `max_spikes` spikes and 4096 causes;
- the websocket read buffer (picows, which never shrinks it): as large as one socket read,
  bounded by the socket's SO_RCVBUF (`feed.wires.RCVBUF_BYTES`).
The warm-up covers them: the fills fill up last (~10k fills: about 1M events of the default
EmaCross), so both warm-ups are longer than that. Figures taken on a shared machine are
noisy: other processes move the allocator's high-water marks too.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import psutil

from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.errors import EngineError, PhaseMismatch

WARMUP = 2_000_000
MEASURED = 4_000_000
QUICK_WARMUP = 1_200_000
QUICK_MEASURED = 800_000
SAMPLE_S = 0.2
STALL_S = 30.0  # no event for this long fails the run
TARGET_MIB_PER_M = 1.0
MIB = 1 << 20


@dataclass(frozen=True)
class Soak:
    """One soak run: samples (float64, shape (n, 3): events, RSS bytes, pymalloc blocks), the
    event count where the warm-up ends, and the run's final counts."""

    samples: np.ndarray
    warmup_events: int
    run_id: str
    counts: dict


def growth_per_million(events: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of `values` against `events` (1-D, same length >= 2, events not
    all equal), per million events. Raises ValueError otherwise."""
    if len(events) < 2 or len(events) != len(values) or np.ptp(events) == 0:
        raise ValueError(f"expected >= 2 samples over distinct event counts, got "
                         f"{len(events)} events and {len(values)} values")
    slope = np.polyfit(events.astype(np.float64), values.astype(np.float64), 1)[0]
    return float(slope * 1e6)


def run_soak(warmup: int, measured: int) -> Soak:
    """Run the engine on the simulator flat out until `warmup + measured` events, sampling
    every SAMPLE_S. Raises EngineError when the run ends early or fails, makes no progress for
    STALL_S, or its book has not synced by the end of the warm-up (a soak that does not trade
    measures the wrong thing)."""
    total = warmup + measured
    out_dir = tempfile.mkdtemp(prefix="wb-soak-")
    process = psutil.Process()
    engine = Engine(EngineConfig(source="sim", speed=0, dispatch="callback", out_dir=out_dir))
    rows: list[tuple[int, int, int]] = []
    try:
        engine.start()
        last_events, last_progress = 0, time.monotonic()
        synced = False
        while engine.events < total:
            if engine.wait(SAMPLE_S):
                raise EngineError(f"soak: expected {total:,} events, the run ended "
                                  f"({engine.state}: {engine.error}) at {engine.events:,}")
            events = engine.events
            rows.append((events, process.memory_info().rss, sys.getallocatedblocks()))
            now = time.monotonic()
            if events > last_events:
                last_events, last_progress = events, now
            elif now - last_progress > STALL_S:
                raise EngineError(f"soak: expected events to flow, none for {STALL_S} s "
                                  f"(at {events:,})")
            if not synced and events >= warmup:
                synced = bool(engine.status().book_sync["snapshots"])
                if not synced:
                    raise EngineError(f"soak: expected the book synced within the {warmup:,} "
                                      f"warm-up events, no snapshot arrived")
    finally:
        status = engine.stop(timeout_s=60)
        shutil.rmtree(out_dir, ignore_errors=True)
    if status.state == "failed":
        raise EngineError(f"soak: the run failed: {status.error}")
    counts = {"events": status.events, "fills": status.fills, "orders": status.orders,
              "fills_in_memory": len(engine.executor.fills),
              "live_orders": len(engine.broker.orders), "books": len(engine.sync.books),
              "spikes": status.spikes, "reconnects": status.feed.get("reconnects"),
              "gaps": status.book_sync["gaps"], "buffered": status.book_sync["buffered"],
              "wall_s": round(status.elapsed_s, 1), "events_per_s": round(status.events_per_s)}
    return Soak(np.array(rows, dtype=np.float64).reshape(-1, 3), warmup, engine.run_id, counts)


def _prepare(quick: bool) -> Soak:
    return run_soak(QUICK_WARMUP if quick else WARMUP, QUICK_MEASURED if quick else MEASURED)


def _window(soak: Soak, after_warmup: bool) -> Outcome:
    samples = soak.samples
    events = samples[:, 0]
    part = samples[events >= soak.warmup_events] if after_warmup else samples[
        events <= soak.warmup_events]
    rss = growth_per_million(part[:, 0], part[:, 1])
    blocks = growth_per_million(part[:, 0], part[:, 2])
    first, last = part[0], part[-1]
    extra = {
        "mib_per_million_events": round(rss / MIB, 3),
        "pymalloc_blocks_per_million_events": round(blocks),
        "events": [int(first[0]), int(last[0])],
        "rss_mib": [round(first[1] / MIB, 1), round(last[1] / MIB, 1)],
        "peak_rss_mib": round(part[:, 1].max() / MIB, 1), "samples": len(part),
    }
    if after_warmup:
        extra.update(target_mib_per_million=TARGET_MIB_PER_M,
                     within_target=rss / MIB < TARGET_MIB_PER_M, run=soak.counts)
    return Outcome(result=(soak.run_id, int(first[0]), int(last[0])),
                   items=int(last[0] - first[0]), nbytes=round(rss), extra=extra)


def _check(baseline: tuple, optimized: tuple) -> None:
    """The windows are consecutive parts of one run: the warm-up's last sample is the
    first one after it (or precedes it)."""
    run_b, _, end_b = baseline
    run_o, start_o, _ = optimized
    if run_b != run_o:
        raise PhaseMismatch(f"soak windows: expected one run, got {run_b} and {run_o}")
    if end_b > start_o:
        raise PhaseMismatch(f"soak windows: warm-up ends at {end_b:,} events, after the "
                            f"measured window starts ({start_o:,})")


register(Phase(
    name="soak.rss_growth", topic="soak",
    claim=Claim("engine on the simulator flat out: RSS grows under 1 MiB per million events "
                "after warm-up (issue 14); the warm-up fills the bounded buffers"),
    prepare=_prepare,
    baseline=lambda soak: _window(soak, after_warmup=False),
    optimized=lambda soak: _window(soak, after_warmup=True),
    check=_check, metric="memory", repeats=1, warmup=0, quick_repeats=1,
    baseline_label="RSS growth per 1M events in the warm-up",
    optimized_label="after the warm-up",
))
