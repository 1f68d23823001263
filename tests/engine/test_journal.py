"""The write-ahead journal: records reach their Arrow stream at each flush (readable while the
run goes), close fsyncs and writes Parquet, a stream cut anywhere reads back to its last whole
batch, records with other fields are refused and reported, one live writer per run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.engine.journal import (
    SCHEMAS,
    Journal,
    has_journal,
    in_use,
    read_journal,
    read_meta,
    read_table,
)
from workbench.errors import EngineError


def fill(i: int) -> dict:
    return {"order_id": i, "symbol_id": 1 + i % 2, "side": 1 + i % 2, "price": 60000.0 + i,
            "qty": 0.001 * (i + 1), "fee": 0.01 * i, "liquidity": "taker" if i % 3 else "maker",
            "ts_ns": 1_723_161_255_000_000_000 + i, "seq": 10 * i, "realized_pnl": -0.5 * i}


def wait_written(journal: Journal, table: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while journal.counts[table] < n:
        assert time.monotonic() < deadline, journal.counts
        time.sleep(0.005)


def test_each_flush_is_readable_at_once_and_close_writes_the_same_rows_as_parquet(tmp_path):
    journal = Journal(tmp_path / "run", meta={"run_id": "run", "pid": os.getpid()})
    rows = [fill(i) for i in range(25)]
    for flush_at in (0, 7, 20):
        for r in rows[flush_at:{0: 7, 7: 20, 20: 25}[flush_at]]:
            journal.append("fills", r)
        journal.flush()
    wait_written(journal, "fills", 25)
    live = read_journal(tmp_path / "run")  # another reader, while the writer still holds it
    assert set(live) == {"fills"} and not live["fills"].cut_short
    assert live["fills"].rows.to_pylist() == rows
    assert read_meta(tmp_path / "run") == {"run_id": "run", "pid": os.getpid()}
    assert journal.close() == {"orders": 0, "fills": 25, "positions": 0, "spikes": 0}
    assert pl.read_parquet(tmp_path / "run" / "fills.parquet").to_dicts() == rows
    assert not (tmp_path / "run" / "orders.parquet").exists()  # no records, no file
    assert has_journal(tmp_path / "run")  # kept until the run's summary is written
    journal.discard()
    assert not has_journal(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["fills.parquet"]


def test_one_live_journal_per_run(tmp_path):
    journal = Journal(tmp_path / "run", meta={"run_id": "run", "pid": os.getpid()})
    assert in_use(tmp_path / "run")
    with pytest.raises(EngineError, match=f"in use \\(pid {os.getpid()}\\)"):
        Journal(tmp_path / "run")
    journal.close()
    journal.discard()
    assert not in_use(tmp_path / "run")


def test_a_record_with_other_fields_is_refused_and_reported_and_the_rest_written(tmp_path):
    journal = Journal(tmp_path / "run")
    journal.append("fills", {**fill(0), "extra": 1})
    journal.append("orders", {"order_id": 1, "symbol_id": 1, "side": 1, "qty": 0.01,
                              "order_type": "market", "price": float("nan"), "post_only": False,
                              "tag": "", "ts_ns": 5, "seq": 1, "status": "ack"})
    counts = journal.close()
    assert counts["fills"] == 0 and counts["orders"] == 1
    (error,) = journal.errors
    assert error.startswith("fills: EngineError") and "'extra'" in error
    assert pl.read_parquet(tmp_path / "run" / "orders.parquet")["status"].to_list() == ["ack"]


def schema_bytes(table: str) -> int:
    """Size of a stream's schema message (what a stream closed without batches holds, less
    the 8-byte end-of-stream marker)."""
    sink = pa.BufferOutputStream()
    ipc.new_stream(sink, SCHEMAS[table]).close()
    return sink.getvalue().size - 8


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[bytes, list[tuple[int, int]]]:
    """A closed fills stream of 4 flushes (3, 1, 5, 2 rows): its bytes, and (size, rows
    written) after each flush."""
    run = tmp_path_factory.mktemp("stream") / "run"
    journal = Journal(run)
    path = run / "journal" / "fills.arrows"
    ends, written = [], 0
    for size in (3, 1, 5, 2):
        for i in range(written, written + size):
            journal.append("fills", fill(i))
        journal.flush()
        written += size
        wait_written(journal, "fills", written)
        ends.append(path.stat().st_size)
    journal.close()
    return path.read_bytes(), list(zip(ends, (3, 4, 9, 11), strict=True))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_stream_cut_anywhere_reads_back_every_whole_batch_before_the_cut(stream, data,
                                                                          tmp_path):
    body, ends = stream
    cut = data.draw(st.integers(0, len(body)), label="cut")
    path = tmp_path / f"cut-{cut}.arrows"
    path.write_bytes(body[:cut])
    table = read_table(path, "fills")
    whole = max((rows for end, rows in ends if end <= cut), default=0)
    assert table.rows.to_pylist() == [fill(i) for i in range(whole)]
    assert table.rows.schema == SCHEMAS["fills"]
    boundaries = {schema_bytes("fills"), len(body)} | {end for end, _ in ends}
    assert table.cut_short == (cut not in boundaries)


def test_summary_json_is_replaced_whole(tmp_path: Path):
    journal = Journal(tmp_path / "run")
    journal.write_json("summary.json", {"state": "running"})
    journal.write_json("summary.json", {"state": "stopped", "fills": 3})
    assert orjson.loads((tmp_path / "run" / "summary.json").read_bytes()) == {
        "state": "stopped", "fills": 3}
    assert not list((tmp_path / "run").glob("*.tmp"))
    journal.close()
    journal.discard()


def test_writing_the_journal_imports_no_pandas(tmp_path):
    """The writer thread must not be the first to import pandas: a notebook's UI thread
    (bokeh) importing it at the same time got a partially initialized module."""
    import subprocess
    import sys

    script = f"""
import sys
from workbench.engine.journal import Journal
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_journal import fill
journal = Journal({str(tmp_path / "run")!r})
for i in range(10):
    journal.append("fills", fill(i))
journal.flush()
journal.close()
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert len(pl.read_parquet(tmp_path / "run" / "fills.parquet")) == 10
