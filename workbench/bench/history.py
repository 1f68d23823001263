"""The results store: every bench run appends its records to `data/bench/history.parquet`.

Location: `$WORKBENCH_BENCH_HISTORY` (a parquet file path) if set, else
`<repo root>/data/bench/history.parquet` (git-ignored). One row per phase per run; the nested
`machine` dict becomes `cpu_model`, `cores`, `python`, `platform` columns plus `packages` (JSON
text), and `extra` is stored as JSON text. The nightly report reads it with `load()`, and
`trends()` / `regressions()` compare a run's within-run ratios with the noise band of at least
MIN_HISTORY earlier runs of the same mode (`Trend`).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench.shared_data import REPO_ROOT

ENV_VAR = "WORKBENCH_BENCH_HISTORY"


def history_path() -> Path:
    """Where the history parquet lives (env override, else data/bench/ under the repo root)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO_ROOT / "data" / "bench" / "history.parquet"


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k not in ("machine", "extra")}
    machine = record.get("machine") or {}
    for key in ("cpu_model", "cores", "python", "platform"):
        row[key] = machine.get(key)
    row["packages"] = json.dumps(machine.get("packages") or {}, sort_keys=True)
    row["extra"] = json.dumps(record.get("extra") or {}, sort_keys=True, default=str)
    return row


def append(records: Iterable[dict[str, Any]], path: Path | None = None) -> Path:
    """Append run records (as made by `runner.run_phases`) to the history parquet.

    Columns missing on either side are filled with nulls; returns the path written.
    """
    path = path or history_path()
    new = pl.DataFrame([_flat(r) for r in records], infer_schema_length=None)
    if path.exists():
        new = pl.concat([pl.read_parquet(path), new], how="diagonal_relaxed")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    new.write_parquet(tmp)
    tmp.replace(path)
    return path


def load(path: Path | None = None) -> pl.DataFrame:
    """The whole history, oldest first; an empty frame when nothing was recorded yet."""
    path = path or history_path()
    return pl.read_parquet(path) if path.exists() else pl.DataFrame()


MIN_HISTORY = 5  # earlier runs of the same mode a phase needs before it can be flagged
WINDOW = 20  # earlier runs the band is computed from (the newest)
NOISE_MADS = 3.0  # half-width of the noise band in robust standard deviations (1.4826 MAD)
MIN_BAND = 0.05  # ... and never narrower than 5% of the median


@dataclass(frozen=True)
class Trend:
    """One phase's measured ratio in a run against its earlier runs of the same mode.

    latest: the run's ratio (optimized vs baseline, within the run; > 1: optimized better).
    runs: earlier ok runs the band is made of (at most WINDOW). median, low, high: their
    median and the noise band [low, high] (median -+ max(NOISE_MADS * 1.4826 * MAD,
    MIN_BAND * median); MAD: median absolute deviation, a robust spread). status:
    `not enough history` (fewer than MIN_HISTORY earlier runs), `regression` (latest below
    low), `improvement` (above high), `steady` (inside). change: latest / median - 1 (None
    without history)."""

    phase: str
    latest: float
    runs: int
    median: float | None
    low: float | None
    high: float | None
    status: str
    change: float | None

    @property
    def arrow(self) -> str:
        """`↑` above the band, `↓` below it, `→` inside, `·` without enough history."""
        return {"regression": "↓", "improvement": "↑", "steady": "→"}.get(self.status, "·")


def trend(phase: str, earlier: list[float], latest: float, min_runs: int = MIN_HISTORY
          ) -> Trend:
    """`latest` against `earlier` (oldest first; the newest WINDOW count): see `Trend`."""
    before = [v for v in earlier if v is not None and v == v][-WINDOW:]
    if not before:
        return Trend(phase, latest, 0, None, None, None, "not enough history", None)
    median = statistics.median(before)
    mad = statistics.median(abs(v - median) for v in before)
    half = max(NOISE_MADS * 1.4826 * mad, MIN_BAND * abs(median))
    low, high = median - half, median + half
    change = latest / median - 1.0 if median else None
    if len(before) < min_runs:
        status = "not enough history"
    elif latest < low:
        status = "regression"
    elif latest > high:
        status = "improvement"
    else:
        status = "steady"
    return Trend(phase, latest, len(before), median, low, high, status, change)


def trends(history: pl.DataFrame, run_id: str | None = None, quick: bool | None = None,
           min_runs: int = MIN_HISTORY) -> dict[str, Trend]:
    """phase -> Trend of run `run_id` (default: the newest run) against the earlier ok runs
    of the same mode (`quick` as that run's, unless given). Only within-run ratios are
    compared: absolute figures depend on the machine's load, ratios much less."""
    if history.is_empty():
        return {}
    ok = history.filter((pl.col("status") == "ok") & pl.col("ratio").is_not_null())
    if ok.is_empty():
        return {}
    ordered = ok.sort("time_utc", maintain_order=True)
    run_id = run_id or ordered["run_id"][-1]
    mine = ordered.filter(pl.col("run_id") == run_id)
    if mine.is_empty():
        return {}
    quick = bool(mine["quick"][0]) if quick is None else quick
    start = mine["time_utc"].min()
    earlier = ordered.filter((pl.col("quick") == quick) & (pl.col("time_utc") < start))
    out = {}
    for row in mine.iter_rows(named=True):
        before = earlier.filter(pl.col("phase") == row["phase"])["ratio"].to_list()
        out[row["phase"]] = trend(row["phase"], before, float(row["ratio"]), min_runs)
    return out


def regressions(history: pl.DataFrame, run_id: str | None = None, quick: bool | None = None,
                min_runs: int = MIN_HISTORY) -> pl.DataFrame:
    """The phases of run `run_id` (default: the newest) whose ratio fell below the noise band
    of at least `min_runs` earlier runs of the same mode (`trends`). Columns: phase, latest,
    median, low, change (latest / median - 1, negative: worse), runs."""
    schema = {"phase": pl.String, "latest": pl.Float64, "median": pl.Float64,
              "low": pl.Float64, "change": pl.Float64, "runs": pl.Int64}
    rows = [{"phase": t.phase, "latest": t.latest, "median": t.median, "low": t.low,
             "change": t.change, "runs": t.runs}
            for t in trends(history, run_id, quick, min_runs).values()
            if t.status == "regression"]
    return pl.DataFrame(rows, schema=schema)
