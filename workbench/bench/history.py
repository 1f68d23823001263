"""The results store: every bench run appends its records to `data/bench/history.parquet`.

Location: `$WORKBENCH_BENCH_HISTORY` (a parquet file path) if set, else
`<repo root>/data/bench/history.parquet` (git-ignored). One row per phase per run; the nested
`machine` dict becomes `cpu_model`, `cores`, `python`, `platform` columns plus `packages` (JSON
text), and `extra` is stored as JSON text. The nightly report reads it with `load()` and flags
regressions with `regressions()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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


def regressions(history: pl.DataFrame, window: int = 7, threshold: float = 0.10,
                quick: bool | None = None) -> pl.DataFrame:
    """Phases whose latest run is worse than the median of their previous `window` runs.

    Compared per phase and variant (optimized and baseline): P99 (`*_p99_ns`, higher is worse)
    and throughput (`*_items_per_s`, lower is worse). Flagged when the latest value is more than
    `threshold` (10%) worse than that median. Only ok rows count; `quick` restricts to quick or
    full runs (None: both). Returns columns phase, variant, figure, latest, median, change
    (latest/median - 1, signed so that positive is worse), runs (how many in the median).
    """
    schema = {"phase": pl.String, "variant": pl.String, "figure": pl.String,
              "latest": pl.Float64, "median": pl.Float64, "change": pl.Float64,
              "runs": pl.Int64}
    if history.is_empty():
        return pl.DataFrame(schema=schema)
    df = history.filter(pl.col("status") == "ok")
    if quick is not None:
        df = df.filter(pl.col("quick") == quick)
    rows = []
    ordered = df.sort("time_utc", maintain_order=True)
    for (phase,), group in ordered.group_by(["phase"], maintain_order=True):
        for variant in ("optimized", "baseline"):
            for figure, sign in (("p99_ns", 1.0), ("items_per_s", -1.0)):
                col = f"{variant}_{figure}"
                if col not in group.columns:
                    continue
                values = group[col].drop_nulls().cast(pl.Float64).to_list()
                if len(values) < 2:
                    continue
                latest, before = values[-1], values[-1 - window:-1]
                median = float(pl.Series(before).median())
                if median == 0:
                    continue
                change = sign * (latest / median - 1.0)
                if change > threshold:
                    rows.append({"phase": phase, "variant": variant, "figure": figure,
                                 "latest": latest, "median": median, "change": change,
                                 "runs": len(before)})
    return pl.DataFrame(rows, schema=schema)
