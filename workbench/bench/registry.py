"""Phases: each optimization as a baseline variant and an optimized variant on the same input.

A topic module (`workbench/bench/<topic>.py`, listed in `TOPIC_MODULES`) calls
`register(Phase(...))` at import. The runner (`workbench/bench/runner.py`) prepares the input
once, warms up, runs the two variants alternately `repeats` times, checks they agree, and
computes ratios pair by pair.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from workbench.errors import PhaseMismatch, UnknownPhase

Metric = Literal["time", "throughput", "latency", "memory", "bytes"]

# topic -> module that registers its phases on import
TOPIC_MODULES: dict[str, str] = {
    "ring": "workbench.bench.ring",
    "feed": "workbench.bench.feed",
    "dispatch": "workbench.bench.dispatch",
    "backtest": "workbench.bench.backtest",
    "serialization": "workbench.bench.serialization",
    "eventloop": "workbench.bench.eventloop",
    "memory": "workbench.bench.memory",
    "frames": "workbench.bench.frames",
    "spikes": "workbench.bench.spikes",
    "soak": "workbench.bench.soak",
    "native": "workbench.bench.native",
    "tick": "workbench.bench.tick",
}


@dataclass(frozen=True)
class Claim:
    """What the source claimed: text, and the claimed improvement ratio (baseline/optimized
    for time, latency, memory and bytes; optimized/baseline for throughput) as a range.

    ratio_high None: open-ended ("at least ratio_low"); both None: no number was claimed, the
    runner reports the figures with the verdict "measured". A point claim (low == high) is read
    as +-10%. A claimed cost (ratio_low < 1, e.g. "small CPU cost") is refuted below ratio_low.
    """

    text: str
    ratio_low: float | None = None
    ratio_high: float | None = None


@dataclass
class Outcome:
    """What one call of a variant hands back to the runner.

    result: compared by the phase's `check` (baseline vs optimized).
    items: units processed in the call (messages, events, bar-steps) -> items/s.
    latencies_ns: int64 array of per-item latencies in ns -> P50/P99/P99.9/max.
    nbytes: a size in bytes (memory per instance, payload size) for the memory/bytes metrics.
    extra: other figures to print and store (CPU %, spike causes, drops, ...).
    wall_ns: the variant's own timing of its measured part, when it times itself (e.g. the
      median of back-to-back calls); the runner then uses it instead of the call's wall time.
    """

    result: Any = None
    items: int | None = None
    latencies_ns: np.ndarray | None = None
    nbytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    wall_ns: int | None = None


@dataclass(frozen=True)
class Phase:
    """One optimization measured: `baseline(prepared)` against `optimized(prepared)`.

    prepare(quick) builds the shared input once (quick=True: a run under a minute for all).
    check(baseline_result, optimized_result) raises PhaseMismatch naming the first difference.
    metric picks the ratio: time (wall time of the call), throughput (items/s), latency
    (P99 of latencies_ns), memory or bytes (nbytes).
    quick_repeats caps the measured pairs of a --quick run (default 3; 1 for phases whose
    single pair takes seconds).
    gc_during: automatic garbage collection during the measured calls. None (default) means off
    for time, throughput, memory and bytes (as `timeit` does: a collection triggered by one
    variant's garbage would otherwise land on whichever call runs next) and on for latency,
    whose distribution should carry the collector pauses a real loop meets.
    """

    name: str
    topic: str
    claim: Claim
    prepare: Callable[[bool], Any]
    baseline: Callable[[Any], Outcome]
    optimized: Callable[[Any], Outcome]
    check: Callable[[Any, Any], None]
    metric: Metric = "time"
    repeats: int = 5
    warmup: int = 1
    baseline_label: str = "baseline"
    optimized_label: str = "optimized"
    quick_repeats: int = 3
    gc_during: bool | None = None


def first_difference(a: Sequence[Any], b: Sequence[Any], what: str) -> None:
    """A phase check for sequences: raise PhaseMismatch naming the first index where `a` and
    `b` differ (or their lengths); return None when they are equal."""
    if len(a) != len(b):
        raise PhaseMismatch(f"{what}: {len(a)} items vs {len(b)}")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            raise PhaseMismatch(f"{what}: first difference at item {i}: {x!r} != {y!r}")


_PHASES: dict[str, Phase] = {}


def register(phase: Phase) -> Phase:
    """Add a phase to the catalogue; names are unique (`topic.what`). Returns the phase."""
    if phase.name in _PHASES and _PHASES[phase.name] is not phase:
        raise ValueError(f"phase {phase.name!r} is registered twice")
    _PHASES[phase.name] = phase
    return phase


def load_topics(topics: Iterable[str] | None = None) -> dict[str, str]:
    """Import the topic modules so their phases register; returns {skipped topic: why}.

    Explicit `topics`: each must import (a topic whose module is not written yet raises
    UnknownPhase saying so; other import errors propagate). None (all topics): a topic module
    that does not exist yet, or fails to import, is skipped and named in the returned dict, so
    one broken topic does not stop the catalogue.
    """
    explicit = topics is not None
    skipped: dict[str, str] = {}
    for topic in topics if topics is not None else TOPIC_MODULES:
        if topic not in TOPIC_MODULES:
            raise UnknownPhase(f"unknown topic {topic!r}; topics: {', '.join(TOPIC_MODULES)}")
        module = TOPIC_MODULES[topic]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if explicit and exc.name == module:
                raise UnknownPhase(
                    f"topic {topic!r} is in the catalogue but its module {module} is not "
                    f"written yet; available topics: {', '.join(available_topics())}"
                ) from exc
            if explicit:
                raise
            skipped[topic] = ("module not written yet" if exc.name == module
                              else f"import failed: {exc}")
        except Exception as exc:
            if explicit:
                raise
            skipped[topic] = f"import failed: {type(exc).__name__}: {exc}"
    return skipped


def available_topics() -> list[str]:
    """Topics whose module exists (without importing them)."""
    return [t for t, m in TOPIC_MODULES.items() if importlib.util.find_spec(m) is not None]


def all_phases() -> list[Phase]:
    """Every registered phase of every topic that exists, in topic order then registration
    order. Topic modules not written yet are skipped (see `load_topics`)."""
    load_topics()
    order = {topic: i for i, topic in enumerate(TOPIC_MODULES)}
    return sorted(_PHASES.values(), key=lambda p: order.get(p.topic, len(order)))


def select(names: Iterable[str]) -> list[Phase]:
    """Phases named by phase name or topic; all when `names` is empty.

    Raises UnknownPhase listing the valid topics and phase names.
    """
    names = list(names)
    if not names:
        return all_phases()
    chosen: list[Phase] = []
    for name in names:
        if name in TOPIC_MODULES:
            load_topics([name])
            chosen.extend(p for p in _PHASES.values() if p.topic == name)
            continue
        topic = name.split(".", 1)[0]
        if topic in TOPIC_MODULES and topic in available_topics():
            load_topics([topic])
        if name not in _PHASES:
            valid = [p.name for p in all_phases()]
            raise UnknownPhase(
                f"unknown phase or topic {name!r}; topics: {', '.join(TOPIC_MODULES)}; "
                f"phases: {', '.join(valid)}"
            )
        chosen.append(_PHASES[name])
    return list(dict.fromkeys(chosen))
