"""The engine on the native feed handler: `source="native"` (the C++ handler reading a
SimExchange on loopback through a ring the run creates), `native:URL`, and a ring fed by the
handler in another process (`workbench feed --venue`) that dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.feed.ring import ShmRing
from workbench.feed.simex import SimExchange


@pytest.mark.parametrize("dispatch", ["callback", "polling"])
def test_native_source_runs_the_engine_on_the_simulator(dispatch: str) -> None:
    engine = Engine(EngineConfig(source="native", dispatch=dispatch, duration_s=3.0,
                                 out_dir=None)).start()
    assert engine.wait(60), "the run did not end"
    status = engine.status()
    assert status.error is None and status.state == "stopped"
    native = status.feed["native"]
    c = native["counters"]
    assert c["messages"] > 500 and c["malformed"] == 0 and c["dropped"] == 0
    assert c["snapshot_fetches"] >= 1 and c["connects"] == 1
    assert status.events > 500
    # the books the engine kept were valid (the handler's snapshot, then live deltas)
    assert engine.sync.stats.snapshots >= 1 and engine.sync.stats.crossed == 0
    # parse is the handler's read to push, measured in this process's clock
    parse = engine.latency.summary()["parse"]
    assert parse["count"] > 0 and 0 < parse["p50_ns"] < 50_000_000


def test_native_source_on_an_unreachable_venue_fails_the_run() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = Engine(EngineConfig(source=f"native:ws://127.0.0.1:{port}/stream",
                                 venue="binance-usdm", out_dir=None)).start()
    assert engine.wait(60), "the run did not end"
    status = engine.status()
    assert status.state == "failed"
    assert "native feed handler failed" in status.error and "connection attempts" in status.error


def test_a_ring_producer_that_dies_fails_the_run() -> None:
    name = f"t-native-dies-{os.getpid()}"
    with SimExchange(speed=3) as ex, ShmRing.create(name, 1 << 16) as ring:
        feed = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "feed", "--venue", "binance-usdm",
             "--symbols", "BTCUSDT", "--url", ex.url + "/stream", "--rest-url", ex.rest_url,
             "--ring", name], stderr=subprocess.PIPE)
        try:
            engine = Engine(EngineConfig(source=f"ring:{name}", out_dir=None)).start()
            deadline = time.monotonic() + 30
            while engine.events < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert engine.events >= 200, "no events from the handler process"
            feed.send_signal(signal.SIGKILL)
            feed.wait(10)
            assert engine.wait(30), "the run went on after its producer died"
        finally:
            if feed.poll() is None:
                feed.kill()
            feed.stderr.close()
        status = engine.status()
        assert ring.stats.stale
    assert status.state == "failed"
    assert f"producer (pid {feed.pid}) died" in status.error
