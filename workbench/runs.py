"""Saved runs: the engine runs under `runs/<run-id>/`, listed, loaded (typed), compared and
repaired.

A run directory (layout: `workbench.engine.journal`) is in one of these states:

- complete: `summary.json` exists (written by the engine when the run ended: state `stopped`
  or `failed`, or a repaired run).
- running: no summary yet and a live process holds the run's journal lock.
- crashed: no summary and nobody holds the lock (the process was killed, kill -9, or the
  machine went down). `repair` rebuilds the Parquet files from the write-ahead journal and a
  `summary.json` marked `"repaired": true`, state `failed`, error `REPAIRED_ERROR`, with the
  orders, fills, positions and PnL the journal holds (the event counts and latency of the
  run died with it). `load` repairs a crashed run when it opens it.

    workbench runs list [--out DIR]
    workbench runs show RUN [--out DIR]            latency per stage, PnL, spike attribution
    workbench runs compare RUN_A RUN_B [--out DIR] per-stage P50/P99 of both and B/A
    workbench runs repair RUN_ID [--out DIR]

RUN is a run id under the runs directory (`--out`; default `$WORKBENCH_RUNS`, else the
project's `runs/`) or the path of a run directory. `load(RUN)` returns a typed `Run`: config,
status, fills, orders, positions, spikes (`SpikeSummary`), per-stage latency and histograms.

Errors (an unknown run, a running run asked to repair, a crashed run without a journal) raise
EngineError naming the run directory and what was expected.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from hdrh.histogram import HdrHistogram

from workbench.engine import journal
from workbench.engine.positions import Position
from workbench.engine.run import default_runs_dir
from workbench.engine.status import StageLatency
from workbench.errors import EngineError
from workbench.latency.recorder import decode_histogram
from workbench.latency.spikes import (
    Cause,
    Spike,
    SpikeLog,
    SpikeSummary,
    dominant_stage,
    primary_cause,
)
from workbench.latency.stages import SPIKE_STAGES, STAGES

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


def run_path(run_id: str, root: Path | str | None = None) -> Path:
    """The directory of run `run_id` under `root` (default `default_runs_dir()`). Raises
    EngineError when there is none."""
    path = Path(root or default_runs_dir()) / run_id
    if not run_id or "/" in run_id or not path.is_dir():
        raise EngineError(f"expected a run directory at {path}, got none")
    return path


def find(run: str | Path, root: Path | str | None = None) -> Path:
    """The directory of `run`: a run id under `root`, or a path to a run directory. Raises
    EngineError when it is neither."""
    path = Path(run)
    if path.is_dir() and ((path / SUMMARY).exists() or journal.has_journal(path)):
        return path
    return run_path(str(run), root)


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


def list_runs(root: Path | str | None = None) -> list[SavedRun]:
    """Every run directory under `root` (by run id: the ids start with their start time);
    [] when `root` does not exist. Crashed runs are listed as such, not repaired."""
    root = Path(root or default_runs_dir())
    if not root.is_dir():
        return []
    return [describe(p) for p in sorted(root.iterdir())
            if p.is_dir() and ((p / SUMMARY).exists() or journal.has_journal(p))]


@dataclass(frozen=True)
class Run:
    """A saved run, loaded. info: what `describe` says (state, error, counts). config: the
    EngineConfig as a dict (`EngineConfig.to_dict`). status: summary.json ({} while running).
    fills, orders: the journaled records (polars, the journal's columns, plus `symbol`).
    positions: one row per symbol (symbol, qty, avg_price, realized_pnl, unrealized_pnl,
    fees, net_pnl; quote units). spikes: the spike attribution (`SpikeSummary`; rebuilt from
    the journal's spike records for runs saved without one). latency: stage name ->
    StageLatency (ns). series: stage name -> per-second {"t_s", "p50_ns", "p99_ns",
    "max_ns"} lists. histograms: stage name -> encoded HdrHistogram (`histogram(stage)`)."""

    info: SavedRun
    config: dict[str, Any]
    status: dict[str, Any]
    fills: pl.DataFrame
    orders: pl.DataFrame
    positions: pl.DataFrame
    spikes: SpikeSummary
    latency: dict[str, StageLatency]
    series: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    histograms: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def state(self) -> str:
        return self.info.state

    @property
    def repaired(self) -> bool:
        return self.info.repaired

    @property
    def dispatch(self) -> str:
        """The dispatch mode at the end of the run (at its start when it has no summary)."""
        return self.status.get("dispatch") or self.config.get("dispatch", "")

    def histogram(self, stage: str) -> HdrHistogram | None:
        """The stage's latency histogram (ns), None when the run recorded none for it."""
        encoded = self.histograms.get(stage)
        return decode_histogram(encoded) if encoded else None

    def pnl_curve(self) -> tuple[list[float], list[float], list[float]]:
        """(seconds since the first fill, realized PnL net of fees after each fill, position
        after each fill): the run's PnL (quote units) and position (base units, every symbol
        summed; side 1 buys, 2 sells) from its fills."""
        if self.fills.is_empty():
            return [], [], []
        f = self.fills.sort("ts_ns")
        t0 = f["ts_ns"][0]
        net = (f["realized_pnl"] - f["fee"]).cum_sum()
        signed = pl.when(f["side"] == 1).then(f["qty"]).otherwise(-f["qty"])
        position = f.select(signed.cum_sum()).to_series()
        return ([(t - t0) / 1e9 for t in f["ts_ns"].to_list()], net.to_list(),
                position.to_list())

    def describe(self) -> str:
        """One line: id, state, source, dispatch, events, elapsed, fills, net PnL, spikes."""
        i = self.info
        events = "?" if i.events is None else f"{i.events:,}"
        return (f"run {i.run_id}: {i.state}{' (repaired)' if i.repaired else ''}, source "
                f"{i.source}, dispatch {self.dispatch}, {events} events in {i.elapsed_s:.1f} s, "
                f"{i.fills} fills, net PnL {i.net_pnl:+,.4f}, {self.spikes.count:,} spikes")


def load(run: str | Path, root: Path | str | None = None) -> Run:
    """The saved run `run` (a run id under `root`, or a run directory's path) as a typed
    `Run`; a crashed run is repaired first (see `repair`). Raises EngineError for an unknown
    run."""
    path = find(run, root)
    info = describe(path)
    if info.state == "crashed":
        info = repair(path.name, path.parent)
    status = orjson.loads((path / SUMMARY).read_bytes()) if (path / SUMMARY).exists() else {}
    tables = _tables(path, info.state)
    config = status.get("config") or journal.read_meta(path).get("config", {})
    latency_file = path / "latency.json"
    lat = orjson.loads(latency_file.read_bytes()) if latency_file.exists() else {}
    summary = lat.get("summary") or status.get("latency") or {}
    names = _symbol_names(status, config)
    return Run(
        info=info, config=config, status=status,
        fills=_with_symbols(tables.get("fills"), names),
        orders=_with_symbols(tables.get("orders"), names),
        positions=_positions(status, names), spikes=_spikes(status, tables, config),
        latency={s.value: StageLatency(**summary[s.value]) if s.value in summary
                 else StageLatency() for s in STAGES},
        series=lat.get("series", {}), histograms=lat.get("histograms", {}))


def _tables(path: Path, state: str) -> dict[str, pl.DataFrame]:
    """The run's tables: its Parquet files (a finished run), else its journal so far."""
    if state == "running":
        return {name: pl.from_arrow(t.rows) for name, t in journal.read_journal(path).items()}
    return {name: pl.read_parquet(path / f"{name}.parquet") for name in journal.TABLES
            if (path / f"{name}.parquet").exists()}


def _symbol_names(status: dict[str, Any], config: dict[str, Any]) -> dict[int, str]:
    """symbol_id -> symbol: from the summary's positions, else the config's symbols in order
    (the registry numbers a run's symbols as it subscribes them)."""
    names = {p["symbol_id"]: p["symbol"] for p in status.get("positions", []) if p.get("symbol")}
    for i, symbol in enumerate(config.get("source", {}).get("symbols", []), 1):
        names.setdefault(i, symbol)
    return names


def _with_symbols(frame: pl.DataFrame | None, names: dict[int, str]) -> pl.DataFrame:
    if frame is None:
        return pl.DataFrame()
    return frame.with_columns(pl.col("symbol_id").replace_strict(
        names, default=None, return_dtype=pl.String).alias("symbol"))


def _positions(status: dict[str, Any], names: dict[int, str]) -> pl.DataFrame:
    cols = ("symbol", "qty", "avg_price", "realized_pnl", "unrealized_pnl", "fees", "net_pnl")
    rows = [{"symbol": p.get("symbol") or names.get(p["symbol_id"], f"id {p['symbol_id']}"),
             **{k: p.get(k) for k in cols[1:]}} for p in status.get("positions", [])]
    return pl.DataFrame(rows, schema={"symbol": pl.String, **dict.fromkeys(cols[1:],
                                                                            pl.Float64)})


def _spikes(status: dict[str, Any], tables: dict[str, pl.DataFrame],
            config: dict[str, Any]) -> SpikeSummary:
    """The run's SpikeSummary: saved in summary.json, else rebuilt from its spike records
    (`causes` as the engine journals them: `name:detail:duration_ns`, `;`-joined)."""
    if "spike_summary" in status:
        return SpikeSummary.from_dict(status["spike_summary"])
    threshold_us = config.get("housekeeping", {}).get("spike_threshold_us", 1000.0)
    rows = tables.get("spikes")
    origin = int(rows["end_ns"].min()) if rows is not None and rows.height else 0
    log = SpikeLog(threshold_us, origin_ns=origin)
    for r in (rows.iter_rows(named=True) if rows is not None else ()):
        stages = {s.value: r[f"{s.value}_ns"] for s in SPIKE_STAGES}
        causes = tuple(_cause(text, r["end_ns"]) for text in (r["causes"] or "").split(";")
                       if text)
        log.add(Spike(r["seq"], r["end_ns"], r["tick_to_trade_ns"], stages, r["queue_depth"],
                      causes, dominant_stage(stages), primary_cause(causes)))
    return log.summary()


def _cause(text: str, end_ns: int) -> Cause:
    name, _, rest = text.partition(":")
    detail, _, duration = rest.rpartition(":")
    return Cause(name, int(duration) if duration.isdigit() else 0, end_ns, detail)


def repair(run_id: str, root: Path | str | None = None) -> SavedRun:
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

def compare_rows(a: Run, b: Run) -> list[tuple[str, StageLatency, StageLatency]]:
    """(stage, A's figures, B's figures) for every stage either run measured, in stage
    order."""
    return [(s.value, a.latency[s.value], b.latency[s.value]) for s in STAGES
            if a.latency[s.value].count or b.latency[s.value].count]


def ratio(a_ns: int, b_ns: int) -> float | None:
    """B / A (None when A is 0): above 1, B is slower."""
    return b_ns / a_ns if a_ns else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`workbench runs list | show RUN | compare RUN_A RUN_B | repair RUN_ID`, each with
    `--out DIR`."""
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every run under --out, with its state")
    show = sub.add_parser("show", help="one run: latency per stage, PnL, spike attribution")
    show.add_argument("run", help="run id under --out, or a run directory")
    compare = sub.add_parser("compare", help="two runs: per-stage P50/P99 and the ratio B/A")
    compare.add_argument("run_a", help="run id under --out, or a run directory")
    compare.add_argument("run_b", help="run id under --out, or a run directory")
    fix = sub.add_parser("repair", help="rebuild a crashed run from its write-ahead journal")
    fix.add_argument("run_id", help="run id under --out")
    for p in (listing, show, compare, fix):
        p.add_argument("--out", default=None,
                       help="the runs directory (default: $WORKBENCH_RUNS, else the "
                            "project's runs/)")


def _us(ns: int) -> str:
    return f"{ns / 1e3:,.1f}"


def ratio_text(value: float | None) -> str:
    """A ratio as the tables show it: `1.23x`, or `1/450x` below 0.1 (`-` for none)."""
    if value is None:
        return "-"
    return f"{value:.3g}x" if value >= 0.1 or value == 0 else f"1/{1 / value:,.0f}x"


def main(args: argparse.Namespace) -> int:
    """List, show, compare or repair runs (exit 0; errors are EngineError, exit 1 by the
    CLI)."""
    from rich.table import Table

    from workbench.engine.run import cli_console, latency_table, spike_table

    console = cli_console()
    out = args.out or default_runs_dir()
    if args.action == "repair":
        before = describe(run_path(args.run_id, out)).state
        run = repair(args.run_id, out)
        if before == "crashed":
            console.print(f"run {run.run_id}: repaired: {run.fills} fills and {run.orders} "
                          f"orders rebuilt from the write-ahead journal (state {run.state})",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"run {run.run_id}: complete ({run.state}), nothing to repair",
                          highlight=False, soft_wrap=True)
        return 0
    if args.action == "show":
        loaded = load(args.run, out)
        console.print(loaded.describe(), highlight=False, soft_wrap=True)
        console.print(latency_table({s: loaded.latency[s.value] for s in STAGES}))
        if not loaded.positions.is_empty():
            table = Table(title="positions and PnL (quote units)")
            for col in loaded.positions.columns:
                table.add_column(col, justify="left" if col == "symbol" else "right")
            for p in loaded.positions.iter_rows(named=True):
                table.add_row(p["symbol"], f"{p['qty']:+g}", f"{p['avg_price']:,.2f}",
                              *(f"{p[k]:+,.4f}" for k in ("realized_pnl", "unrealized_pnl")),
                              f"{p['fees']:,.4f}", f"{p['net_pnl']:+,.4f}")
            console.print(table)
        if loaded.spikes.count:
            console.print(spike_table(loaded.spikes))
        return 0
    if args.action == "compare":
        a, b = load(args.run_a, out), load(args.run_b, out)
        table = Table(title=f"A = {a.run_id} ({a.dispatch}), B = {b.run_id} ({b.dispatch}): "
                            "latency per stage (µs), ratio B/A (above 1: B slower)")
        for col in ("stage", "A P50", "B P50", "P50 B/A", "A P99", "B P99", "P99 B/A",
                    "A count", "B count"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for stage, x, y in compare_rows(a, b):
            table.add_row(stage, _us(x.p50_ns), _us(y.p50_ns),
                          ratio_text(ratio(x.p50_ns, y.p50_ns)), _us(x.p99_ns),
                          _us(y.p99_ns), ratio_text(ratio(x.p99_ns, y.p99_ns)),
                          f"{x.count:,}", f"{y.count:,}")
        console.print(table)
        for name, run in (("A", a), ("B", b)):
            console.print(f"{name}: {run.describe()}", highlight=False, soft_wrap=True)
        return 0
    table = Table(title=f"runs in {out}")
    for col in ("run", "state", "source", "events", "orders", "fills", "net PnL", "error"):
        table.add_column(col, justify="right" if col in ("events", "orders", "fills",
                                                          "net PnL") else "left")
    for run in list_runs(out):
        state = f"{run.state} (repaired)" if run.repaired else run.state
        table.add_row(run.run_id, state, run.source,
                      "-" if run.events is None else f"{run.events:,}", f"{run.orders:,}",
                      f"{run.fills:,}", f"{run.net_pnl:+,.4f}", run.error or "")
    console.print(table)
    return 0
