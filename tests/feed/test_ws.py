"""WebSocketFeed against SimExchange over real loopback websockets.

The books are built by the real normalizer + BookSync + L2Book in the feed's sink and
compared with independent references: a same-seed MarketSimulator stepped to the same update
id (simulator source) or a dict book rebuilt from the recording file (recording source).
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from workbench.book.l2 import L2Book
from workbench.book.sync import BookSync
from workbench.errors import ConfigError, FeedError
from workbench.events import M_DELTA
from workbench.feed.replay import ReplayFeed
from workbench.feed.simex import Faults, SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue
from workbench.feed.wires import WIRES
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
        self.sync = BookSync(get_venue(venue).sequencing)
        self.frames: list[bytes] = []
        self.stream_frames = 0
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
        if message.startswith(b'{"stream"'):
            self.stream_frames += 1
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
    faults = Faults(gap_after=2000, gap_after_snapshot=True, disconnect_after=20000)
    # paced so that each REST snapshot arrives before the next fault: at 10x and more the
    # simulator streams 16k+ frames/s and the in-process server's snapshot came after the
    # disconnect had dropped its connection (2 snapshots, 3 resyncs) in some runs
    with SimExchange(speed=3, faults=faults) as ex, BookFeed(ex, checkpoint_every=3000) as bf:
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
    faults = Faults(stall_after=500, stall_s=4.0)
    with SimExchange(speed=None, faults=faults) as ex, \
            BookFeed(ex, silence_s=1.5, checkpoint_every=1000) as bf:
        wait_until(lambda: bf.feed.stats.connects == 2 and len(bf.frames) > 3000
                   and bf.book.valid and bf.checkpoints, 20, "reconnect after silence")
    assert bf.feed.stats.silences == 1 and bf.feed.stats.reconnects == 1
    assert_matches_simulator(bf.checkpoints)


def test_malformed_frame_is_counted_and_the_feed_goes_on() -> None:
    with SimExchange(speed=None, faults=Faults(malformed_after=300)) as ex, \
            BookFeed(ex, checkpoint_every=500) as bf:
        # a checkpoint (taken at frame 500 or later, after the malformed one at 300) needs the
        # book synced: under load its REST snapshot can come after frame 3000
        wait_until(lambda: len(bf.frames) > 3000 and bf.book.valid and bf.checkpoints, 20,
                   "3000 frames and a checkpoint")
    assert bf.feed.stats.malformed == 1
    assert bf.feed.normalizer.stats.malformed_total == 1
    assert bf.feed.stats.connects == 1
    assert sum(1 for f in bf.frames if f.startswith(b'{"stream":"malformed"')) == 1
    assert_matches_simulator(bf.checkpoints)


def test_failed_rest_snapshot_is_fetched_again_while_the_connection_lives() -> None:
    """The REST client gives up after its 5 retries (8 answers of 429); the feed fetches the
    snapshot again `resync_retry_s` later on the same connection, and the book syncs. Paced
    (a client flooded flat out reads its REST answers late)."""
    faults = Faults(rest_errors=8, rest_status=429, retry_after_s=0)
    with SimExchange(speed=5.0, faults=faults) as ex, \
            BookFeed(ex, resync_retry_s=0.2, checkpoint_every=500) as bf:
        wait_until(lambda: bf.book.valid and len(bf.frames) > 3000 and len(bf.checkpoints) >= 2,
                   20, "a valid book after the failed snapshot, and two checkpoints of it")
    stats = bf.feed.stats
    assert stats.snapshot_failures == 1 and stats.snapshots == 1 and stats.connects == 1
    assert ex.stats.rest_requests == {429: 8, 200: 1}
    assert_matches_simulator(bf.checkpoints)


def test_bad_arguments_and_unknown_venue() -> None:
    with pytest.raises(ConfigError, match="resync_retry_s"):
        WebSocketFeed("ws://127.0.0.1:1/stream", "binance-usdm", ["BTCUSDT"], lambda *a: None,
                      resync_retry_s=-1.0)
    with pytest.raises(ConfigError, match="unknown venue"):
        WebSocketFeed("ws://127.0.0.1:1/stream", "kraken", ["BTCUSDT"], lambda *a: None)


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


# ---- a real recording: ReplayFeed -> SimExchange -> WebSocketFeed -------------------------------

def reference_tops(messages: list[bytes], update_ids: set[int], n: int = 20
                   ) -> dict[int, tuple[np.ndarray, ...]]:
    """Top `n` levels of a dict book rebuilt with plain json from a recording's messages (its
    REST snapshot line plus the depth deltas by the USD-M rules), at each of `update_ids`."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    pending: list[dict] = []
    last_id = -1
    out: dict[int, tuple[np.ndarray, ...]] = {}

    def apply(delta: dict) -> None:
        nonlocal last_id
        if delta["u"] < last_id:
            return
        for levels, book in ((delta["b"], bids), (delta["a"], asks)):
            for price, qty in levels:
                if float(qty) == 0.0:
                    book.pop(float(price), None)
                else:
                    book[float(price)] = float(qty)
        last_id = delta["u"]
        if last_id in update_ids:
            b = sorted(bids.items(), reverse=True)[:n]
            a = sorted(asks.items())[:n]
            out[last_id] = (np.array([p for p, _ in b]), np.array([q for _, q in b]),
                            np.array([p for p, _ in a]), np.array([q for _, q in a]))

    for message in messages:
        if b'"depthUpdate"' not in message[:80] and b'"lastUpdateId"' not in message[:20]:
            continue
        doc = json.loads(message)
        if "lastUpdateId" in doc:
            last_id = doc["lastUpdateId"]
            bids.update((float(p), float(q)) for p, q in doc["bids"])
            asks.update((float(p), float(q)) for p, q in doc["asks"])
            for delta in pending:
                apply(delta)
            pending = []
        elif doc["data"]["e"] == "depthUpdate":
            if last_id < 0:
                pending.append(doc["data"])
            else:
                apply(doc["data"])
    return out


@pytest.mark.parametrize("wire", WIRES)
def test_recording_is_delivered_exactly_and_the_book_heals_after_gap_and_disconnect(
        shared_data: Path, wire: str) -> None:
    path = shared_data / USDM
    messages = [m for _, m in ReplayFeed(path, speed=None)]
    recorded = [m for m in messages if m.startswith(b'{"stream"')]
    # the gap 3,000 messages after the REST snapshot the client syncs from. Paced at 100x
    # (3.5 s): the server computes each snapshot by replaying the recording to its stream
    # position (~0.1-0.5 s); flat out, the client would take the next 40k messages in that
    # time and the gap's snapshot would arrive after the disconnect (and be discarded)
    faults = Faults(gap_after=3_000, gap_after_snapshot=True, disconnect_after=70_000)
    # a checkpoint every 2,500 frames while the book is valid (it is not for a while after
    # each of the three snapshots: the buffered deltas up to it are replayed)
    with SimExchange(path, speed=100, faults=faults) as ex, \
            BookFeed(ex, checkpoint_every=2500, wire=wire) as bf:
        wait_until(lambda: bf.stream_frames >= len(recorded) - 1 and bf.book.valid, 60,
                   "the whole recording and a valid book")
        time.sleep(0.2)  # nothing more may come
    got = [f for f in bf.frames if f.startswith(b'{"stream"')]
    # exactly the recording, in order, bytes-equal, but for the one delta the gap fault dropped
    assert len(got) == len(recorded) - 1
    skipped = next(i for i, (g, r) in enumerate(zip(got, recorded, strict=False)) if g != r)
    assert b'"depthUpdate"' in recorded[skipped]
    assert got == recorded[:skipped] + recorded[skipped + 1:]
    feed, sync = bf.feed, bf.sync
    assert feed.stats.connects == 2 and feed.stats.reconnects == 1
    assert sync.stats.gaps == 1 and feed.stats.gaps == 1
    assert feed.stats.snapshots >= 3 and ex.stats.rest_requests.get(200, 0) >= 3
    assert sync.stats.crossed == 0
    assert bf.book.valid
    want = reference_tops(messages, set(bf.checkpoints))
    assert len(bf.checkpoints) >= 10 and set(want) == set(bf.checkpoints)
    for update_id, top in bf.checkpoints.items():
        for got_side, want_side in zip(top, want[update_id], strict=True):
            np.testing.assert_array_equal(got_side, want_side)


def test_bybit_resync_resubscribes_and_the_venue_answers(shared_data: Path) -> None:
    frames: list[bytes] = []
    path = shared_data / "bybit/BYBIT.jsonl.zst"
    with SimExchange(path, venue="bybit", speed=None, conn="BYBIT.ws.3") as ex:
        feed = WebSocketFeed(ex.url + "/v5/public/spot", "bybit-spot", ["BTCUSDT"],
                             lambda batch, message, recv_ns: frames.append(message),
                             registry=SymbolRegistry())
        feed.start()
        try:
            wait_until(lambda: len(frames) > 100, 10, "bybit frames")
            feed.request_resync("BTCUSDT")
            wait_until(lambda: sum(b'"op":"subscribe"' in f for f in frames) == 2, 10,
                       "the second subscribe reply")
        finally:
            feed.stop()
    assert feed.rest is None and feed.stats.resyncs == 1 and feed.stats.gaps == 1
    topics = {f[10:f.index(b'"', 10)] for f in frames if f.startswith(b'{"topic":"')}
    assert topics <= {b"orderbook.200.BTCUSDT", b"publicTrade.BTCUSDT", b"tickers.BTCUSDT"}
    assert b"orderbook.200.BTCUSDT" in topics
    assert feed.stats.malformed == 0


def test_bybit_simulator_gap_resubscribes_and_reconnect_heals_the_book() -> None:
    """The simulator speaking Bybit v5: a dropped delta is a gap, the resync resubscribes,
    the venue answers with a fresh snapshot; after a disconnect the same. Checkpoints equal a
    same-seed simulator's top 50 at the same `u`."""
    sync = BookSync(get_venue("bybit").sequencing)
    registry = SymbolRegistry()
    checkpoints: dict[int, tuple[np.ndarray, ...]] = {}
    frames = [0]

    def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
        info = feed.normalizer.last
        book = sync.process(batch, info)
        frames[0] += 1
        if book is not None and info.kind == M_DELTA and frames[0] > 1500 * (
                len(checkpoints) + 1):
            checkpoints[info.last_id] = book.depth(50)

    faults = Faults(gap_after=3000, disconnect_after=8000)
    with SimExchange(venue="bybit", speed=None, faults=faults) as ex:
        feed = WebSocketFeed(ex.url + "/v5/public/linear", "bybit", ["BTCUSDT"], sink,
                             registry=registry, channels=("orderbook.50", "publicTrade"),
                             on_connect=sync.connection_reset)
        sync.on_resync = feed.request_resync
        feed.start()
        try:
            wait_until(lambda: frames[0] > 12000 and sync.is_valid(1), 20, "12k frames")
        finally:
            feed.stop()
    assert ex.stats.faults == {"gap": 1, "disconnect": 1}
    assert sync.stats.gaps == 1 and feed.stats.gaps == 1 and feed.stats.reconnects == 1
    assert sync.stats.snapshots >= 3 and sync.stats.crossed == 0
    assert len(checkpoints) >= 6
    sim = MarketSimulator(SimConfig(venue="bybit"))
    for update_id, (bid_px, bid_qty, ask_px, ask_qty) in sorted(checkpoints.items()):
        while sim.book_update_id < update_id:
            sim.step()
        bids, asks = sim.top(50)
        np.testing.assert_array_equal(bid_px, bids[:, 0])
        np.testing.assert_array_equal(bid_qty, bids[:, 1])
        np.testing.assert_array_equal(ask_px, asks[:, 0])
        np.testing.assert_array_equal(ask_qty, asks[:, 1])


# ---- frame splitting against a hand-written server (RFC 6455 section 5) ------------------------

def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it (7-, 16- or 64-bit length)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


async def _read_client_frame(reader) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next masked frame from the client."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _talk_raw(first: bytes, stream: bytes, replies_wanted: int, wire: str, seed: int = 5,
              piece: tuple[int, int] = (1, 300), gap_s: float = 0.0005, silence_s: float = 10.0
              ) -> tuple[list[bytes], list[tuple[int, bytes]], WebSocketFeed]:
    """A raw TCP server speaks the opening handshake (RFC 6455 section 4.2.2), sends `first`
    in the same write as the 101 response, reads the feed's subscribe frame, then writes
    `stream` in pieces of `piece` bytes (random in the range) `gap_s` apart and reads the
    feed's frames until it has `replies_wanted` (the subscribe included). Later connections
    (the feed reconnects once a close ended the first, until it is stopped) are closed at
    once. Returns (messages the sink got, the feed's frames as (opcode, payload), the stopped
    feed)."""
    import asyncio
    import base64
    import hashlib
    import random

    rng = random.Random(seed)
    got: list[bytes] = []
    replies: list[tuple[int, bytes]] = []

    async def main() -> WebSocketFeed:
        stopped = asyncio.Event()

        connections = 0

        async def serve(reader, writer) -> None:
            nonlocal connections
            connections += 1
            if connections > 1:  # the feed reconnects after the close: serve it nothing
                writer.close()
                return
            request = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                         + b"\r\n\r\n" + first)
            replies.append(await _read_client_frame(reader))  # the subscribe frame
            i = 0
            while i < len(stream):
                step = rng.randint(*piece)
                writer.write(stream[i:i + step])
                await writer.drain()
                await asyncio.sleep(gap_s)
                i += step
            while len(replies) < replies_wanted:
                replies.append(await _read_client_frame(reader))
            await stopped.wait()  # no reconnect to serve again before the feed is stopped
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        feed = WebSocketFeed(f"ws://127.0.0.1:{port}/stream", "binance-usdm", ["BTCUSDT"],
                             lambda batch, message, recv_ns: got.append(message),
                             registry=SymbolRegistry(), snapshots=False,
                             wire=wire, silence_s=silence_s)
        task = asyncio.ensure_future(feed.run())
        deadline = time.monotonic() + 20
        while len(replies) < replies_wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        feed.stop()
        stopped.set()
        await asyncio.wait_for(task, 10)
        server.close()
        return feed

    feed = asyncio.run(main())
    return got, replies, feed


@pytest.mark.parametrize("wire", WIRES)
def test_frames_split_across_reads_fragments_pings_and_close(wire: str) -> None:
    """Frames of 7-, 16- and 64-bit lengths written in pieces of 1-300 bytes, a fragmented
    message with a ping between its fragments, the first frame in the same write as the 101
    response, and a close: the sink gets every message whole and in order, the ping is
    answered with a pong of the same payload, and the close with a close."""
    rng = random.Random(7)
    whole = [b"first", b'{"a":1}', bytes(rng.randrange(256) for _ in range(300)),
             b"x" * 70_000, b"joined: one two three"]
    stream = (_server_frame(1, whole[1]) + _server_frame(2, whole[2])
              + _server_frame(1, whole[3])
              + _server_frame(1, b"joined: ", fin=False) + _server_frame(0, b"one ", fin=False)
              + _server_frame(9, b"are you there")
              + _server_frame(0, b"two three") + _server_frame(8, (1000).to_bytes(2, "big")))
    got, replies, feed = _talk_raw(_server_frame(1, whole[0]), stream, 3, wire)
    assert got == whole
    assert feed.stats.messages == len(whole)
    assert replies[1] == (0xA, b"are you there")  # pong
    assert replies[2][0] == 0x8 and replies[2][1][:2] == (1000).to_bytes(2, "big")  # close


@pytest.mark.parametrize("wire", WIRES)
def test_protocol_errors_close_with_1002_and_deliver_nothing_after(wire: str) -> None:
    """A new data message while a fragmented one is open, a masked frame from the server, or a
    continuation frame with no message open (RFC 6455 sections 5.4 and 5.1) fail the
    connection, with either wire: the feed answers with a close 1002 and delivers nothing of it
    or after it."""
    for bad in (_server_frame(1, b"half", fin=False) + _server_frame(1, b"new"),
                b"\x81\x83abcd" + bytes(b ^ k for b, k in zip(b"bad", b"abc", strict=True)),
                _server_frame(0, b"no message to continue")):
        got, replies, _ = _talk_raw(_server_frame(1, b"ok"), bad + _server_frame(1, b"late"), 2,
                                    wire)
        assert got == [b"ok"]
        assert replies[1][0] == 0x8 and replies[1][1][:2] == (1002).to_bytes(2, "big")


@pytest.mark.parametrize("wire", WIRES)
def test_pings_alone_keep_a_quiet_connection_alive(wire: str) -> None:
    """A server that sends only pings, 0.15 s apart, for longer than silence_s (0.5 s): every
    ping is answered and none of it counts as silence."""
    pings = b"".join(_server_frame(9, f"p{i}".encode()) for i in range(8))
    got, replies, feed = _talk_raw(_server_frame(1, b"ok"), pings, 9, wire, piece=(4, 4),
                                   gap_s=0.15, silence_s=0.5)
    assert got == [b"ok"]
    assert replies[1:] == [(0xA, f"p{i}".encode()) for i in range(8)]
    assert feed.stats.silences == 0 and feed.stats.connects == 1


@pytest.mark.parametrize("wire", WIRES)
def test_a_server_that_closes_during_the_handshake_is_a_failed_connect(wire: str) -> None:
    """A peer that accepts TCP and closes at once: each attempt fails cleanly (counted, named
    in last_error), and the feed gives up after max_connects."""
    import asyncio

    async def main() -> WebSocketFeed:
        async def serve(reader, writer) -> None:
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        feed = WebSocketFeed(f"ws://127.0.0.1:{port}/stream", "binance-usdm", ["BTCUSDT"],
                             lambda batch, message, recv_ns: None, registry=SymbolRegistry(),
                             snapshots=False, max_connects=2, backoff_s=0.0, backoff_max_s=0.0,
                             wire=wire)
        with pytest.raises(FeedError, match="2 connection attempts delivered nothing"):
            await asyncio.wait_for(feed.run(), 10)
        server.close()
        return feed

    feed = asyncio.run(main())
    assert feed.stats.connects == 0 and feed.stats.reconnects == 1
    assert feed.stats.last_error.startswith("Connection")  # ConnectionError or a reset
