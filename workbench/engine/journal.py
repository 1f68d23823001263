"""Journal: orders, fills, positions and spikes of a run, journaled ahead, written as Parquet.

Layout of `runs/<run-id>/`:

    journal/run.json         the run's id, the writing process's pid, its start time and its
                             config (written when the journal opens)
    journal/lock             locked (flock) by the writing process while the run goes
    journal/<table>.arrows   the write-ahead journal: one Arrow IPC stream per table (Arrow
                             columnar format, "IPC Streaming Format"), one record batch per flush
    <table>.parquet          after a clean close, from the journal (tables with records only)
    summary.json, latency.json   written by the engine when the run ends (orjson)

Write path: the hot path only appends a dict to a Python list (`append`). Every
`journal_flush_ms` (HousekeepingConfig, 100 ms by default) the engine thread calls `flush()`,
which hands the lists to the writer thread; the writer appends each table's rows as one record
batch to its stream, written straight to the OS (no buffer in this process). `close()` writes
the rest, ends and fsyncs the streams, and writes the Parquet files from them; the engine then
writes summary.json and `discard()` removes `journal/`.

Worst-case loss on a crash (kill -9 of the process): the records booked since the last flush,
at most `journal_flush_ms` (100 ms by default), plus the time the flush itself waited: the
engine thread runs it between batches and the writer thread needs the GIL (a few ms on an idle
machine, more on a loaded one). What reached the OS survives a killed process; only an OS crash
or power loss before the fsync on close can lose more. A stream cut short inside a batch reads
back up to its last whole batch (`read_table`). `rebuild(run_dir)` writes the Parquet files
from what survived; `workbench.runs.repair` uses it and rebuilds summary.json.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from workbench.errors import EngineError
from workbench.latency.stages import SpikeCause

log = logging.getLogger("workbench.engine.journal")

JOURNAL_DIR = "journal"
META_FILE = "run.json"
LOCK_FILE = "lock"
STREAM_SUFFIX = ".arrows"

_I64, _F64, _STR, _BOOL = pa.int64(), pa.float64(), pa.string(), pa.bool_()
# the columns of each table, as the Executor (orders, fills, positions) and the engine's spike
# log (spikes) write them; a record with other fields is refused (Journal.errors)
SCHEMAS: dict[str, pa.Schema] = {
    "orders": pa.schema([
        ("order_id", _I64), ("symbol_id", _I64), ("side", _I64), ("qty", _F64),
        ("order_type", _STR), ("price", _F64), ("post_only", _BOOL), ("tag", _STR),
        ("ts_ns", _I64), ("seq", _I64), ("status", _STR)]),
    "fills": pa.schema([
        ("order_id", _I64), ("symbol_id", _I64), ("side", _I64), ("price", _F64),
        ("qty", _F64), ("fee", _F64), ("liquidity", _STR), ("ts_ns", _I64), ("seq", _I64),
        ("realized_pnl", _F64)]),
    "positions": pa.schema([
        ("ts_ns", _I64), ("symbol_id", _I64), ("qty", _F64), ("avg_price", _F64),
        ("realized_pnl", _F64), ("fees", _F64), ("mark", _F64)]),
    "spikes": pa.schema([
        ("seq", _I64), ("end_ns", _I64), ("tick_to_trade_ns", _I64), ("parse_ns", _I64),
        ("queue_ns", _I64), ("book_ns", _I64), ("strategy_ns", _I64), ("order_ns", _I64),
        ("queue_depth", _I64), ("causes", _STR)]),
}
TABLES = tuple(SCHEMAS)
# the same columns as polars dtypes: record batches are built through polars because pyarrow's
# own conversions of Python rows import pandas, and a first pandas import in the writer thread
# raced the notebook's (bokeh's) import of it ("partially initialized module 'pandas'")
_POLARS_TYPES = {_I64: pl.Int64, _F64: pl.Float64, _STR: pl.String, _BOOL: pl.Boolean}
POLARS_SCHEMAS = {table: {f.name: _POLARS_TYPES[f.type] for f in schema}
                  for table, schema in SCHEMAS.items()}


class Journal:
    """Writer of one run's records (see the module docstring). `append(table, record)` is the
    hot-path call (a dict of scalars with the fields of SCHEMAS[table]); `flush()` hands the
    records to the writer thread; `close()` writes everything, fsyncs the journal and writes
    the Parquet files; `discard()` removes the journal once the run's summary is written.
    `append` and `flush` come from one thread at a time (the engine runs them under its
    dispatch lock).

    meta: written to `journal/run.json` (JSON-ready: the engine gives run_id, pid, start time,
    config). on_write(cause, start_ns, end_ns): called by the writer thread after each batch,
    so the time it held the GIL can be named as a spike cause (`journal_write`). errors: what
    the writer could not write (`<table>: <error>`), for the run's summary. Raises EngineError
    when another live process holds this run's journal.
    """

    def __init__(self, run_dir: Path | str, meta: dict[str, Any] | None = None,
                 on_write: Callable[[str, int, int], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.on_write = on_write
        self.dir = self.run_dir / JOURNAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.dir)
        if meta is not None:
            write_json(self.dir / META_FILE, meta)
        self._pending: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._counts = dict.fromkeys(TABLES, 0)
        self._streams: dict[str, tuple[pa.NativeFile, ipc.RecordBatchStreamWriter]] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.errors: list[str] = []
        self._writer = threading.Thread(target=self._write_loop, name="wb-journal", daemon=True)
        self._writer.start()

    def append(self, table: str, record: dict[str, Any]) -> None:
        """Add one record to `table` (one of TABLES)."""
        self._pending[table].append(record)

    def flush(self) -> int:
        """Hand the records gathered so far to the writer thread; returns how many."""
        with self._lock:
            batch = {t: rows for t, rows in self._pending.items() if rows}
            if not batch:
                return 0
            self._pending = {t: [] for t in TABLES}
        self._queue.put(batch)
        return sum(len(rows) for rows in batch.values())

    def _write_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            for table, rows in batch.items():
                t0 = time.perf_counter_ns()
                try:
                    self._write_batch(table, rows)
                except Exception as exc:  # a bad record must not kill the writer
                    log.exception("journal: writing %d %s records failed", len(rows), table)
                    self.errors.append(f"{table}: {exc!r}")
                    continue
                self._counts[table] += len(rows)
                if self.on_write is not None:
                    self.on_write(SpikeCause.JOURNAL_WRITE, t0, time.perf_counter_ns())

    def _write_batch(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Append `rows` to the table's stream as one record batch (the writer thread)."""
        schema = SCHEMAS[table]
        if set(rows[0]) != set(schema.names):
            raise EngineError(f"journal {table}: expected the fields {schema.names}, got "
                              f"{list(rows[0])}")
        stream = self._streams.get(table)
        if stream is None:
            sink = pa.OSFile(str(self.dir / f"{table}{STREAM_SUFFIX}"), "wb")
            stream = self._streams[table] = (sink, ipc.new_stream(sink, schema))
        batch = pl.DataFrame(rows, schema=POLARS_SCHEMAS[table]).to_arrow().cast(schema)
        stream[1].write_table(batch)

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write `runs/<run-id>/<name>` (orjson; numpy scalars and arrays allowed), atomically
        (a temporary file renamed over it)."""
        return write_json(self.run_dir / name, data)

    def close(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Flush, wait for the writer, end and fsync the streams, write `<table>.parquet` from
        them (tables with records). Returns the records written per table. Idempotent. Raises
        EngineError when the writer does not finish within `timeout_s`."""
        if self._closed:
            return dict(self._counts)
        self._closed = True
        self.flush()
        self._queue.put(None)
        self._writer.join(timeout_s)
        if self._writer.is_alive():
            raise EngineError(f"journal writer did not finish within {timeout_s} s")
        for sink, writer in self._streams.values():
            writer.close()
            os.fsync(sink.fileno())
            sink.close()
        rebuild(self.run_dir)
        return dict(self._counts)

    def end_run(self) -> str | None:
        """`close()` at the end of a run: None when every record is on disk, else why not (a
        record refused, the writer stuck); never raises."""
        try:
            self.close()
        except Exception as exc:
            log.exception("closing the journal failed")
            return f"journal: {exc!r}"
        return f"journal: {self.errors[0]}" if self.errors else None

    def complete(self, files: dict[str, Callable[[], dict[str, Any]]]) -> str | None:
        """Write the run's closing files (name -> a function building its JSON), in order,
        then remove the journal: the run is complete. None on success, else why it failed
        (the journal is then kept for `workbench runs repair`); never raises."""
        try:
            for name, build in files.items():
                self.write_json(name, build())
            self.discard()
        except Exception as exc:
            log.exception("writing the run files failed")
            return f"run files: {exc!r}"
        return None

    def discard(self) -> None:
        """Remove `journal/` and release the run (after close and the summary). Idempotent."""
        if self._lock_fd is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def counts(self) -> dict[str, int]:
        """Records written to the journal so far per table."""
        return dict(self._counts)


def _take_lock(journal_dir: Path) -> int:
    """Lock `journal_dir/lock` for this process (released when it ends, kill -9 included).
    Raises EngineError when another process holds it."""
    fd = os.open(journal_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EngineError(f"{journal_dir.parent}: expected a run no live process writes, got "
                          f"one in use (pid {read_meta(journal_dir.parent).get('pid')})"
                          ) from None
    return fd


def in_use(run_dir: Path | str) -> bool:
    """True while a live process (this one included) holds the run's journal lock."""
    path = Path(run_dir) / JOURNAL_DIR / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock taken here
    return False


def has_journal(run_dir: Path | str) -> bool:
    """True when the run still has its write-ahead journal (running, or not closed)."""
    return (Path(run_dir) / JOURNAL_DIR).is_dir()


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    """`journal/run.json` of a run ({} when absent or unreadable)."""
    try:
        return orjson.loads((Path(run_dir) / JOURNAL_DIR / META_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


class JournalTable(NamedTuple):
    """One table read back from its stream: the rows, and whether the stream was cut short
    inside a batch (what followed the last whole batch is lost)."""

    rows: pa.Table
    cut_short: bool


def read_table(path: Path | str, table: str) -> JournalTable:
    """The record batches of the stream at `path` up to its end or its first broken batch
    (a stream ends mid-batch when its writer was killed), with `SCHEMAS[table]` for a stream
    that holds none."""
    batches: list[pa.RecordBatch] = []
    cut_short = False
    try:
        with pa.OSFile(str(path)) as source:
            reader = ipc.open_stream(source)
            while True:
                batches.append(reader.read_next_batch())
    except StopIteration:
        pass
    except (pa.ArrowInvalid, OSError) as exc:
        cut_short = True
        log.warning("journal %s: read up to the last whole batch (%d): %s", path,
                    len(batches), exc)
    schema = batches[0].schema if batches else SCHEMAS[table]
    return JournalTable(pa.Table.from_batches(batches, schema=schema), cut_short)


def read_journal(run_dir: Path | str) -> dict[str, JournalTable]:
    """Every table whose stream exists in the run's `journal/`."""
    folder = Path(run_dir) / JOURNAL_DIR
    return {t: read_table(folder / f"{t}{STREAM_SUFFIX}", t) for t in TABLES
            if (folder / f"{t}{STREAM_SUFFIX}").exists()}


def rebuild(run_dir: Path | str) -> dict[str, JournalTable]:
    """Write `<table>.parquet` (atomically) for every journaled table with records. Returns
    what was read (`read_journal`)."""
    run_dir = Path(run_dir)
    tables = read_journal(run_dir)
    for name, table in tables.items():
        if table.rows.num_rows:
            path = run_dir / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(table.rows, tmp)
            os.replace(tmp, path)
    return tables


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` to `path` with orjson (indented; numpy values allowed) through a temporary
    file renamed over it, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                                 | orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, path)
    return path
