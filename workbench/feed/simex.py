"""SimExchange: a real websocket server on loopback speaking a venue's market-data protocol.

It serves either a recording (read once through `ReplayFeed`: the recorded message bytes,
unchanged, in recorded order, paced by the recorded receive times scaled by `speed`, or flat
out with `speed=None`) or the built-in market simulator (`workbench.feed.simulator`, the
default source; Binance or Bybit format), filtered to what each connection subscribed. It runs
a `websockets.asyncio.server` on 127.0.0.1 in its own thread with its own asyncio loop; frames
go out in batches of at most `chunk` per socket write (paced: the messages already due).
Pacing waits on the loop's clock (ms resolution, ~1 ms late, which merges the recording's
bursts); with `spin_us` set (an exchange in a process of its own) it finishes with a short
blocking sleep and a spin, so a message leaves within ~0.1 ms of its due time.
A `Window` serves part of the source: fast-forward, pause, then paced.

Protocols: one per exchange family, `venue` picks it ('binance', 'bybit', 'coinbase', or a
venue key of theirs). What the server says and how it keys, frames and answers is the family's
SimExchange dialect (`Venue.dialect`, in the venue modules of `workbench.feed.venues`):
- binance: combined stream `/stream?streams=a/b/c` (messages `{"stream":..,"data":..}`) or raw
  `/ws` (the `data` part only), plus SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS requests.
- bybit: `/v5/public/{linear,spot,inverse,option}`, subscribe / unsubscribe / ping ops (with
  the simulator, a subscribe to an orderbook topic is followed by its snapshot, as Bybit does).
- coinbase: Advanced Trade, one subscribe per channel answered by a `subscriptions` message;
  `sequence_num` is per connection, so the server numbers its own frames.
The REST depth snapshot of every REST market of the family (`Venue.rest`: Binance
`GET /api/v3/depth`, `/fapi/v1/depth`, `/dapi/v1/depth?symbol=X&limit=N`) is served by the
same server on the same port (`rest_url`), with that market's legal limits, default limit and
request weights, the weight used in `X-MBX-USED-WEIGHT-1M` and HTTP 429 + `Retry-After` past
the market's weight limit ("General Info: LIMITS").

Subscriptions match a message by (channel, symbol), ignoring the update speed or depth
(`btcusdt@depth@0ms` and `btcusdt@depth@100ms` are one stream; `orderbook.50.X` and
`orderbook.200.X` are one topic), because a recording carries one of them. The dialect's
framer labels what goes out as subscribed (Binance: a `btcusdt@depth@100ms` subscription
gets frames named `btcusdt@depth@100ms`, also when the source recorded `@depth@0ms`).

Event times: as in the source by default (replay parity). With `now=True` (`--now`) the
dialect shifts every exchange time (Binance `E`, `T`; the futures REST snapshot's too) by one
constant offset, fixed at the first message or snapshot served from a market timeline (the
current clock minus that message's time), so times are near the current clock and the gaps
between them are the source's.

The REST snapshot is consistent with the stream: for a recording, the recorded snapshot line
until the stream passes it, then the book the exchange has at the stream position (the
recorded snapshot plus every recorded delta up to there, by the venue's sequencing rule), with
`lastUpdateId` the `u` of the last delta streamed (computed with the venue normalizer,
BookSync and L2Book, lazily per request); for the simulator, its current book.

TLS and slow endpoints: with `ssl_context` (a server context, `workbench.feed.tls`) the
server speaks wss:// and https:// on its port (`url`, `rest_url` say so). `accept_delay_s`
(settable while running; read once per connection) holds each new TCP connection for that
long before anything else happens on it: the TLS handshake, the websocket upgrade or the HTTP
request wait, so a client (or `EndpointScouter`'s TCP + TLS probe) sees a slower endpoint.
The kernel completes the TCP handshake itself, so a plain TCP connect does not see the delay.

Connections: each connection streams from the start of the source, except that with
`resume=True` (the default) a connection opened after one closed continues where that one
stopped (the exchange's market went on; nothing is replayed twice). The REST endpoint answers
for the most recent stream. Faults (`Faults`) fire on the first connection only unless
`every_connection=True`. `stop()` closes every connection with 1001 (going away); a client
that does not complete the close within a grace (at most CLOSE_GRACE_S, a quarter of the stop
timeout) is dropped, so `stop()` returns within its timeout whatever the clients do.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import heapq
import http
import itertools
import logging
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from workbench.errors import ConfigError, FeedError, RecordingError
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.tls import server_context
from workbench.feed.venues import (
    VENUES,
    Dialect,
    RestMarket,
    Venue,
    all_venues,
    get_venue,
    simulated_venue,
)

log = logging.getLogger("workbench.feed.simex")

HOST = "127.0.0.1"
MALFORMED_FRAME = b'{"stream":"malformed","data":{"e":"depthUpdate","b":[["1.0",'
DEEP_NESTING = 1000  # a JSON frame this deep (2 KB) overflows a recursive parser
DEEP_FRAME = b'{"deep":' + b"[" * DEEP_NESTING + b"]" * DEEP_NESTING + b"}"
LOOP_SLACK_NS = 2_000_000  # paced waits longer than this sleep in the event loop
SPIN_NS = 50_000  # the last this-many ns of a paced wait spin (sleep overshoots ~60 µs)
CLOSE_GRACE_S = 1.0  # stop(): longest wait for a client to complete the close handshake
Source = str | Path | list[str | Path]


@dataclass(frozen=True)
class Faults:
    """Faults to inject. Message counts are data messages sent on one connection.

    disconnect_after: close the connection (code 1001) after N messages.
    gap_after: drop the first book delta after N messages (a sequence gap for the client),
    counted from the connection start, or with `gap_after_snapshot` from the last REST depth
    snapshot served since the connection opened (nothing is dropped before one; the gap then
    surely falls after the book of a client that synced from that snapshot went live).
    malformed_after: send one truncated JSON frame after N messages (extra, nothing dropped).
    deep_json_after: send one valid but deeply nested JSON frame (`DEEP_FRAME`: 1,000 levels
    of arrays, 2 KB) after N messages (extra, nothing dropped).
    stall_after / stall_s: after N messages send nothing for S seconds (pings still answered).
    rest_errors / rest_status / retry_after_s: the first K REST depth requests answer
    `rest_status` (429 or 418) with `Retry-After: retry_after_s`.
    every_connection: fire the websocket faults on every connection, not only the first.
    """

    disconnect_after: int | None = None
    gap_after: int | None = None
    gap_after_snapshot: bool = False
    malformed_after: int | None = None
    deep_json_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0
    rest_errors: int = 0
    rest_status: int = 429
    retry_after_s: int = 1
    every_connection: bool = False

    def __post_init__(self) -> None:
        for name in ("disconnect_after", "gap_after", "malformed_after", "deep_json_after",
                     "stall_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"Faults.{name} must be None or >= 0, got {value!r}")
        if self.stall_s < 0 or self.retry_after_s < 0 or self.rest_errors < 0:
            raise ConfigError("Faults.stall_s, retry_after_s and rest_errors must be >= 0, got "
                              f"{self.stall_s!r}, {self.retry_after_s!r}, {self.rest_errors!r}")
        if self.rest_status not in (418, 429):
            raise ConfigError(f"Faults.rest_status must be 418 or 429, got {self.rest_status!r}")


@dataclass(frozen=True)
class Window:
    """Serve a window of the source on every connection (each from the source's start).

    Messages received less than `start_s` seconds (source time: recorded receive times, or
    simulated time) after the first message the connection is served are fast-forwarded: sent
    flat out, or at `ff_speed` times their pace (the client's book and strategy warm up on
    the real messages; a client that takes a REST snapshot gets it at a stream position that
    does not depend on timing when `ff_speed` leaves it the time). Then nothing for `pause_s`
    seconds of wall time (the client drains what it queued), then the source at the
    exchange's `speed` (flat out if None) for `duration_s` seconds of source time (None: to
    the end). After the window the connection stays open and silent, as at the end of a
    recording. Raises ConfigError for negative values.
    """

    start_s: float = 0.0
    pause_s: float = 0.5
    duration_s: float | None = None
    ff_speed: float | None = None

    def __post_init__(self) -> None:
        if not (self.start_s >= 0 and self.pause_s >= 0
                and (self.duration_s is None or self.duration_s > 0)
                and (self.ff_speed is None or self.ff_speed > 0)):
            raise ConfigError(f"Window: expected start_s >= 0, pause_s >= 0, duration_s and "
                              f"ff_speed None or > 0; got {self.start_s!r}, {self.pause_s!r}, "
                              f"{self.duration_s!r}, {self.ff_speed!r}")


@dataclass
class SimExchangeStats:
    """Counts since start: connections accepted, data messages and bytes sent, REST requests
    answered (by status), client frames that were not a valid request, faults fired, TLS
    handshakes that failed (e.g. the client did not trust the certificate)."""

    connections: int = 0
    messages: int = 0
    bytes: int = 0
    rest_requests: dict[int, int] = field(default_factory=dict)
    bad_requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    tls_failures: int = 0


class _Held(asyncio.Protocol):
    """The protocol of a connection while it is held (reading paused) and during its TLS
    handshake: keeps what arrives once the handshake is done (asyncio may deliver it before
    start_tls returns) and a connection lost meanwhile, for the websocket connection."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep the transport open: the websocket connection decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class _HeldConnection(ServerConnection):
    """websockets' server connection, opened after the exchange's accept delay and TLS
    handshake: the server listens on plain TCP, and each accepted connection waits
    `accept_delay_s` (reading paused), then upgrades to TLS (`loop.start_tls`) when the exchange
    has an ssl_context, then starts websockets' opening handshake (`connection_made`)."""

    def __init__(self, exchange: SimExchange, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchange = exchange

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ex = self.exchange
        delay, tls = ex.accept_delay_s, ex.ssl_context
        if delay <= 0 and tls is None:
            super().connection_made(transport)
            return
        transport.pause_reading()  # type: ignore[attr-defined]
        held = _Held()
        transport.set_protocol(held)
        task = self.loop.create_task(self._open(transport, held, delay, tls))
        ex._held.add(task)
        task.add_done_callback(ex._held.discard)

    async def _open(self, transport: asyncio.Transport, held: _Held, delay: float,
                    tls: ssl.SSLContext | None) -> None:
        try:
            await asyncio.sleep(delay)
            if tls is not None:
                transport = await self.loop.start_tls(transport, held, tls, server_side=True,
                                                      ssl_handshake_timeout=10.0)
        except (OSError, TimeoutError) as exc:  # the handshake failed; start_tls closed it
            self.exchange.stats.tls_failures += 1
            log.info("simex: TLS handshake failed: %s", exc)
            return
        except BaseException:  # stop() while held
            transport.abort()
            raise
        if held.lost:  # the client left while held or right after the handshake
            return
        transport.set_protocol(self)
        super().connection_made(transport)
        transport.resume_reading()
        for data in held.data:
            self.data_received(data)
        if held.eof:
            self.eof_received()


def _exchanges() -> tuple[str, ...]:
    """The exchange families SimExchange speaks (the dialects of the Venue records)."""
    return tuple(dict.fromkeys(v.exchange for v in all_venues() if v.exchange))


def _family(venue: str) -> tuple[Venue, ...]:
    """The records of the exchange family `venue` names: a family ('binance', 'bybit',
    'coinbase') or a venue key of one ('binance-usdm'). Raises ConfigError otherwise."""
    name = venue if venue in _exchanges() else (
        get_venue(venue).exchange if venue in VENUES else None)
    if name is None:
        raise ConfigError(f"venue must be one of {', '.join(_exchanges())} or a venue key they "
                          f"serve, got {venue!r}")
    return tuple(v for v in all_venues() if v.exchange == name)


# ---- sources --------------------------------------------------------------------------------

def _levels(prices: np.ndarray, qtys: np.ndarray) -> list[list[str]]:
    """[[price, qty], ...] as shortest round-trip decimal strings (parse back to the same
    float64)."""
    return [[repr(p), repr(q)] for p, q in zip(prices.tolist(), qtys.tolist(), strict=True)]


class _DepthBook:
    """The exchange-side truth of a recording's books for REST snapshots: the recording's own
    snapshots and deltas run through the venue's normalizer and BookSync (its sequencing
    rule) into L2Books, lazily up to the stream position."""

    def __init__(self, venue: Venue) -> None:
        from workbench.book.sync import BookSync
        from workbench.feed.symbols import SymbolRegistry

        self.registry = SymbolRegistry()
        self.normalizer = venue.normalizer(self.registry)
        self.sync = BookSync(venue.sequencing)
        self.event_ms: dict[int, int] = {}
        # the newest update id seen (snapshot or delta): in a valid book every delta up to it
        # is applied or was already in the snapshot
        self.last_id: dict[int, int] = {}

    def snapshot(self, symbol: bytes, body: bytes) -> None:
        self._process(self.normalizer.normalize_snapshot(body, 0, symbol.decode()))

    def delta(self, message: bytes) -> None:
        self._process(self.normalizer.normalize(message, 0))

    def _process(self, batch: np.ndarray) -> None:
        info = self.normalizer.last
        self.sync.process(batch, info)
        sid = info.symbol_id
        self.last_id[sid] = max(self.last_id.get(sid, -1), info.last_id)
        self.event_ms[sid] = max(self.event_ms.get(sid, 0), info.ts_event_ns // 1_000_000)

    def render(self, symbol: bytes, limit: int) -> bytes | None:
        """REST body of `symbol`'s book (top `limit`), None until it is in sync."""
        sid = self.registry.lookup(self.normalizer.venue, symbol.decode())
        if sid is None or not self.sync.is_valid(sid):
            return None
        bid_px, bid_qty, ask_px, ask_qty = self.sync.book(sid).depth(limit)
        ms = self.event_ms.get(sid, 0)
        return orjson.dumps({"lastUpdateId": self.last_id[sid], "E": ms, "T": ms,
                             "bids": _levels(bid_px, bid_qty), "asks": _levels(ask_px, ask_qty)})


class _Recording:
    """A recording loaded once through ReplayFeed: stream messages (recv_ns, key, bytes) and,
    for a family with REST markets, the recorded REST depth snapshots by stream position and
    symbol. venues: the family's records (`_family`)."""

    def __init__(self, source: Source, venues: tuple[Venue, ...], conn: str | None) -> None:
        from workbench.feed.replay import ReplayFeed

        dialect = venues[0].dialect
        feed = ReplayFeed(source, speed=None, conn=conn)
        # the recorded venue (e.g. Binance spot / USD-M / COIN-M) picks the REST books' rule
        rest_venues = {v.key: v for v in venues if v.rest is not None}
        self.book_venue = next((rest_venues[r.venue] for r in feed.recordings
                                if r.venue in rest_venues), next(iter(rest_venues.values()), None))
        self.times: list[int] = []
        self.keys: list[bytes] = []
        self.messages: list[bytes] = []
        self.snapshots: list[tuple[int, bytes, bytes]] = []  # (position, SYMBOL, REST body)
        bare: list[tuple[int, bytes]] = []
        for recv_ns, message in feed:
            key = dialect.message_key(message)
            snapshot = dialect.recorded_snapshot(key, message)
            if snapshot is not None:
                symbol, body = snapshot
                if symbol:
                    self.snapshots.append((len(self.messages), symbol, body))
                else:
                    bare.append((len(self.messages), body))
            elif key:
                self.times.append(recv_ns)
                self.keys.append(key)
                self.messages.append(message)
        if not self.messages:
            raise RecordingError(f"{source}: no {dialect.family} stream messages in this "
                                 "recording")
        # a bare REST snapshot line carries no symbol: it belongs to the only book symbol
        book_symbols = {dialect.book_symbol(k) for k in set(self.keys)} - {None} if bare else ()
        if len(book_symbols) == 1:
            symbol = book_symbols.pop()
            self.snapshots.extend((pos, symbol, body) for pos, body in bare)
            self.snapshots.sort(key=lambda item: item[0])
        self.delta_positions = [i for i, m in enumerate(self.messages)
                                if dialect.is_delta(m)] if self.snapshots else []
        if self.snapshots:  # load (or compile) the REST books' code now, not in a request
            warm = _DepthBook(self.book_venue)
            warm.snapshot(self.snapshots[0][1], self.snapshots[0][2])
            if self.delta_positions:
                warm.delta(self.messages[self.delta_positions[0]])


class _NowClock:
    """Moves exchange times (ms) of one market timeline to the current clock: one constant
    offset, fixed by the first time shifted (now minus that time)."""

    def __init__(self) -> None:
        self.offset_ms: int | None = None

    def shift(self, ms: int) -> int:
        if self.offset_ms is None:
            self.offset_ms = time.time_ns() // 1_000_000 - ms
        return ms + self.offset_ms


class _RecordingMarket:
    """One pass over a recording: the stream position and the REST books at that position.
    clock: the timeline's event clock (`now=True`), else None."""

    def __init__(self, recording: _Recording, clock: _NowClock | None) -> None:
        self.rec = recording
        self.clock = clock
        self.pos = 0
        self._books = _DepthBook(recording.book_venue) if recording.snapshots else None
        self._book_pos = 0  # index into rec.delta_positions
        self._snap_i = 0

    def next(self) -> tuple[int, bytes, bytes] | None:
        if self.pos >= len(self.rec.messages):
            return None
        i = self.pos
        self.pos += 1
        return self.rec.times[i], self.rec.keys[i], self.rec.messages[i]

    def snapshot(self, symbol: str, limit: int) -> bytes | None:
        wanted = symbol.encode()
        recorded = [body for _, sym, body in self.rec.snapshots if sym == wanted]
        if not recorded or self._books is None:
            return None
        self._catch_up()
        body = self._books.render(wanted, limit)
        if body is not None:
            return body
        # the stream has not reached the recorded snapshot (or lost sync): serve the recording's
        data = orjson.loads(recorded[0])
        if len(data["bids"]) <= limit and len(data["asks"]) <= limit:
            return recorded[0]
        data["bids"], data["asks"] = data["bids"][:limit], data["asks"][:limit]
        return orjson.dumps(data)

    def _catch_up(self) -> None:
        """Apply the recorded snapshots and deltas between the last call and the stream
        position, in recorded order."""
        rec = self.rec
        books = self._books
        deltas = rec.delta_positions
        end = bisect.bisect_left(deltas, self.pos)
        for i in deltas[self._book_pos:end]:
            while self._snap_i < len(rec.snapshots) and rec.snapshots[self._snap_i][0] <= i:
                _, symbol, body = rec.snapshots[self._snap_i]
                books.snapshot(symbol, body)
                self._snap_i += 1
            books.delta(rec.messages[i])
        self._book_pos = end


class _SimMarket:
    """The simulator: one MarketSimulator per symbol, merged in simulated time; messages keyed
    by the dialect the exchange speaks. clock: as for _RecordingMarket."""

    def __init__(self, configs: tuple[SimConfig, ...], dialect: Dialect,
                 clock: _NowClock | None) -> None:
        self.sims = {c.symbol: MarketSimulator(c) for c in configs}
        self.clock = clock
        self._key = dialect.subscription_key
        self._pending: list[tuple[int, int, bytes, bytes]] = []
        self._order = itertools.count()
        self._heap = [(sim.time_ns, i, sim) for i, sim in enumerate(self.sims.values())]
        heapq.heapify(self._heap)

    def next(self) -> tuple[int, bytes, bytes] | None:
        while not self._pending:
            _, i, sim = self._heap[0]
            for ts, stream, message in sim.step():
                self._pending.append((ts, next(self._order), self._key(stream), message))
            heapq.heapreplace(self._heap, (sim.time_ns, i, sim))
            self._pending.reverse()
        ts, _, key, message = self._pending.pop()
        return ts, key, message

    def snapshot(self, symbol: str, limit: int) -> bytes | None:
        sim = self.sims.get(symbol)
        return None if sim is None else sim.snapshot(limit)

    def book_message(self, symbol: str) -> list[bytes]:
        """The orderbook snapshot message of `symbol` a venue sends on subscribe (the Bybit
        dialect asks for it); [] for a symbol not simulated."""
        sim = self.sims.get(symbol)
        return [] if sim is None else [sim.bybit_snapshot()]


# ---- the server -----------------------------------------------------------------------------

class _Session:
    """One websocket connection: its subscriptions and fault counters (a
    `workbench.feed.venues.SimSession` for the dialect)."""

    def __init__(self, exchange: SimExchange, ws: ServerConnection, faults: Faults | None):
        self.ex = exchange
        self.ws = ws
        self.faults = faults
        self.subs: dict[bytes, list[bytes]] = {}  # key -> subscription names (UTF-8)
        self.sub_names: list[str] = []
        self.sent = 0
        self.since_rest = -1  # messages sent since the last REST snapshot, -1 before one
        self.rest_seen = exchange.rest_snapshots
        self.seq = 0  # the connection's own message counter (dialects that number frames)
        self.raw = False  # frames go out without their envelope (Dialect.accept decides)
        self.market: _RecordingMarket | _SimMarket | None = None
        self.streamer: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.fired: set[str] = set()

    def add(self, names: list[str]) -> None:
        for name in names:
            labels = self.subs.setdefault(self.ex.key_of_subscription(name), [])
            if name.encode() not in labels:
                labels.append(name.encode())
            if name not in self.sub_names:
                self.sub_names.append(name)
        if self.subs:
            self.subscribed.set()

    def remove(self, names: list[str]) -> None:
        """Unsubscribe each name as spelled (a key stays while another name selects it)."""
        for name in names:
            key = self.ex.key_of_subscription(name)
            labels = self.subs.get(key, [])
            if name.encode() in labels:
                labels.remove(name.encode())
                if not labels:
                    del self.subs[key]
            if name in self.sub_names:
                self.sub_names.remove(name)

    def simulated_book(self, symbol: str) -> list[bytes]:
        """The simulator's book of `symbol` as the venue sends it on subscribe; [] for a
        recording."""
        market = self.market
        return market.book_message(symbol) if isinstance(market, _SimMarket) else []

    def armed(self, name: str, after: int | None) -> bool:
        """Fault `name` applies to this connection, has not fired, and its message count (see
        Faults) has reached `after`."""
        if self.faults is None or after is None or name in self.fired:
            return False
        by_snapshot = name == "gap" and self.faults.gap_after_snapshot
        return (self.since_rest if by_snapshot else self.sent) >= after

    def fire(self, name: str) -> None:
        self.fired.add(name)
        self.ex.stats.faults[name] = self.ex.stats.faults.get(name, 0) + 1

    def due(self, name: str, after: int | None) -> bool:
        """True once, when fault `name` is armed (and then it has fired)."""
        if not self.armed(name, after):
            return False
        self.fire(name)
        return True


class SimExchange:
    """A simulated exchange on 127.0.0.1: websocket market data plus the REST depth markets.

    source: a recording (a path in any format ReplayFeed reads, or a list of paths played
    in order) or None for the simulator. conn: only that recorded connection's messages
    (captures of several connections, e.g. 'BYBIT.ws.3' for Bybit spot).
    venue: the exchange family, 'binance' | 'bybit' | 'coinbase', or a venue key of one
    ('binance-usdm' means 'binance'); its records give the dialect and the REST markets (all
    of the family's). The simulator speaks binance (USD-M) and bybit (linear): the family's
    record with a `simulator` format (`workbench.feed.venues.simulated_venue`).
    speed: replay speed (1.0 = recorded or simulated real time, N = N times faster),
    None = flat out. sim: SimConfig(s) of the simulated symbols (default one BTCUSDT).
    port: 0 picks a free port. chunk: most messages written per socket write when flat out (or,
    with precise pacing, the messages already due; paced on the loop alone, each message is its
    own write and the loop turns in between, so REST requests are served promptly). window:
    serve only a window of the source on each connection (`Window`: fast-forward, pause, paced
    part). spin_us: None (in-process use) paces on the event loop alone, which never blocks; a
    number makes pacing precise: the last LOOP_SLACK_NS of a wait is a blocking sleep (REST
    requests and other connections wait meanwhile) and its last `spin_us` µs a spin (a sleep
    overshoots by ~60 µs; spinning holds this thread's GIL): for a server process of its own
    (`python -m workbench.feed.simex`). now: shift exchange event times to the current clock
    (see the module docstring; off by default for replay parity; ConfigError for a dialect
    that cannot shift them). ssl_context: serve wss:// and https:// with this server context
    (`workbench.feed.tls.server_context`); None: ws:// and http://. accept_delay_s: seconds
    each new connection is held before its TLS handshake or opening handshake (>= 0; an
    attribute, so a test can make a running exchange slower).
    Use as a context manager or call start() / stop(); `url` and `rest_url` are valid after
    start(). Raises ConfigError for bad arguments, RecordingError for a bad recording and
    FeedError if the server cannot start within `start_timeout_s`.
    """

    def __init__(self, source: Source | None = None, *, venue: str = "binance",
                 speed: float | None = 1.0, sim: SimConfig | tuple[SimConfig, ...] | None = None,
                 port: int = 0, faults: Faults | None = None, resume: bool = True,
                 conn: str | None = None,
                 chunk: int = 64, window: Window | None = None, spin_us: float | None = None,
                 now: bool = False, start_timeout_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None,
                 accept_delay_s: float = 0.0) -> None:
        venues = _family(venue)
        if speed is not None and not speed > 0:
            raise ConfigError(f"speed must be > 0 or None (flat out), got {speed!r}")
        if not 0 <= port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {port!r}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk!r}")
        if spin_us is not None and not 0 <= spin_us <= 10_000:
            raise ConfigError(f"spin_us must be in 0..10000, got {spin_us!r}")
        self.venue = venues[0].exchange
        self.dialect = venues[0].dialect
        if now and not self.dialect.shifts_times:
            raise ConfigError(f"now=True: SimExchange cannot shift {self.venue} event times "
                              "(its dialect does not); expected a venue whose dialect does, "
                              "such as binance")
        self.now = now
        self.ssl_context = ssl_context
        self.accept_delay_s = accept_delay_s
        self.speed = speed
        self.faults = faults or Faults()
        self.resume = resume
        self.chunk = chunk
        self.window = window
        self._spin_ns = None if spin_us is None else int(spin_us * 1000)
        self.stats = SimExchangeStats()
        self._port = port
        self._start_timeout_s = start_timeout_s
        self._source = source
        self._conn = conn
        self._venues = venues
        if isinstance(sim, SimConfig):
            sim = (sim,)
        configs = sim or (SimConfig(),)
        if source is None:
            simulated = simulated_venue(self.venue)
            configs = tuple(dataclasses.replace(c, venue=simulated.simulator) for c in configs)
        self._sim_configs = configs
        self._rest_markets = {v.rest.path: v.rest for v in venues if v.rest is not None}
        self._recording: _Recording | None = None
        self._market: _RecordingMarket | _SimMarket | None = None
        self._owner: _Session | None = None  # the connection streaming _market, None after
        # made by a REST request before any connection: at the start, for the first connection
        self._fresh: _RecordingMarket | _SimMarket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._bound_port = 0
        self._connections: set[ServerConnection] = set()
        self._close_grace_s = CLOSE_GRACE_S
        self._weights: dict[str, int] = {}  # REST path -> weight used this minute
        self._weight_minute = 0
        self.rest_snapshots = 0  # REST depth snapshots served
        self._held: set[asyncio.Task] = set()  # connections held before their handshakes

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._bound_port

    @property
    def accept_delay_s(self) -> float:
        """Seconds each new connection is held before its handshakes (see the class)."""
        return self._accept_delay_s

    @accept_delay_s.setter
    def accept_delay_s(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ConfigError(f"accept_delay_s must be >= 0, got {seconds!r}")
        self._accept_delay_s = float(seconds)

    @property
    def url(self) -> str:
        """Websocket base URL, e.g. ws://127.0.0.1:PORT, wss:// with TLS (append
        /stream?streams=..., /v5/...)."""
        self._need_started()
        return f"{'wss' if self.ssl_context else 'ws'}://{HOST}:{self._bound_port}"

    @property
    def rest_url(self) -> str:
        """HTTP base URL of the REST depth endpoint (same port; https:// with TLS)."""
        self._need_started()
        return f"{'https' if self.ssl_context else 'http'}://{HOST}:{self._bound_port}"

    def _need_started(self) -> None:
        if not self._bound_port:
            raise FeedError("SimExchange is not started: call start() or use it as a context "
                            "manager first")

    def start(self) -> SimExchange:
        """Load the source, start the server thread and wait until it listens."""
        if self._thread is not None:
            raise FeedError("SimExchange already started")
        if self._source is not None:
            self._recording = _Recording(self._source, self._venues, self._conn)
        self._thread = threading.Thread(target=self._run, name="simex", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s):
            raise FeedError(f"SimExchange did not start within {self._start_timeout_s} s")
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            raise FeedError(f"SimExchange failed to start on {HOST}:{self._port}: "
                            f"{self._error}") from self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every connection (1001 going away) and the server, join the thread; returns
        within `timeout_s` whatever the clients do (one that does not complete the close within
        min(CLOSE_GRACE_S, timeout_s / 4) is dropped). Raises FeedError only if the server
        thread is still running after `timeout_s` (a fault of the server, not of a client)."""
        if self._thread is None:
            return
        self._close_grace_s = min(CLOSE_GRACE_S, timeout_s / 4)
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise FeedError(f"SimExchange thread did not stop within {timeout_s} s")
        self._thread = None

    def __enter__(self) -> SimExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        # the Runner's close cancels and awaits what the server leaves behind (a connection
        # still in its opening handshake) before closing the loop, as asyncio.run does
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            try:
                runner.run(self._serve())
            except BaseException as exc:  # reported by start()
                self._error = exc
                self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await serve(self._handle, HOST, self._port, process_request=self._http,
                             compression=None, max_size=2**20, ping_interval=None,
                             create_connection=functools.partial(_HeldConnection, self))
        self._bound_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        for task in list(self._held):  # connections not yet handed to websockets
            task.cancel()
        grace = self._close_grace_s
        for ws in self._connections:
            ws.close_timeout = grace
        server.close(close_connections=True)  # 1001 going away to every open connection
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), grace)
            return
        # a client that neither completes the close nor reads: drop its TCP connection
        log.info("simex: %d client(s) did not close within %.2f s; dropping them",
                 len(self._connections), grace)
        for ws in list(self._connections):
            ws.transport.abort()
        with contextlib.suppress(TimeoutError):  # what is left, the loop's close cancels
            await asyncio.wait_for(server.wait_closed(), grace)

    # ---- subscriptions ---------------------------------------------------------------------
    def key_of_subscription(self, name: str) -> bytes:
        """The message key a subscription name selects (see the module docstring)."""
        return self.dialect.subscription_key(name)

    def _take_market(self, session: _Session) -> _RecordingMarket | _SimMarket:
        """The market `session` streams: the one a REST request made before any connection;
        with resume, the last stream's once its connection ended or is closing (its streamer
        is cancelled: it takes nothing more from it; its handler may still be winding down);
        else a new one."""
        market, owner = self._market, self._owner
        if self._fresh is not None:
            market, self._fresh = self._fresh, None
        elif not (self.resume and market is not None
                  and (owner is None or owner.ws.state is not State.OPEN)):
            market = self._new_market()
        elif owner is not None and owner.streamer is not None:
            owner.streamer.cancel()
        self._market, self._owner = market, session
        return market

    def _new_market(self) -> _RecordingMarket | _SimMarket:
        clock = _NowClock() if self.now else None
        if self._recording is not None:
            return _RecordingMarket(self._recording, clock)
        return _SimMarket(self._sim_configs, self.dialect, clock)

    # ---- websocket -------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        self.stats.connections += 1
        first = self.stats.connections == 1
        session = _Session(self, ws, self.faults if first or self.faults.every_connection
                           else None)
        path = urlsplit(ws.request.path if ws.request else "/")
        accepted = self.dialect.accept(path.path, path.query)
        if accepted is None:
            await ws.close(1008, f"unknown path {path.path}")
            return
        initial, session.raw = accepted
        session.add(initial)
        market = session.market = self._take_market(session)
        self._connections.add(ws)
        reader = asyncio.create_task(self._read_requests(session))
        streamer = session.streamer = asyncio.create_task(self._stream(session, market))
        closed = asyncio.create_task(ws.wait_closed())
        tasks = (streamer, reader, closed)
        try:  # the stream ends, or the connection closes under it (wherever it waits)
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connections.discard(ws)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._owner is session:
                self._owner = None
        for task in (streamer, reader):  # a server fault: websockets logs it, closes with 1011
            if task.done() and not task.cancelled():
                with contextlib.suppress(ConnectionClosed):
                    task.result()

    async def _read_requests(self, session: _Session) -> None:
        async for frame in session.ws:
            try:
                request = orjson.loads(frame)
                replies = self.dialect.answer(request, session)
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError,
                    FeedError):
                self.stats.bad_requests += 1
                log.warning("simex: bad client request %.200r", frame)
                replies = [self.dialect.bad_request]
            await self._write(session.ws, replies)  # an ack and its snapshot go together

    async def _stream(self, session: _Session, market: _RecordingMarket | _SimMarket) -> None:
        await session.subscribed.wait()
        faults = self.faults
        speed = self.speed
        window = self.window
        clock = time.perf_counter_ns
        is_delta = self.dialect.is_delta
        frame = self.dialect.framer(session)
        retime = self.dialect.shift_times if market.clock is not None else None
        first_ts = ff_end = end_ts = None  # source times: first message, fast-forward end, end
        t0_wall = t0_src = None  # pacing origin
        out: list[bytes] = []
        while True:
            item = market.next()
            if item is None:  # recording finished: keep the connection open, send nothing
                await self._flush(session, out)
                await session.ws.wait_closed()
                return
            ts, key, message = item
            if first_ts is None:
                first_ts = ts
                if window is not None:
                    ff_end = ts + int(window.start_s * 1e9)
            if ff_end is not None and ts >= ff_end:  # fast-forward done: pause, then pace
                ff_end = t0_src = None
                await self._flush(session, out)
                await asyncio.sleep(window.pause_s)
                if window.duration_s is not None:
                    end_ts = ts + int(window.duration_s * 1e9)
            if end_ts is not None and ts >= end_ts:  # the window is over: as at the end
                await self._flush(session, out)
                await session.ws.wait_closed()
                return
            if key not in session.subs:
                continue
            pace = speed if ff_end is None else window.ff_speed
            if pace is not None:
                if t0_src is None:
                    t0_wall, t0_src = clock(), ts
                due = t0_wall + int((ts - t0_src) / pace)
                if due > clock():  # what is due goes out in one write, then wait for this one
                    await self._flush(session, out)
                    await self._wait_until(due)
            if session.rest_seen != self.rest_snapshots:
                session.rest_seen, session.since_rest = self.rest_snapshots, 0
            if session.armed("gap", faults.gap_after) and is_delta(message):
                session.fire("gap")  # the first book delta after N messages is never sent
                continue
            if retime is not None:
                message = retime(message, market.clock.shift)
            framed = frame(message) if frame is not None else message
            if type(framed) is bytes:
                out.append(framed)
            else:  # one message, several subscriptions selecting it
                out.extend(framed)
            session.sent += 1
            if session.since_rest >= 0:
                session.since_rest += 1
            if session.due("malformed", faults.malformed_after):
                out.append(MALFORMED_FRAME)
            if session.due("deep_json", faults.deep_json_after):
                out.append(DEEP_FRAME)
            if session.due("stall", faults.stall_after):
                await self._flush(session, out)
                with contextlib.suppress(TimeoutError):  # silent, unless the client hangs up
                    await asyncio.wait_for(session.ws.wait_closed(), faults.stall_s)
            if session.due("disconnect", faults.disconnect_after):
                await self._flush(session, out)
                await session.ws.close(1001, "simex: injected disconnect")
                return
            if len(out) >= self.chunk or (pace is not None and self._spin_ns is None):
                await self._flush(session, out)

    async def _wait_until(self, due_ns: int) -> None:
        """Wait until perf_counter_ns() reaches `due_ns`: the event loop's sleep (ms
        resolution); precise pacing (spin_us set) sleeps on the loop for all but the last
        LOOP_SLACK_NS, then a blocking sleep (the loop waits at most that long), then a spin of
        at most `spin_us`."""
        left = due_ns - time.perf_counter_ns()
        if self._spin_ns is None:
            if left > 0:
                await asyncio.sleep(left / 1e9)
            return
        if left > LOOP_SLACK_NS:
            await asyncio.sleep((left - LOOP_SLACK_NS) / 1e9)
            left = due_ns - time.perf_counter_ns()
        if left > self._spin_ns:
            time.sleep((left - self._spin_ns) / 1e9)
        while time.perf_counter_ns() < due_ns:
            pass

    async def _flush(self, session: _Session, out: list[bytes]) -> None:
        """Write the buffered frames with one socket write and flow control."""
        if not out:
            return
        await self._write(session.ws, out)
        self.stats.messages += len(out)
        self.stats.bytes += sum(map(len, out))
        out.clear()
        await asyncio.sleep(0)  # let REST requests, reads and connection_lost run

    @staticmethod
    async def _write(ws: ServerConnection, frames: list[bytes]) -> None:
        """Send text frames, framed by the connection's websockets protocol (`send_text`), with
        one socket write (the connection's send() would write frame by frame), under its state
        check and flow control (`send_context`)."""
        async with ws.send_context():
            protocol = ws.protocol
            for frame in frames:
                protocol.send_text(frame)
            ws.transport.write(b"".join(protocol.data_to_send()))

    # ---- REST ------------------------------------------------------------------------------
    def _http(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        rest = self._rest_markets.get(url.path)
        if rest is None:
            return self._json(404, {"code": -1, "msg": f"unknown path {url.path}"})
        used = self._used_weight(rest)
        total = sum(self.stats.rest_requests.values())
        if total < self.faults.rest_errors:
            self.stats.faults["rest"] = self.stats.faults.get("rest", 0) + 1
            return self._json(self.faults.rest_status,
                              {"code": -1003, "msg": "simex: injected rate limit"},
                              used=used, retry_after=self.faults.retry_after_s)
        query = parse_qs(url.query)
        symbol = query.get("symbol", [""])[0].upper()
        if not symbol:
            return self._json(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was "
                                    "not sent, was empty/null, or malformed."}, used=used)
        limit_s = query.get("limit", [str(rest.default_limit)])[0]
        limit = int(limit_s) if limit_s.isdigit() else -1
        if limit not in rest.limits:
            return self._json(400, {"code": -1100, "msg": "Illegal characters found in "
                                    f"parameter 'limit'; legal values: {rest.limits}."},
                              used=used)
        used = self._weights[rest.path] = used + rest.weight(limit)
        if used > rest.weight_limit_1m:
            return self._json(429, {"code": -1003, "msg": "Too many requests"}, used=used,
                              retry_after=60 - int(time.time()) % 60)
        market = self._market
        if market is None:  # before any connection: the start (the first connection's market)
            market = self._fresh = self._fresh or self._new_market()
        body = market.snapshot(symbol, limit)
        if body is None:
            return self._json(400, {"code": -1121, "msg": f"Invalid symbol {symbol} "
                                    "(or no snapshot recorded for it)."}, used=used)
        body = self.dialect.rest_body(rest, symbol, body,
                                      market.clock.shift if market.clock is not None else None)
        self.rest_snapshots += 1
        return self._response(200, body, used)

    def _used_weight(self, rest: RestMarket) -> int:
        """The request weight used on `rest` in this calendar minute (each market has its
        own window)."""
        minute = int(time.time()) // 60
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weights.clear()
        return self._weights.get(rest.path, 0)

    def _json(self, status: int, payload: dict[str, Any], used: int | None = None,
              retry_after: int | None = None) -> Response:
        return self._response(status, orjson.dumps(payload), used, retry_after)

    def _response(self, status: int, body: bytes, used: int | None,
                  retry_after: int | None = None) -> Response:
        """An HTTP response; `used` (the market's weight this minute) goes in
        X-MBX-USED-WEIGHT-1M, none for a request to no market."""
        self.stats.rest_requests[status] = self.stats.rest_requests.get(status, 0) + 1
        headers = Headers([("Content-Type", "application/json"),
                           ("Content-Length", str(len(body))), ("Connection", "close")])
        if used is not None:
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return Response(status, http.HTTPStatus(status).phrase, headers, body)


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.feed.simex [--source PATH] [--venue V] [--speed X|flat]
    [--no-resume] [--window-start-s S [--window-s N] [--pause-s P] [--ff-speed F]]
    [--spin-us U] [--now] [--cert PEM --key PEM] [--accept-delay-ms D]
    [--disconnect-after N] [--quiet-after N]`: serve until stdin closes;
    prints `READY <url>` on stdout once listening (benchmarks run the server in its own
    process this way)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench.feed.simex")
    parser.add_argument("--source", default=None, help="recording path (default: simulator)")
    parser.add_argument("--venue", default="binance", choices=_exchanges())
    parser.add_argument("--speed", default="1", help="replay speed, or 'flat' for flat out")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true",
                        help="every connection streams from the start of the source")
    parser.add_argument("--disconnect-after", type=int, default=None,
                        help="close every connection after this many messages")
    parser.add_argument("--window-start-s", type=float, default=None,
                        help="serve a window: fast-forward this many source seconds, pause, "
                             "then pace (see Window)")
    parser.add_argument("--window-s", type=float, default=None,
                        help="seconds of source time paced in the window (default: to the end)")
    parser.add_argument("--ff-speed", type=float, default=None,
                        help="pace of the fast-forward (default: flat out)")
    parser.add_argument("--pause-s", type=float, default=0.5,
                        help="wall seconds of silence between fast-forward and paced part")
    parser.add_argument("--spin-us", type=float, default=50.0,
                        help="paced waits spin for their last this-many µs")
    parser.add_argument("--quiet-after", type=int, default=None,
                        help="send nothing more after this many messages on a connection "
                             "(until the client hangs up)")
    parser.add_argument("--now", action="store_true",
                        help="shift event times to the current clock (one constant offset)")
    parser.add_argument("--cert", default=None,
                        help="serve wss:// and https:// with this certificate (PEM; "
                             "workbench.feed.tls.self_signed makes one)")
    parser.add_argument("--key", default=None, help="the --cert's private key (PEM)")
    parser.add_argument("--accept-delay-ms", type=float, default=0.0,
                        help="hold each new connection this long before its handshakes")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    speed = None if args.speed == "flat" else float(args.speed)
    faults = Faults(disconnect_after=args.disconnect_after, stall_after=args.quiet_after,
                    stall_s=3600.0 if args.quiet_after is not None else 0.0,
                    every_connection=True)
    window = (Window(args.window_start_s, args.pause_s, args.window_s, args.ff_speed)
              if args.window_start_s is not None else None)
    try:
        exchange = SimExchange(args.source, venue=args.venue, speed=speed, port=args.port,
                               resume=not args.no_resume, faults=faults, window=window,
                               spin_us=args.spin_us, now=args.now,
                               ssl_context=(server_context(args.cert, args.key)
                                            if args.cert is not None else None),
                               accept_delay_s=args.accept_delay_ms / 1000)
    except (ConfigError, OSError) as exc:
        parser.error(str(exc))
    with exchange as ex:
        print(f"READY {ex.url}", flush=True)
        try:
            sys.stdin.read()
        except KeyboardInterrupt:  # a SIGINT to the process group (a kernel shut down)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
