"""Run files survive SIGINT and interpreter exit; tuning (CPU affinity, gc mode) is applied to
the right threads and recorded."""

from __future__ import annotations

import gc
import itertools
import os
import signal
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
