"""Run files survive SIGINT and interpreter exit; tuning (CPU affinity, gc mode) is applied to
the right threads and recorded."""

from __future__ import annotations

import gc
import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import polars as pl
import pytest

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.strategy import EmaCross

RECORDING = "binance/hftbacktest/spot/btcusdt_20240808.gz"


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = out.iterdir()
    return run_dir


def test_interpreter_exit_without_stop_flushes_the_run(shared_data, tmp_path):
    script = textwrap.dedent(f"""
        import time
        from workbench.engine.config import EngineConfig
        from workbench.engine.engine import Engine
        cfg = EngineConfig(source="replay:{shared_data / RECORDING}", speed=50, ema_fast=2,
                           ema_slow=5, out_dir="{tmp_path}")
        engine = Engine(cfg).start()
        while len(engine.executor.fills) < 5:
            time.sleep(0.01)
        print(len(engine.executor.fills), flush=True)
        # no stop(): the atexit hook must stop the engine and flush the journal
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    run_dir = _only_run_dir(tmp_path)
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["state"] == "stopped"
    fills = pl.read_parquet(run_dir / "fills.parquet")
    assert len(fills) == summary["fills"] >= int(out.stdout.split()[0])
    assert not (run_dir / "parts").exists()


def test_sigint_stops_workbench_run_and_flushes(shared_data, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "run", "--source",
         f"replay:{shared_data / RECORDING}", "--speed", "20", "--out", str(tmp_path),
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout and "tick_to_trade" in stdout
    summary = orjson.loads((_only_run_dir(tmp_path) / "summary.json").read_bytes())
    assert summary["state"] == "stopped" and 0 < summary["batches"] < 41249


class WhereAmI(EmaCross):
    """Records the CPU affinity of the thread that runs it, per thread name."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, frozenset[int]] = {}

    def on_events(self, book, batch):
        name = threading.current_thread().name
        if name not in self.seen:
            self.seen[name] = frozenset(os.sched_getaffinity(0))
        return super().on_events(book, batch)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_feed_and_engine_threads_are_pinned_and_recorded(shared_data, tmp_path):
    before = os.sched_getaffinity(0)
    feed_cpu, engine_cpu = sorted(before)[:2]
    strategy = WhereAmI()
    cfg = EngineConfig(source=f"replay:{shared_data / RECORDING}", speed=100,
                       dispatch="polling", poll_interval_ms=1, feed_cpus=(feed_cpu,),
                       engine_cpus=(engine_cpu,), gc_mode="freeze", out_dir=str(tmp_path),
                       gil_switch_interval_us=500)
    interval = sys.getswitchinterval()
    engine = Engine(cfg, strategy=strategy).start()
    deadline = time.monotonic() + 30
    while "wb-engine" not in strategy.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.set_dispatch("callback")  # now the feed thread runs the strategy
    while "wb-feed" not in strategy.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    assert strategy.seen["wb-engine"] == {engine_cpu}
    assert strategy.seen["wb-feed"] == {feed_cpu}
    assert os.sched_getaffinity(0) == before  # the caller's thread is left alone
    tuning = orjson.loads((_only_run_dir(tmp_path) / "summary.json").read_bytes())["tuning"]
    assert tuning["engine_cpus"] == [engine_cpu] and tuning["feed_cpus"] == [feed_cpu]
    assert tuning["gc_mode"] == "freeze" and tuning["gc_frozen_objects"] > 0
    assert tuning["event_loop"] in ("uvloop", "asyncio")
    assert gc.get_freeze_count() == 0  # unfrozen again after the run
    assert tuning["gil_switch_interval_us"] == pytest.approx(500)
    assert sys.getswitchinterval() == pytest.approx(interval)  # restored


def test_spin_selector_polls_without_sleeping_and_returns_what_is_ready():
    import socket

    from workbench.tuning import SpinSelector

    a, b = socket.socketpair()
    with SpinSelector() as selector:
        selector.register(a, 1)  # EVENT_READ
        t0, c0 = time.monotonic(), time.thread_time()
        assert selector.select(0.1) == []
        wall, cpu = time.monotonic() - t0, time.thread_time() - c0
        assert wall >= 0.1 and cpu >= 0.5 * wall  # it spun rather than slept
        b.send(b"x")
        t0 = time.monotonic()
        ready = selector.select(5.0)
        assert [key.fileobj for key, _ in ready] == [a] and time.monotonic() - t0 < 1.0
    a.close()
    b.close()


def test_spin_selector_calls_on_idle_while_nothing_is_ready():
    import socket

    from workbench.tuning import SpinSelector

    with pytest.raises(ValueError, match="idle_period_ns"):
        SpinSelector(on_idle=lambda: None)
    a, b = socket.socketpair()
    calls = []
    with SpinSelector(on_idle=lambda: calls.append(time.perf_counter_ns()),
                      idle_period_ns=1_000_000) as selector:
        selector.register(a, 1)  # EVENT_READ
        t0 = time.perf_counter_ns()
        assert selector.select(0.05) == []
        assert 10 <= len(calls) <= 50  # every 1 ms of the 50 ms, less the VM's hiccups
        assert calls[0] - t0 >= 1_000_000
        assert all(y - x >= 1_000_000 for x, y in itertools.pairwise(calls))
        b.send(b"x")
        calls.clear()
        assert [key.fileobj for key, _ in selector.select(5.0)] == [a]
        assert calls == []  # ready at once: no idle call
    a.close()
    b.close()


def _feed_thread_cpu_s(engine: Engine, seconds: float) -> float:
    import psutil

    tid = engine._feed_thread.native_id

    def cpu() -> float:
        return next(t.user_time + t.system_time for t in psutil.Process().threads()
                    if t.id == tid)
    before = cpu()
    time.sleep(seconds)
    return cpu() - before


def test_feed_spin_busy_polls_the_feed_thread_and_is_recorded():
    busy = {}
    for spin in (False, True):
        engine = Engine(EngineConfig(source="sim", out_dir=None, feed_spin=spin)).start()
        time.sleep(0.5)
        busy[spin] = _feed_thread_cpu_s(engine, 1.0)
        status = engine.stop()
        assert status.state == "stopped" and status.events > 0
        tuning = engine.summary()["tuning"]
        assert tuning["feed_event_loop"] == ("asyncio-spin" if spin else tuning["event_loop"])
    assert busy[True] > 0.6  # a core, less what the engine thread and the GIL take
    assert busy[False] < 0.5 * busy[True]


KILL_AFTER_FILLS = 40
# What a flush can wait past its period on a shared 2-core machine: the engine thread runs it
# between batches and the writer thread waits for the GIL (see engine.journal: loss window).
FLUSH_DELAY_S = 0.05


def test_kill_9_then_repair_keeps_every_fill_acknowledged_a_flush_interval_before(
        shared_data, tmp_path):
    """A child process runs the engine on the real recording with the default journal flush
    interval and prints each fill (index, order id, monotonic ns) as the Executor books it
    (before it journals it); it is killed with SIGKILL at a random time mid-run. `workbench
    runs repair` then rebuilds the run: every fill booked more than one flush interval (plus
    FLUSH_DELAY_S) before the kill is in the rebuilt fills.parquet, at its index, and the
    summary says the run crashed."""
    script = textwrap.dedent(f"""
        import time
        from workbench.engine.config import EngineConfig
        from workbench.engine.engine import Engine
        cfg = EngineConfig(source="replay:{shared_data / RECORDING}", speed=50, ema_fast=2,
                           ema_slow=5, max_orders_per_s=1000, out_dir="{tmp_path}")
        print("flush_ms", cfg.housekeeping.journal_flush_ms, flush=True)
        class Announced(list):  # the Executor books each fill with append, on its thread
            def append(self, fill):
                print("fill", len(self), fill.order_id, time.monotonic_ns(), flush=True)
                super().append(fill)
        engine = Engine(cfg)
        engine.executor.fills = Announced()
        engine.start()
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while sum(line.startswith("fill") for line in lines) < KILL_AFTER_FILLS:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            lines.append(proc.stdout.readline())
        time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))  # anywhere between flushes
        killed_ns = time.monotonic_ns()
        proc.kill()
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    lines += rest.splitlines()
    flush_s = float(lines[0].split()[1]) / 1000
    assert flush_s == 0.1  # the default
    acked = [(int(i), int(oid), int(t)) for _, i, oid, t in
             (line.split() for line in lines if line.startswith("fill"))]
    run_dir = _only_run_dir(tmp_path)
    assert not (run_dir / "summary.json").exists() and (run_dir / "journal").is_dir()

    out = subprocess.run([sys.executable, "-m", "workbench.cli", "runs", "repair", run_dir.name,
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"run {run_dir.name}: repaired" in out.stdout
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["repaired"] is True and summary["state"] == "failed"
    assert summary["error"] == "crashed: rebuilt from the write-ahead journal"
    fills = pl.read_parquet(run_dir / "fills.parquet")
    assert summary["fills"] == len(fills)
    cutoff_ns = killed_ns - int((flush_s + FLUSH_DELAY_S) * 1e9)
    must_survive = [(i, oid) for i, oid, t in acked if t < cutoff_ns]
    assert len(must_survive) >= KILL_AFTER_FILLS // 2, (len(acked), len(must_survive))
    order_ids = fills["order_id"].to_list()
    assert all(i < len(order_ids) and order_ids[i] == oid for i, oid in must_survive), (
        [(i, oid) for i, oid in must_survive if i >= len(order_ids) or order_ids[i] != oid],
        len(order_ids))
    assert not (run_dir / "journal").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "run", "--quiet", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})


def _failure(out: subprocess.CompletedProcess) -> str:
    """The one line that says why the run failed: stderr's last line, the only one of its
    kind."""
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert sum(line.startswith("workbench run: ") for line in lines) == 1, out.stderr
    assert lines[-1].startswith("workbench run: ")
    return lines[-1]


def test_cli_run_with_zero_events_exits_non_zero_and_says_so(tmp_path):
    """A ring no producer writes to: the run goes for its duration, then one line and exit 1;
    the run files are still written (the run itself did not fail)."""
    from workbench.feed.ring import ShmRing

    name = f"t-silent-{os.getpid()}"
    with ShmRing.create(name, 1 << 10):
        out = _run_cli("--source", f"ring:{name}", "--duration", "1", "--out", str(tmp_path))
    run_dir = _only_run_dir(tmp_path)
    assert re.fullmatch(f"workbench run: run {run_dir.name}: no events from ring:{name} in "
                        r"1\.\d s \(the source delivered nothing\)", _failure(out))
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["state"] == "stopped" and summary["events"] == 0


def test_cli_run_on_an_unreachable_ws_url_fails_with_the_connection_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/stream"
    out = _run_cli("--source", f"ws:{url}", "--out", str(tmp_path))
    line = _failure(out)
    assert f"failed: feed failed: FeedError: {url}: unreachable: 5 connection attempts" in line
    assert "ConnectionRefusedError" in line
    summary = orjson.loads((_only_run_dir(tmp_path) / "summary.json").read_bytes())
    assert summary["state"] == "failed" and summary["error"] in line


def test_cli_run_of_the_simulator_on_a_symbol_it_does_not_simulate_is_refused(tmp_path):
    out = _run_cli("--source", "sim", "--symbols", "ETHUSDT", "--out", str(tmp_path))
    assert _failure(out) == (
        "workbench run: symbols: the simulator simulates BTCUSDT only (its SimConfig), got "
        "ETHUSDT; serve a recording of other symbols with `recording`")
    assert not any(tmp_path.iterdir())  # nothing ran: no run directory
