"""Journal: orders, fills, positions and spikes of a run, written by a background thread.

Layout of `runs/<run-id>/`: `orders.parquet`, `fills.parquet`, `positions.parquet`,
`spikes.parquet` (polars), `summary.json` and `latency.json` (orjson). While the run goes,
each `flush()` hands the records gathered so far to the writer thread, which writes them as
numbered part files under `parts/`; `close()` writes the rest and joins the parts into one file
per table. The hot path only appends to a Python list: nothing it does waits on disk.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from workbench.errors import EngineError
from workbench.latency.stages import SpikeCause

log = logging.getLogger("workbench.engine.journal")

TABLES = ("orders", "fills", "positions", "spikes")


class Journal:
    """Background writer of one run's records. `append(table, record)` is the hot-path call
    (a dict of scalars: int, float, str, bool); `flush()` hands the records over; `close()`
    writes everything and returns the number of records per table. `append` and `flush` come
    from one thread at a time (the engine runs them under its dispatch lock).

    on_write(name, start_ns, end_ns): called by the writer thread after each part file, so the
    time it held the GIL can be named as a spike cause (`journal_write`)."""

    def __init__(self, run_dir: Path | str,
                 on_write: Callable[[str, int, int], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.on_write = on_write
        self.parts_dir = self.run_dir / "parts"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._counts = dict.fromkeys(TABLES, 0)
        self._parts: dict[str, list[Path]] = {t: [] for t in TABLES}
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
                try:
                    t0 = time.perf_counter_ns()
                    path = self.parts_dir / f"{table}-{len(self._parts[table]):06d}.parquet"
                    pl.DataFrame(rows, infer_schema_length=None).write_parquet(path)
                    self._parts[table].append(path)
                    self._counts[table] += len(rows)
                    if self.on_write is not None:
                        self.on_write(SpikeCause.JOURNAL_WRITE, t0, time.perf_counter_ns())
                except Exception as exc:  # a bad record must not kill the writer
                    log.exception("journal: writing %d %s records failed", len(rows), table)
                    self.errors.append(f"{table}: {exc!r}")

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write `runs/<run-id>/<name>` with orjson (numpy scalars and arrays allowed)."""
        path = self.run_dir / name
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
        return path

    def close(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Flush, wait for the writer, join the parts into `<table>.parquet` (tables with
        records only). Returns records written per table. Idempotent."""
        if self._closed:
            return dict(self._counts)
        self._closed = True
        self.flush()
        self._queue.put(None)
        self._writer.join(timeout_s)
        if self._writer.is_alive():
            raise EngineError(f"journal writer did not finish within {timeout_s} s")
        for table, parts in self._parts.items():
            if parts:
                frames = [pl.read_parquet(p) for p in parts]
                pl.concat(frames, how="diagonal_relaxed").write_parquet(
                    self.run_dir / f"{table}.parquet")
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return dict(self._counts)

    @property
    def counts(self) -> dict[str, int]:
        """Records written to disk so far per table."""
        return dict(self._counts)
