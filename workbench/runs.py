"""Saved runs: the engine runs under `runs/<run-id>/`, listed, loaded (typed) and repaired.

A run directory (layout: `workbench.engine.journal`) is in one of these states:

- complete: `summary.json` exists (written by the engine when the run ended: state `stopped`
  or `failed`, or a repaired run).
- running: no summary yet and a live process holds the run's journal lock.
- crashed: no summary and nobody holds the lock (the process was killed, kill -9, or the
  machine went down). `repair` rebuilds the Parquet files from the write-ahead journal and a
  `summary.json` marked `"repaired": true`, state `failed`, error `REPAIRED_ERROR`, with the
  orders, fills, positions and PnL the journal holds (the event counts and latency of the
  run died with it). `load` repairs a crashed run when it opens it.

    workbench runs list [--out runs]
    workbench runs repair RUN_ID [--out runs]

Errors (an unknown run, a running run asked to repair, a crashed run without a journal) raise
EngineError naming the run directory and what was expected.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from workbench.engine import journal
from workbench.engine.positions import Position
from workbench.errors import EngineError

REPAIRED_ERROR = "crashed: rebuilt from the write-ahead journal"
SUMMARY = "summary.json"


@dataclass(frozen=True, slots=True)
class SavedRun:
    """One run directory. state: stopped | failed (complete) | running | crashed (see the
    module docstring). error: why it failed (None otherwise). repaired: its summary was
    rebuilt from the journal. source: the source spec (`sim`, `replay:PATH`, ...). events:
    events processed (None when unknown: running, crashed or repaired). orders: orders acked
    by the paper broker; fills: fills booked (for a running or crashed run: those journaled so
    far). net_pnl: quote units (0.0 when unknown). elapsed_s: run time (0.0 when unknown)."""

    run_id: str
    path: Path
    state: str
    error: str | None
    repaired: bool
    source: str
    events: int | None
    orders: int
    fills: int
    net_pnl: float
    elapsed_s: float


def run_path(run_id: str, root: Path | str = "runs") -> Path:
    """The directory of run `run_id` under `root`. Raises EngineError when there is none."""
    path = Path(root) / run_id
    if not run_id or "/" in run_id or not path.is_dir():
        raise EngineError(f"expected a run directory at {path}, got none")
    return path


def describe(path: Path | str) -> SavedRun:
    """What the run directory `path` holds, as it is (nothing is repaired)."""
    path = Path(path)
    summary_path = path / SUMMARY
    if summary_path.exists():
        s = orjson.loads(summary_path.read_bytes())
        return SavedRun(
            run_id=s.get("run_id", path.name), path=path, state=s["state"],
            error=s.get("error"), repaired=bool(s.get("repaired", False)),
            source=s.get("source", ""), events=s.get("events"), orders=s.get("orders", 0),
            fills=s.get("fills", 0), net_pnl=s.get("pnl", {}).get("net_pnl", 0.0),
            elapsed_s=s.get("elapsed_s", 0.0))
    meta = journal.read_meta(path)
    tables = journal.read_journal(path)
    fills = tables.get("fills")
    return SavedRun(
        run_id=meta.get("run_id", path.name), path=path,
        state="running" if journal.in_use(path) else "crashed", error=None, repaired=False,
        source=_source_of(meta), events=None, orders=_acks(tables),
        fills=fills.rows.num_rows if fills is not None else 0, net_pnl=0.0, elapsed_s=0.0)


def list_runs(root: Path | str = "runs") -> list[SavedRun]:
    """Every run directory under `root` (by run id: the ids start with their start time);
    [] when `root` does not exist. Crashed runs are listed as such, not repaired."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [describe(p) for p in sorted(root.iterdir())
            if p.is_dir() and ((p / SUMMARY).exists() or journal.has_journal(p))]


def load(run_id: str, root: Path | str = "runs") -> SavedRun:
    """Run `run_id` under `root`, repaired first when it crashed (see `repair`). Raises
    EngineError for an unknown run."""
    run = describe(run_path(run_id, root))
    return repair(run_id, root) if run.state == "crashed" else run


def repair(run_id: str, root: Path | str = "runs") -> SavedRun:
    """Rebuild a crashed run from its write-ahead journal: `<table>.parquet` from every
    record that reached the journal, and `summary.json` marked repaired (state failed, error
    REPAIRED_ERROR); the journal is removed once the summary is written. A complete run is
    left as it is (a journal left beside its summary is removed: the Parquet files were
    written before the summary). Returns the run. Raises EngineError when the run is still
    running, or crashed without a journal to rebuild from."""
    path = run_path(run_id, root)
    if journal.in_use(path):
        raise EngineError(f"expected a finished or crashed run at {path}, got one still "
                          f"running (pid {journal.read_meta(path).get('pid')} holds its journal)")
    if (path / SUMMARY).exists():
        shutil.rmtree(path / journal.JOURNAL_DIR, ignore_errors=True)
        return describe(path)
    if not journal.has_journal(path):
        raise EngineError(f"expected {path / SUMMARY} or a write-ahead journal in "
                          f"{path / journal.JOURNAL_DIR}, found neither: nothing to rebuild from")
    meta = journal.read_meta(path)
    tables = journal.rebuild(path)
    journal.write_json(path / SUMMARY, _repaired_summary(path, meta, tables))
    shutil.rmtree(path / journal.JOURNAL_DIR, ignore_errors=True)
    return describe(path)


def _source_of(meta: dict[str, Any]) -> str:
    return meta.get("config", {}).get("source", {}).get("source", "")


def _acks(tables: dict[str, journal.JournalTable]) -> int:
    orders = tables.get("orders")
    if orders is None:
        return 0
    return int(pl.from_arrow(orders.rows).filter(pl.col("status") == "ack").height)


def _repaired_summary(path: Path, meta: dict[str, Any],
                      tables: dict[str, journal.JournalTable]) -> dict[str, Any]:
    """summary.json of a crashed run: what its journal holds, in RunStatus's field names."""
    rows = {name: pl.from_arrow(t.rows) for name, t in tables.items()}
    orders = rows.get("orders", pl.DataFrame())
    acks = _acks(tables)
    positions = []
    if "positions" in rows:
        for r in rows["positions"].group_by("symbol_id", maintain_order=True).last().sort(
                "symbol_id").iter_rows(named=True):
            p = Position(r["symbol_id"], r["qty"], r["avg_price"], r["realized_pnl"],
                         r["fees"], r["mark"])
            positions.append({"symbol_id": p.symbol_id, "qty": p.qty, "avg_price": p.avg_price,
                              "realized_pnl": p.realized_pnl, "unrealized_pnl": p.unrealized_pnl,
                              "fees": p.fees, "net_pnl": p.net_pnl, "mark": p.mark})
    pnl = {k: sum(p[k] for p in positions)
           for k in ("realized_pnl", "unrealized_pnl", "fees", "net_pnl")}
    config = meta.get("config", {})
    return {
        "run_id": meta.get("run_id", path.name), "state": "failed", "error": REPAIRED_ERROR,
        "repaired": True, "source": _source_of(meta), "dispatch": config.get("dispatch", ""),
        "orders": acks, "orders_rejected": orders.height - acks,
        "fills": rows["fills"].height if "fills" in rows else 0,
        "spikes": rows["spikes"].height if "spikes" in rows else 0,
        "positions": positions, "pnl": pnl, "run_dir": str(path),
        "journal": {name: {"rows": t.rows.num_rows, "cut_short": t.cut_short}
                    for name, t in tables.items()},
        "pid": meta.get("pid"), "started_unix_ns": meta.get("started_unix_ns"),
        "config": config,
    }


# ---- `workbench runs` ---------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`workbench runs list` and `workbench runs repair RUN_ID`, both with `--out DIR`."""
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every run under --out, with its state")
    fix = sub.add_parser("repair", help="rebuild a crashed run from its write-ahead journal")
    fix.add_argument("run_id")
    for p in (listing, fix):
        p.add_argument("--out", default="runs", help="the runs directory (default runs)")


def main(args: argparse.Namespace) -> int:
    """List the runs, or repair one (exit 0; errors are EngineError, exit 1 by the CLI)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.action == "repair":
        before = describe(run_path(args.run_id, args.out)).state
        run = repair(args.run_id, args.out)
        if before == "crashed":
            console.print(f"run {run.run_id}: repaired: {run.fills} fills and {run.orders} "
                          f"orders rebuilt from the write-ahead journal (state {run.state})",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"run {run.run_id}: complete ({run.state}), nothing to repair",
                          highlight=False, soft_wrap=True)
        return 0
    table = Table(title=f"runs in {args.out}")
    for col in ("run", "state", "source", "events", "orders", "fills", "net PnL", "error"):
        table.add_column(col, justify="right" if col in ("events", "orders", "fills",
                                                          "net PnL") else "left")
    for run in list_runs(args.out):
        state = f"{run.state} (repaired)" if run.repaired else run.state
        table.add_row(run.run_id, state, run.source,
                      "-" if run.events is None else f"{run.events:,}", f"{run.orders:,}",
                      f"{run.fills:,}", f"{run.net_pnl:+,.4f}", run.error or "")
    console.print(table)
    return 0
