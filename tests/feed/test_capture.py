"""Capture: `workbench record` writes what the wire carried; ReplayFeed and SimExchange read
it back byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from workbench.cli import main as cli_main
from workbench.errors import RecordingError
from workbench.feed.capture import CaptureWriter
from workbench.feed.replay import ReplayFeed
from workbench.feed.simex import SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig


def simulated_stream(n: int) -> list[bytes]:
    """The first `n` stream messages of the default simulator (what SimExchange sends)."""
    sim = MarketSimulator(SimConfig())
    out: list[bytes] = []
    while len(out) < n:
        out.extend(m for _, _, m in sim.step())
    return out[:n]


def test_record_cli_then_replay_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "capture.gz"
    with SimExchange(speed=None) as ex:
        started = time.time_ns()
        proc = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "record", "--url", ex.url + "/stream",
             "--venue", "binance-usdm", "--symbols", "BTCUSDT", "--out", str(out),
             "--messages", "3000", "--rest-url", ex.rest_url, "--channels", "depth@0ms",
             "bookTicker", "trade"],
            capture_output=True, text=True, timeout=60)
        ended = time.time_ns()
    assert proc.returncode == 0, proc.stderr
    assert "recorded" in proc.stdout and str(out) in proc.stdout
    replayed = list(ReplayFeed(out, speed=None))
    assert len(replayed) >= 3000
    times = [t for t, _ in replayed]
    assert times == sorted(times) and started <= times[0] and times[-1] <= ended
    frames = [m for _, m in replayed]
    assert frames[0] == b'{"result":null,"id":1}'  # the SUBSCRIBE ack, as received
    snapshots = [m for m in frames if m.startswith(b'{"lastUpdateId"')]
    assert len(snapshots) == 1 and json.loads(snapshots[0])["bids"]
    stream = [m for m in frames if m.startswith(b'{"stream"')]
    assert stream == simulated_stream(len(stream))


def test_a_capture_is_served_again_by_simex(tmp_path: Path) -> None:
    out = tmp_path / "capture.gz"
    want = simulated_stream(2000)
    with CaptureWriter(out) as writer:
        for i, message in enumerate(want):
            writer.write(1_000_000 * i, message)
    assert writer.messages == 2000

    async def receive(url: str) -> list[bytes]:
        async with asyncio.timeout(20), connect(url, max_queue=None) as ws:
            return [await ws.recv(decode=False) for _ in range(2000)]

    with SimExchange(out, speed=None) as ex:
        got = asyncio.run(receive(ex.url + "/stream?streams=btcusdt@depth@0ms/"
                                           "btcusdt@bookTicker/btcusdt@trade"))
    assert got == want


def test_frames_with_line_breaks_stay_one_line(tmp_path: Path) -> None:
    out = tmp_path / "breaks.gz"
    pretty = b'{\n  "stream": "btcusdt@trade",\r\n  "data": {"e": "trade", "p": "1.5"}\n}'
    with CaptureWriter(out) as writer:
        writer(None, pretty, 5)
        writer(None, b'{"a":1}', 6)
    assert writer.rewritten == 1 and writer.messages == 2
    lines = gzip.decompress(out.read_bytes()).splitlines()
    assert len(lines) == 2
    replayed = list(ReplayFeed(out, speed=None))
    assert json.loads(replayed[0][1]) == json.loads(pretty)
    assert replayed[1][0] - replayed[0][0] == 1


def test_unwritable_output_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture
                                             ) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordingError, match="cannot create"):
        CaptureWriter(blocker / "x.gz")
    code = cli_main(["record", "--url", "ws://127.0.0.1:9/stream", "--venue", "binance",
                     "--symbols", "BTCUSDT", "--out", str(tmp_path / "x.gz"),
                     "--duration", "0"])
    assert code == 1
    assert "--duration must be > 0" in capsys.readouterr().err
