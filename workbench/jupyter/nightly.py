"""The nightly report's parts that are not tables: progress lines, the status file `workbench
report` reads, and the dispatch phases' per-stage latency CDFs and spike attribution.

Progress: every phase prints `hft-report: phase k of n: NAME` when it starts and its verdict
when it ends (flushed at once: papermill logs them, `workbench report` shows them as they come,
and a notebook run from JupyterLab shows them in the cell).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.jupyter import plots
from workbench.latency.recorder import decode_histogram
from workbench.latency.spikes import SpikeSummary
from workbench.latency.stages import LOCAL_STAGES

PROGRESS_PREFIX = "hft-report: "
DISPATCH_TOPIC = "dispatch"


def progress_printer(phases: list[Any]) -> tuple[Callable[[Any, str], None],
                                                 Callable[[Any], None]]:
    """(progress, on_result) for `run_phases`: a line when a phase starts, one when it ends."""
    n = len(phases)
    index = {p.name: i for i, p in enumerate(phases, 1)}
    started: set[str] = set()
    t0 = time.monotonic()

    def progress(phase: Any, _stage: str) -> None:
        if phase.name not in started:
            started.add(phase.name)
            print(f"{PROGRESS_PREFIX}phase {index.get(phase.name, '?')} of {n}: {phase.name} "
                  f"({time.monotonic() - t0:,.0f} s so far)", flush=True)

    def done(res: Any) -> None:
        ratio = f"{res.ratio:.3g}x, " if res.ratio is not None else ""
        print(f"{PROGRESS_PREFIX}phase {index.get(res.phase.name, '?')} of {n}: "
              f"{res.phase.name}: {res.verdict} ({ratio}{res.seconds:.1f} s)", flush=True)

    return progress, done


def write_status(path: Path | str, results: list[Any]) -> dict[str, Any]:
    """Write what `workbench report` decides its exit code on: phases run, and the names of
    those that errored or failed their check (JSON). Returns it."""
    status = {"phases": len(results),
              "errors": [r.phase.name for r in results if r.status == "error"],
              "invalid": [r.phase.name for r in results if r.status == "invalid"]}
    Path(path).write_text(json.dumps(status), encoding="utf-8")
    return status


def dispatch_figures(results: list[Any]) -> list[Any]:
    """For each dispatch phase of tonight's run: its baseline and optimized variants' latency
    CDF per stage (one small figure per stage) and their spike attribution (from the
    variants' extras: `histograms`, `spike_summary`). [] when no dispatch phase carries them."""
    from bokeh.layouts import column, gridplot

    out = []
    for res in results:
        if res.phase.topic != DISPATCH_TOPIC or res.status != "ok":
            continue
        sides = {label: res.baseline.get("extra", {}) if side == "baseline"
                 else res.optimized.get("extra", {})
                 for side, label in (("baseline", res.phase.baseline_label),
                                     ("optimized", res.phase.optimized_label))}
        if not all("histograms" in e and "spike_summary" in e for e in sides.values()):
            continue
        figures = []
        for stage in (s.value for s in LOCAL_STAGES):
            curves = {label: plots.cdf_points(decode_histogram(e["histograms"][stage]))
                      for label, e in sides.items() if stage in e["histograms"]}
            if curves:
                figures.append(plots.cdf_comparison_figure(
                    curves, title=f"{res.phase.name}: {stage}"))
        grid = gridplot([figures[i:i + 3] for i in range(0, len(figures), 3)],
                        width=plots.WIDTH * 2 // 3, height=plots.HEIGHT)
        spikes = plots.spike_attribution_figure(
            {label: SpikeSummary.from_dict(e["spike_summary"]) for label, e in sides.items()})
        out.append(column(grid, spikes))
    return out
