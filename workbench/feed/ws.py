"""WebSocketFeed: connect, subscribe, normalize, hand batches to a sink; reconnect and resync.

One websocket connection at a time to `url`, spoken by a websocket library (a `Wire`, see
`workbench.feed.wires`: picows by default, or websockets): every frame of one socket read is
stamped with the `time.perf_counter_ns()` of that read (the receive time, `ts_recv_ns`; no
queue between the socket and the stamp), normalized by the venue normalizer, and given to the
sink in the same callback:

    sink(batch, message, recv_ns) -> None

batch: the message's events, a view of the normalizer's reused EVENT_DTYPE batch, shape (n,),
valid only during the call (copy to keep); n is 0 for acks, unknown and malformed messages.
message: the raw frame bytes. recv_ns: the perf_counter_ns stamp. `feed.normalizer.last`
(MessageInfo) describes the message during the call (kind, symbol_id, venue update ids) for
`BookSync`. REST depth snapshots fetched for a resync reach the sink the same way (message =
the REST body). The sink runs on the feed's loop thread and must not block.

Connection handling: a dead connection (closed, error, or `silence_s` without a frame) is
reopened with exponential backoff and full jitter (delay uniform in [0, min(backoff_max_s,
backoff_s * 2**attempt)], reset after a connection that delivered frames), and the
subscriptions are sent again. `switch_endpoint(url)` closes the connection and reopens at
the new URL at once, with the same subscriptions. `request_resync(symbol)` (e.g. from
BookSync on a gap) fetches a REST depth snapshot where the venue has a REST depth market
(`Venue.rest`: Binance), or resends the subscribe frames (Bybit, Coinbase: the venue answers
with a fresh snapshot). A REST snapshot that fails (FeedError: retries exhausted, a final HTTP
answer) is fetched again after `resync_retry_s`, for as long as the connection lives. On every
(re)connect to a venue with a REST depth market and `snapshots=True`, a snapshot per symbol is
fetched after subscribing (the Binance "How to manage a local order book correctly"
procedure). Venue facts (normalizer, subscribe frames, REST market) come from the venue's
record (`workbench.feed.venues.get_venue`).

Run it on a thread with its own loop (`start()` / `stop()`, asyncio or uvloop), or await
`run()` in a loop you own (stop it with `stop()` from any thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import ConfigError, FeedError
from workbench.events import M_MALFORMED
from workbench.feed.rest import DepthSnapshotClient, full_jitter_s
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues import get_venue
from workbench.feed.venues.base import Normalizer
from workbench.feed.wires import OPEN_ERRORS, WIRES, Wire, open_wire

log = logging.getLogger("workbench.feed.ws")

Sink = Callable[[np.ndarray, bytes, int], None]
LOOPS = ("asyncio", "uvloop")


@dataclass
class FeedStats:
    """Counts since construction. messages/bytes: frames received; events: events handed to
    the sink; connects: connections opened; reconnects: reopened after a failure (not a
    switch); silences: connections dropped for silence; malformed: frames the normalizer
    skipped as malformed; resyncs: resync requests; gaps: those of them that came after the
    symbol's book was synced on this connection (a Binance snapshot delivered, or any frame on
    other venues), i.e. sequence gaps seen by BookSync; snapshots: REST snapshots delivered;
    snapshot_failures: REST snapshots that failed (each fetched again after resync_retry_s);
    switches: switch_endpoint calls served; last_error: the last connection error."""

    messages: int = 0
    bytes: int = 0
    events: int = 0
    connects: int = 0
    reconnects: int = 0
    silences: int = 0
    malformed: int = 0
    resyncs: int = 0
    gaps: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    switches: int = 0
    last_error: str = ""


class WebSocketFeed:
    """A reconnecting websocket market-data feed for one venue and a set of symbols.

    url: ws:// or wss:// URL as the venue wants it (Binance `.../stream`, Bybit
    `.../v5/public/linear`, Coinbase `wss://advanced-trade-ws.coinbase.com`).
    venue: a venue key of `workbench.feed.venues.VENUES` ('binance', 'binance-usdm', 'bybit',
    'coinbase', ...; its record is `self.record`). symbols: venue symbols ('BTCUSDT',
    'BTC-USD'). sink: see the module docstring. channels: passed to the venue's subscribe
    builder (None: its defaults). normalizer: one to use instead of the venue's own.
    silence_s: seconds without a frame that mark a connection dead. rest_url: base URL of the
    venue's REST depth market (None: the real venue's). snapshots: fetch a REST snapshot per
    symbol on each connect (venues with a REST depth market). resync_retry_s: seconds before a
    failed REST snapshot is fetched again. max_connects: give up (FeedError from run())
    after this many connection attempts in a row without a frame; None: never.
    on_connect(): called on the feed's loop after each (re)connect and subscribe, before any
    frame, e.g. `BookSync.connection_reset` (whose resync requests go to `request_resync`).
    wire: the websocket library (`workbench.feed.wires`): 'picows' (compiled, the default) or
    'websockets'. ca_file: a PEM file of the CA certificates trusted on wss:// and https://
    (the websocket and the REST snapshots; None: the system's, `workbench.feed.tls`).
    Raises ConfigError for bad arguments (an unknown venue included).
    """

    def __init__(self, url: str, venue: str, symbols: list[str] | tuple[str, ...], sink: Sink,
                 *, channels: tuple[str, ...] | None = None,
                 registry: SymbolRegistry = SYMBOLS, normalizer: Normalizer | None = None,
                 silence_s: float = 10.0, backoff_s: float = 0.05, backoff_max_s: float = 5.0,
                 open_timeout_s: float = 5.0, rest_url: str | None = None,
                 snapshots: bool = True, snapshot_limit: int = 1000,
                 resync_retry_s: float = 1.0, max_connects: int | None = None,
                 on_connect: Callable[[], None] | None = None, wire: str = "picows",
                 seed: int | None = None, ca_file: str | None = None) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"url must start with ws:// or wss://, got {url!r}")
        if not symbols:
            raise ConfigError("symbols must name at least one symbol, got none")
        if silence_s <= 0 or backoff_s < 0 or backoff_max_s < backoff_s or open_timeout_s <= 0:
            raise ConfigError("expected silence_s > 0, 0 <= backoff_s <= backoff_max_s, "
                              f"open_timeout_s > 0; got {silence_s}, {backoff_s}, "
                              f"{backoff_max_s}, {open_timeout_s}")
        if resync_retry_s < 0:
            raise ConfigError(f"resync_retry_s must be >= 0, got {resync_retry_s}")
        if max_connects is not None and max_connects < 1:
            raise ConfigError(f"max_connects must be None or >= 1, got {max_connects}")
        if wire not in WIRES:
            raise ConfigError(f"wire must be one of {WIRES}, got {wire!r}")
        self.wire = wire
        self.ca_file = ca_file
        self.url = url
        self.venue = venue
        self.record = get_venue(venue)
        self.symbols = [s.upper() for s in symbols]
        self.sink = sink
        self.normalizer = normalizer or self.record.normalizer(registry)
        self.subscribe_frames = self.record.subscribe(self.symbols, channels)
        self.silence_s = silence_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.max_connects = max_connects
        self.snapshot_limit = snapshot_limit
        self.resync_retry_s = resync_retry_s
        self.on_connect = on_connect
        self.registry = self.normalizer.registry
        self.stats = FeedStats()
        market = self.record.rest
        self.rest = (DepthSnapshotClient(market, rest_url, ca_file=ca_file)
                     if market is not None else None)
        self.snapshots = snapshots and self.rest is not None
        self._rng = random.Random(seed)
        self._wire: Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._switch_to: str | None = None
        self._resyncing: set[str] = set()
        self._synced: set[str] = set()  # symbols with a snapshot on this connection
        self._in_connect = False
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.error: BaseException | None = None
        self.connected = threading.Event()

    # ---- control (any thread) --------------------------------------------------------------
    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the feed: close the connection, end run(), join the thread if start() made it.
        Raises FeedError if the thread does not end within `timeout_s`."""
        self._stopping = True
        self._call(self._close_current, "stop")
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise FeedError(f"WebSocketFeed thread did not stop within {timeout_s} s")
            self._thread = None

    def switch_endpoint(self, url: str) -> None:
        """Move to `url` now, keeping the subscriptions (closes the current connection)."""
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"url must start with ws:// or wss://, got {url!r}")
        self._switch_to = url
        self._call(self._close_current, "switch")

    def request_resync(self, symbol: int | str) -> None:
        """Ask for a fresh book of `symbol` (a venue symbol string, or a symbol_id of this
        feed's registry, as BookSync's on_resync passes): a REST snapshot where the venue has
        a REST depth market (retried after `resync_retry_s` while it fails), the subscribe
        frames again elsewhere. Thread-safe; a request while one for the same
        symbol is in flight is merged."""
        name = self.registry.symbol(symbol) if isinstance(symbol, int) else symbol.upper()
        self.stats.resyncs += 1
        if not self._in_connect and (name in self._synced if self.rest is not None
                                     else self._wire is not None and self.stats.messages > 0):
            self.stats.gaps += 1
        self._synced.discard(name)
        self._call(self._spawn_resync, name)

    def _call(self, fn: Callable[[str], object], arg: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            fn(arg)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(fn, arg)

    def _close_current(self, reason: str) -> None:
        wire = self._wire
        if wire is not None:
            wire.close(reason)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- thread helper ---------------------------------------------------------------------
    def start(self, loop: str = "asyncio") -> WebSocketFeed:
        """Run the feed on a new daemon thread with its own event loop ('asyncio' or
        'uvloop'). Returns self; `stop()` ends it."""
        if loop not in LOOPS:
            raise ConfigError(f"loop must be one of {LOOPS}, got {loop!r}")
        if self._thread is not None:
            raise FeedError("WebSocketFeed already started")
        self._thread = threading.Thread(target=self._thread_main, args=(loop,),
                                        name="ws-feed", daemon=True)
        self._thread.start()
        return self

    def _thread_main(self, loop_kind: str) -> None:
        if loop_kind == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.run())
        except BaseException as exc:  # kept for the caller: feed.error
            self.error = exc
            log.error("ws feed stopped on error: %s", exc)
        finally:
            loop.close()

    def wait(self, timeout_s: float) -> bool:
        """Wait until run() has ended (stop(), give-up, error); True if it did."""
        return self._done.wait(timeout_s)

    # ---- the coroutine ---------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe and pump frames until stop(). Raises FeedError after
        `max_connects` attempts in a row that delivered nothing."""
        self._loop = asyncio.get_running_loop()
        self._done.clear()
        failures = 0
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            while not self._stopping:
                if self._switch_to is not None:
                    self.url, self._switch_to = self._switch_to, None
                    self.stats.switches += 1
                    failures = 0
                delivered = await self._session(self.url)
                if self._stopping:
                    break
                if self._switch_to is not None:
                    continue
                failures = 0 if delivered else failures + 1
                if self.max_connects is not None and failures >= self.max_connects:
                    raise FeedError(f"{self.url}: {failures} connection attempts delivered "
                                    f"nothing; last error: {self.stats.last_error}")
                self.stats.reconnects += 1
                await asyncio.sleep(full_jitter_s(self._rng, failures, self.backoff_s,
                                                  self.backoff_max_s))
        finally:
            watchdog.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(watchdog, *self._tasks, return_exceptions=True)
            if self.rest is not None:
                await self.rest.aclose()
            self.connected.clear()
            self._done.set()

    async def _session(self, url: str) -> bool:
        """One connection: open, subscribe, deliver frames until it ends. Returns True if any
        frame arrived. Raises what the sink raised."""
        received = self.stats.messages
        wire: Wire | None = None
        try:
            wire = await open_wire(self.wire, url, self._deliver, self.open_timeout_s,
                                   self.ca_file)
            self._wire = wire
            self.stats.connects += 1
            for frame in self.subscribe_frames:
                wire.send_text(frame)
            self._resyncing.clear()
            self._synced.clear()
            if self.on_connect is not None:
                self._in_connect = True
                try:
                    self.on_connect()
                finally:
                    self._in_connect = False
            if self.snapshots:
                for symbol in self.symbols:
                    self._spawn_resync(symbol)
            self.connected.set()
            await wire.wait_closed()
            if wire.error is not None:
                raise wire.error
            self.stats.last_error = wire.closed_info
        except OPEN_ERRORS as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("ws %s: %s", url, self.stats.last_error)
        finally:
            self._wire = None
            self.connected.clear()
            if wire is not None:
                wire.abort()
        return self.stats.messages > received

    def _deliver(self, message: bytes, recv_ns: int) -> None:
        """One received frame: normalize, count, hand to the sink (on the loop thread)."""
        batch = self.normalizer.normalize(message, recv_ns)
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(message)
        n = len(batch)
        if n:
            stats.events += n
        elif self.normalizer.last.kind == M_MALFORMED:
            stats.malformed += 1
        self.sink(batch, message, recv_ns)

    async def _watchdog(self) -> None:
        """Close a connection that has been silent for `silence_s`."""
        period = min(self.silence_s / 4, 0.5)
        while True:
            await asyncio.sleep(period)
            wire = self._wire
            if wire is None:
                continue
            silent_s = (time.perf_counter_ns() - wire.last_read_ns) / 1e9
            if silent_s >= self.silence_s:
                self.stats.silences += 1
                self.stats.last_error = f"silent for {silent_s:.1f} s"
                log.warning("ws %s: no frame for %.1f s, reconnecting", self.url, silent_s)
                self._wire = None
                wire.abort()

    # ---- resync ----------------------------------------------------------------------------
    def _spawn_resync(self, symbol: str) -> None:
        if symbol in self._resyncing or self._wire is None:
            return
        self._resyncing.add(symbol)
        self._spawn(self._resync(symbol, self._wire))

    async def _resync(self, symbol: str, wire: Wire) -> None:
        try:
            if self.rest is None:
                for frame in self.subscribe_frames:
                    wire.send_text(frame)
                return
            body = await self._fetch_snapshot(symbol, wire)
            if body is None or wire is not self._wire:  # a new connection runs its own
                return
            self._resyncing.discard(symbol)  # a request made while the sink runs is a new one
            recv_ns = time.perf_counter_ns()
            batch = self.normalizer.normalize_snapshot(body, recv_ns, symbol)
            self.stats.snapshots += 1
            self.stats.events += len(batch)
            self._synced.add(symbol)
            self.sink(batch, body, recv_ns)
        finally:
            if wire is self._wire:
                self._resyncing.discard(symbol)

    async def _fetch_snapshot(self, symbol: str, wire: Wire) -> bytes | None:
        """The REST depth body of `symbol`, fetched again `resync_retry_s` after each failure
        while `wire` is the live connection; None once it is not."""
        while wire is self._wire:
            try:
                return await self.rest.afetch(symbol, self.snapshot_limit)
            except FeedError as exc:
                self.stats.snapshot_failures += 1
                self.stats.last_error = f"resync {symbol}: {exc}"
                log.warning("ws %s: snapshot of %s failed (%s); again in %.1f s", self.url,
                            symbol, exc, self.resync_retry_s)
                await asyncio.sleep(self.resync_retry_s)
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
