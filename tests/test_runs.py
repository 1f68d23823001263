"""Saved runs: a run whose process died (SIGKILL) is listed as crashed, repaired from its
write-ahead journal (Parquet and a summary marked repaired), repaired on open by load; a run a
live process writes is listed as running and never repaired; `workbench runs` lists and
repairs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import polars as pl
import pytest

from workbench import runs
from workbench.engine.journal import Journal
from workbench.errors import EngineError

ORDERS = [
    {"order_id": 1, "symbol_id": 1, "side": 1, "qty": 0.01, "order_type": "market",
     "price": float("nan"), "post_only": False, "tag": "ema_cross", "ts_ns": 10, "seq": 1,
     "status": "ack"},
    {"order_id": 2, "symbol_id": 1, "side": 2, "qty": 0.01, "order_type": "market",
     "price": float("nan"), "post_only": False, "tag": "ema_cross", "ts_ns": 20, "seq": 2,
     "status": "ack"},
    {"order_id": 0, "symbol_id": 2, "side": 2, "qty": 9.0, "order_type": "market",
     "price": float("nan"), "post_only": False, "tag": "ema_cross", "ts_ns": 25, "seq": 3,
     "status": "rejected:max_position"},
    {"order_id": 3, "symbol_id": 2, "side": 2, "qty": 0.5, "order_type": "limit",
     "price": 3000.0, "post_only": True, "tag": "", "ts_ns": 30, "seq": 4, "status": "ack"},
]
FILLS = [
    {"order_id": 1, "symbol_id": 1, "side": 1, "price": 60000.0, "qty": 0.01, "fee": 0.1,
     "liquidity": "taker", "ts_ns": 11, "seq": 1, "realized_pnl": 0.0},
    {"order_id": 2, "symbol_id": 1, "side": 2, "price": 60020.0, "qty": 0.01, "fee": 0.1,
     "liquidity": "taker", "ts_ns": 21, "seq": 2, "realized_pnl": 0.2},
    {"order_id": 3, "symbol_id": 2, "side": 2, "price": 3000.0, "qty": 0.5, "fee": 0.05,
     "liquidity": "maker", "ts_ns": 31, "seq": 4, "realized_pnl": 0.0},
]
POSITIONS = [
    {"ts_ns": 11, "symbol_id": 1, "qty": 0.01, "avg_price": 60000.0, "realized_pnl": 0.0,
     "fees": 0.1, "mark": 60010.0},
    {"ts_ns": 21, "symbol_id": 1, "qty": 0.0, "avg_price": 0.0, "realized_pnl": 0.2,
     "fees": 0.2, "mark": 60020.0},
    {"ts_ns": 31, "symbol_id": 2, "qty": -0.5, "avg_price": 3000.0, "realized_pnl": 0.0,
     "fees": 0.05, "mark": 2990.0},
]
CONFIG = {"source": {"source": "sim"}, "dispatch": "callback"}


def crash_a_run(root: Path, run_id: str) -> Path:
    """A child process journals ORDERS, FILLS and POSITIONS (two flushes), waits until the
    writer has written them, and kills itself with SIGKILL: no close, no summary."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from workbench.engine.journal import Journal
        nan = float("nan")  # what repr() writes for the market orders' price
        journal = Journal({str(root / run_id)!r}, meta={{"run_id": {run_id!r},
                          "pid": os.getpid(), "config": {CONFIG!r}}})
        orders, fills, positions = {ORDERS!r}, {FILLS!r}, {POSITIONS!r}
        for part in (slice(0, 2), slice(2, None)):
            for table, rows in (("orders", orders), ("fills", fills),
                                ("positions", positions)):
                for row in rows[part]:
                    journal.append(table, row)
            journal.flush()
        while journal.counts != {{"orders": 4, "fills": 3, "positions": 3, "spikes": 0}}:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    return root / run_id


def test_a_killed_run_is_listed_as_crashed_and_repair_rebuilds_it(tmp_path):
    path = crash_a_run(tmp_path, "20240808-000000-dead01")
    (crashed,) = runs.list_runs(tmp_path)
    assert (crashed.state, crashed.source, crashed.fills, crashed.orders) == (
        "crashed", "sim", 3, 3)
    assert not (path / "summary.json").exists()

    run = runs.repair(crashed.run_id, tmp_path)
    assert (run.state, run.error, run.repaired) == ("failed", runs.REPAIRED_ERROR, True)
    assert (run.fills, run.orders, run.events) == (3, 3, None)
    assert run.net_pnl == pytest.approx(4.95)
    assert pl.read_parquet(path / "fills.parquet").to_dicts() == FILLS
    orders = pl.read_parquet(path / "orders.parquet")
    assert orders["status"].to_list() == [o["status"] for o in ORDERS]
    summary = orjson.loads((path / "summary.json").read_bytes())
    assert summary["orders_rejected"] == 1 and summary["dispatch"] == "callback"
    assert summary["config"] == CONFIG and summary["run_id"] == crashed.run_id
    assert summary["journal"]["fills"] == {"rows": 3, "cut_short": False}
    by_symbol = {p["symbol_id"]: p for p in summary["positions"]}
    assert by_symbol[1]["qty"] == 0.0 and by_symbol[1]["net_pnl"] == pytest.approx(0.0)
    assert by_symbol[2]["unrealized_pnl"] == pytest.approx(5.0)
    assert summary["pnl"] == pytest.approx({"realized_pnl": 0.2, "unrealized_pnl": 5.0,
                                            "fees": 0.25, "net_pnl": 4.95})
    assert not (path / "journal").exists()
    assert runs.repair(crashed.run_id, tmp_path) == run  # complete: nothing more to do


def test_load_repairs_a_crashed_run_on_open(tmp_path):
    crash_a_run(tmp_path, "r1")
    run = runs.load("r1", tmp_path)
    assert run.state == "failed" and run.repaired and run.fills.height == 3 == run.info.fills


def test_a_run_a_live_process_writes_is_running_and_never_repaired(tmp_path):
    journal = Journal(tmp_path / "live", meta={"run_id": "live", "pid": os.getpid(),
                                               "config": CONFIG})
    try:
        for row in FILLS:
            journal.append("fills", row)
        journal.flush()
        (run,) = runs.list_runs(tmp_path)
        assert run.state == "running" and run.run_id == "live"
        assert runs.load("live", tmp_path).state == "running"
        with pytest.raises(EngineError, match=f"still running \\(pid {os.getpid()} holds"):
            runs.repair("live", tmp_path)
        assert not (tmp_path / "live" / "summary.json").exists()
    finally:
        journal.close()
        journal.discard()


def test_unknown_runs_and_runs_with_nothing_to_rebuild_from_are_errors(tmp_path):
    with pytest.raises(EngineError, match="expected a run directory at"):
        runs.load("nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="found neither: nothing to rebuild from"):
        runs.repair("empty", tmp_path)
    assert runs.list_runs(tmp_path) == [] and runs.list_runs(tmp_path / "absent") == []


def test_cli_lists_and_repairs(tmp_path):
    crash_a_run(tmp_path, "20240808-000000-dead02")
    cli = [sys.executable, "-m", "workbench.cli", "runs"]
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run([*cli, "list", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=60, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "20240808-000000-dead02" in listed.stdout and "crashed" in listed.stdout
    repaired = subprocess.run([*cli, "repair", "20240808-000000-dead02", "--out",
                               str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.strip() == (
        "run 20240808-000000-dead02: repaired: 3 fills and 3 orders rebuilt from the "
        "write-ahead journal (state failed)")
    again = subprocess.run([*cli, "repair", "20240808-000000-dead02", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == ("run 20240808-000000-dead02: complete (failed), nothing "
                                    "to repair")
    missing = subprocess.run([*cli, "repair", "nope", "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"workbench runs: expected a run directory at "
                                      f"{tmp_path / 'nope'}, got none")
