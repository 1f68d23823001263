"""SimExchange seen by Binance's own Python client (`binance-connector` from PyPI, a dev
dependency): its websocket stream client (websocket-client underneath, pointed at the ws://
loopback URL through `stream_url`) and its spot REST client (`Spot(base_url=...)`).

What a real client must see: frames named as it subscribed (`btcusdt@depth@100ms`, whatever
update speed the source has), the spot depth snapshot in the spot shape ("Order book":
lastUpdateId, bids, asks; no E/T) charged spot weights, and a close when the exchange stops,
which happens within its timeout whether the client reads or not.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient
from websocket import WebSocketException

from workbench.feed.replay import ReplayFeed
from workbench.feed.simex import SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig

SPOT = "binance/hftbacktest/spot/btcusdt_20240808.gz"


class Inbox:
    """The callbacks handed to the connector: decoded messages, whether it saw a close, the
    errors its reading thread reported."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.errors: list[Exception] = []
        # given: from the 3rd message on, on_message blocks until it is set (the client stops
        # reading)
        self._release = release

    def on_message(self, _: object, message: str) -> None:
        self.messages.append(json.loads(message))
        if self._release is not None and len(self.messages) >= 3:
            self._release.wait()

    def on_close(self, _: object) -> None:
        self.closed.set()

    def on_error(self, _: object, error: Exception) -> None:
        self.errors.append(error)

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not done(list(self.messages)):
            assert time.monotonic() < deadline, f"timed out; got {len(self.messages)} messages"
            time.sleep(0.02)
        return list(self.messages)


@contextlib.contextmanager
def stream_client(ex: SimExchange, inbox: Inbox,
                  combined: bool) -> Iterator[SpotWebsocketStreamClient]:
    client = SpotWebsocketStreamClient(stream_url=ex.url, is_combined=combined,
                                       on_message=inbox.on_message, on_close=inbox.on_close,
                                       on_error=inbox.on_error, timeout=30)
    try:
        yield client
    finally:
        with contextlib.suppress(WebSocketException, OSError):  # the exchange may be gone
            client.stop()


def replies(messages: list[dict[str, Any]]) -> dict[int, Any]:
    return {m["id"]: m["result"] for m in messages if "result" in m}


def test_combined_stream_frames_are_named_as_subscribed() -> None:
    """The simulator writes `btcusdt@depth@0ms`; the connector subscribes
    `btcusdt@depth@100ms` (its diff_book_depth(speed=100)) and `btcusdt@trade` and gets
    the simulator's messages under those names: every depth message from the start (the
    first subscription starts the stream), then an unbroken run of its trades."""
    sim = MarketSimulator(SimConfig())
    want: dict[str, list[dict[str, Any]]] = {"btcusdt@depth@0ms": [], "btcusdt@trade": []}
    while len(want["btcusdt@depth@0ms"]) < 2000:
        for _, stream, message in sim.step():
            if stream in want:
                want[stream].append(json.loads(message)["data"])
    inbox = Inbox()
    with SimExchange(speed=None) as ex, stream_client(ex, inbox, combined=True) as client:
        client.diff_book_depth("btcusdt", speed=100, id=1)
        client.trade("btcusdt", id=2)
        got = inbox.wait_for(lambda ms: sum(m.get("stream") == "btcusdt@trade"
                                            for m in ms) >= 50 and len(ms) > 400)
    assert replies(got) == {1: None, 2: None}
    frames = [m for m in got if "stream" in m]
    assert {m["stream"] for m in frames} == {"btcusdt@depth@100ms", "btcusdt@trade"}
    depth = [m["data"] for m in frames if m["stream"] == "btcusdt@depth@100ms"]
    trades = [m["data"] for m in frames if m["stream"] == "btcusdt@trade"]
    assert depth[:300] == want["btcusdt@depth@0ms"][:300]
    start = want["btcusdt@trade"].index(trades[0])
    assert trades[:50] == want["btcusdt@trade"][start:start + 50]


def test_raw_stream_lists_the_subscription_as_asked(shared_data: Path) -> None:
    """The connector's raw client (`/ws`, then SUBSCRIBE) on a spot recording of
    `@depth@100ms`: it subscribes `btcusdt@depth@1000ms`, the server lists that name and
    sends the recorded depth messages' data parts in order."""
    path = shared_data / SPOT
    want = [json.loads(m)["data"] for _, m in ReplayFeed(path, speed=None)
            if m.startswith(b'{"stream":"btcusdt@depth@100ms"')][:200]
    inbox = Inbox()
    with SimExchange(path, speed=None) as ex, stream_client(ex, inbox, combined=False) as client:
        client.diff_book_depth("btcusdt", speed=1000, id=1)
        inbox.wait_for(lambda ms: len(ms) > 200)
        client.list_subscribe(id=2)
        got = inbox.wait_for(lambda ms: 2 in replies(ms))
    assert replies(got) == {1: None, 2: ["btcusdt@depth@1000ms"]}
    data = [m for m in got if "result" not in m]
    assert data[:200] == want


def test_spot_rest_depth_has_the_spot_shape_and_weights(shared_data: Path) -> None:
    """`Spot(base_url=...).depth` against a spot recording: the recorded snapshot in the spot
    shape (no E/T), the default limit 100, spot request weights (5 for up to 100 levels, 25
    up to 500) in X-MBX-USED-WEIGHT-1M."""
    path = shared_data / SPOT
    recorded = next(json.loads(m) for _, m in ReplayFeed(path, speed=None)
                    if m.startswith(b'{"lastUpdateId"'))
    with SimExchange(path, speed=None) as ex:
        client = Spot(base_url=ex.rest_url, show_limit_usage=True, timeout=10)
        first = client.depth("BTCUSDT")
        second = client.depth("BTCUSDT", limit=500)
    body = first["data"]
    assert list(body) == ["lastUpdateId", "bids", "asks"]
    assert body["lastUpdateId"] == recorded["lastUpdateId"]
    assert body["bids"] == recorded["bids"][:100] and body["asks"] == recorded["asks"][:100]
    assert list(second["data"]) == ["lastUpdateId", "bids", "asks"]
    assert len(second["data"]["bids"]) == min(500, len(recorded["bids"]))
    assert first["limit_usage"] == {"x-mbx-used-weight-1m": "5"}
    assert second["limit_usage"] == {"x-mbx-used-weight-1m": "30"}


@pytest.mark.parametrize("reading", [True, False], ids=["reading", "not-reading"])
def test_stop_with_the_client_connected_returns_within_its_timeout(reading: bool) -> None:
    """stop() while the connector is subscribed: it returns within its timeout, raising
    nothing; a client that reads sees the close (its on_close runs). One that does not read
    (its callback blocks, the socket buffers fill) is dropped after the close grace: its
    next read fails."""
    release = threading.Event()
    inbox = Inbox(None if reading else release)
    ex = SimExchange(speed=1.0 if reading else None).start()
    try:
        with stream_client(ex, inbox, combined=True) as client:
            try:
                client.diff_book_depth("btcusdt", speed=100, id=1)
                inbox.wait_for(lambda ms: len(ms) >= 3)
                if not reading:
                    time.sleep(0.5)  # flat out: the buffers between server and client fill
                started = time.monotonic()
                ex.stop(timeout_s=3.0)
                took = time.monotonic() - started
                if reading:
                    assert inbox.closed.wait(5), "the client saw no close"
            finally:
                release.set()
    finally:
        ex.stop()
    assert took < 3.0
    if reading:
        assert inbox.errors == []
    else:
        assert inbox.errors and isinstance(inbox.errors[0], OSError | WebSocketException)


def test_exchange_process_with_a_client_connected_exits_0_with_now() -> None:
    """`python -m workbench.feed.simex --now`: the connector's frames carry event times near
    the current clock; closing the server's stdin with the client still connected ends it with
    exit code 0 and the client sees the close."""
    proc = subprocess.Popen([sys.executable, "-m", "workbench.feed.simex", "--now"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ws://"), line
        ex_url = line.split()[1]
        inbox = Inbox()
        client = SpotWebsocketStreamClient(stream_url=ex_url, is_combined=True,
                                           on_message=inbox.on_message,
                                           on_close=inbox.on_close, on_error=inbox.on_error)
        try:
            client.trade("btcusdt", id=1)
            got = inbox.wait_for(lambda ms: len(ms) > 20)
            now_ms = time.time() * 1000
            trades = [m["data"] for m in got if m.get("stream") == "btcusdt@trade"]
            assert trades and all(abs(t["E"] - now_ms) < 5000 for t in trades)
            proc.stdin.close()
            assert proc.wait(15) == 0
            assert inbox.closed.wait(5), "the client saw no close"
        finally:
            with contextlib.suppress(WebSocketException, OSError):
                client.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
