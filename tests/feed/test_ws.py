"""WebSocketFeed against SimExchange over real loopback websockets.

The books are built by the real normalizer + BookSync + L2Book in the feed's sink and
compared with independent references: a same-seed MarketSimulator stepped to the same update
id (simulator source) or a dict book rebuilt from the recording file (recording source).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import numpy as np

from workbench.book.l2 import L2Book
from workbench.book.sync import BookSync
from workbench.errors import FeedError
from workbench.feed.simex import Faults, SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues.base import M_DELTA
from workbench.feed.ws import WebSocketFeed

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
CHANNELS = ("depth@0ms", "bookTicker", "trade")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class BookFeed:
    """A WebSocketFeed whose sink runs BookSync (the engine's wiring), keeping every frame and
    a copy of the top 20 levels at chosen update ids."""

    def __init__(self, ex: SimExchange, *, venue: str = "binance-usdm",
                 channels: tuple[str, ...] = CHANNELS, checkpoint_every: int = 0,
                 **options: object) -> None:
        self.sync = BookSync(venue)
        self.frames: list[bytes] = []
        self.checkpoints: dict[int, tuple[np.ndarray, ...]] = {}
        self._every = checkpoint_every
        self.feed = WebSocketFeed(ex.url + "/stream", venue, ["BTCUSDT"], self._sink,
                                  registry=SymbolRegistry(), rest_url=ex.rest_url,
                                  channels=channels, on_connect=self.sync.connection_reset,
                                  **options)
        self.sync.on_resync = self.feed.request_resync

    def _sink(self, batch: np.ndarray, message: bytes, recv_ns: int) -> None:
        info = self.feed.normalizer.last
        book = self.sync.process(batch, info)
        self.frames.append(message)
        if (self._every and book is not None and info.kind == M_DELTA
                and len(self.frames) >= self._every * (len(self.checkpoints) + 1)):
            self.checkpoints[info.last_id] = book.depth(20)

    @property
    def book(self) -> L2Book:
        return self.sync.book(self.feed.registry.id(self.feed.venue, "BTCUSDT"))

    def __enter__(self) -> BookFeed:
        self.feed.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.feed.stop()


def assert_matches_simulator(checkpoints: dict[int, tuple[np.ndarray, ...]]) -> None:
    """Each checkpoint (update id -> depth(20)) equals a fresh same-seed simulator's top 20
    once stepped to that update id."""
    assert checkpoints
    sim = MarketSimulator(SimConfig())
    for update_id, (bid_px, bid_qty, ask_px, ask_qty) in sorted(checkpoints.items()):
        while sim.last_update_id < update_id:
            sim.step()
        assert sim.last_update_id == update_id
        bids, asks = sim.top(20)
        np.testing.assert_array_equal(bid_px, bids[:, 0])
        np.testing.assert_array_equal(bid_qty, bids[:, 1])
        np.testing.assert_array_equal(ask_px, asks[:, 0])
        np.testing.assert_array_equal(ask_qty, asks[:, 1])


def test_gap_resyncs_by_rest_and_disconnect_reconnects_with_a_valid_book() -> None:
    faults = Faults(gap_after=8000, disconnect_after=16000)
    with SimExchange(speed=None, faults=faults) as ex, BookFeed(ex, checkpoint_every=3000) as bf:
        wait_until(lambda: len(bf.frames) > 26000 and bf.book.valid, 30, "26k frames")
    feed, sync = bf.feed, bf.sync
    assert ex.stats.faults == {"gap": 1, "disconnect": 1}
    assert sync.stats.gaps == 1 and feed.stats.gaps == 1
    assert feed.stats.connects == 2 and feed.stats.reconnects == 1
    assert feed.stats.snapshots >= 3  # first connect, after the gap, after the reconnect
    assert sync.stats.crossed == 0
    assert bf.book.valid
    assert len(bf.checkpoints) >= 6
    assert_matches_simulator(bf.checkpoints)


def test_silence_is_a_dead_connection() -> None:
    faults = Faults(stall_after=500, stall_s=3.0)
    with SimExchange(speed=None, faults=faults) as ex, \
            BookFeed(ex, silence_s=0.5, checkpoint_every=1000) as bf:
        wait_until(lambda: bf.feed.stats.connects == 2 and len(bf.frames) > 3000
                   and bf.book.valid, 20, "reconnect after silence")
    assert bf.feed.stats.silences == 1 and bf.feed.stats.reconnects == 1
    assert_matches_simulator(bf.checkpoints)


def test_malformed_frame_is_counted_and_the_feed_goes_on() -> None:
    with SimExchange(speed=None, faults=Faults(malformed_after=300)) as ex, \
            BookFeed(ex, checkpoint_every=500) as bf:
        wait_until(lambda: len(bf.frames) > 3000 and bf.book.valid, 20, "3000 frames")
    assert bf.feed.stats.malformed == 1
    assert bf.feed.normalizer.stats.malformed_total == 1
    assert bf.feed.stats.connects == 1
    assert sum(1 for f in bf.frames if f.startswith(b'{"stream":"malformed"')) == 1
    assert_matches_simulator(bf.checkpoints)


def test_switch_endpoint_keeps_the_subscriptions() -> None:
    channels = ("depth@0ms", "trade")  # no bookTicker: the new endpoint must not send it
    with SimExchange(speed=None) as first, SimExchange(speed=None) as second:
        with BookFeed(first, channels=channels) as bf:
            wait_until(lambda: len(bf.frames) > 1000, 10, "frames from the first endpoint")
            bf.feed.switch_endpoint(second.url + "/stream")
            wait_until(lambda: second.stats.messages > 2000 and bf.book.valid, 10,
                       "frames from the second endpoint")
        assert bf.feed.stats.switches == 1 and bf.feed.stats.reconnects == 0
        assert bf.feed.url == second.url + "/stream"
        assert first.stats.connections == second.stats.connections == 1
        streams = {f[11:f.index(b'"', 11)] for f in bf.frames if f.startswith(b'{"stream"')}
        assert streams == {b"btcusdt@depth@0ms", b"btcusdt@trade"}


def test_gives_up_after_max_connects() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    feed = WebSocketFeed(f"ws://127.0.0.1:{port}/stream", "binance-usdm", ["BTCUSDT"],
                         lambda *a: None, registry=SymbolRegistry(), max_connects=3,
                         backoff_s=0.01, backoff_max_s=0.02, snapshots=False)
    feed.start()
    assert feed.wait(10)
    feed.stop()
    assert isinstance(feed.error, FeedError)
    assert "3 connection attempts" in str(feed.error)
    assert feed.stats.connects == 0 and feed.stats.reconnects == 2
