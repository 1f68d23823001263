"""Sources: where an engine run's events come from, one class per source kind.

    source = make_source(config.source, config.tuning)
    source.open(submit, stop)   # the caller's thread: raises ConfigError / EngineError
    source.run()                # the feed thread, until the data ends or `stop` is set
    source.close(timeout_s)     # any thread, idempotent
    source.stats()              # counters for RunStatus.feed

`submit(batch, info)` is the engine's `Dispatcher.submit`: one message's events (1-D
EVENT_DTYPE) and its MessageInfo. A source never imports the engine: it is handed `submit`
and the `stop` event, and the BookSync's snapshot requests reach it through
`request_resync(symbol_id)`.

| kind      | class            | what it reads                                                 |
|-----------|------------------|---------------------------------------------------------------|
| `sim`     | SimSource        | SimExchange started for the run, through WebSocketFeed        |
| `replay:` | ReplaySource     | a recording (ReplayFeed), normalized on the feed thread        |
| `ring:`   | RingSource       | a ShmRing filled by another process (events already normalized)|
| `ws:`     | WebSocketSource  | a venue's websocket, through WebSocketFeed                      |
| `native`  | NativeSource     | the C++ feed handler (NativeFeed) into a ring this run creates: |
|           |                  | SimExchange on loopback, or `native:URL` a venue's websocket   |

Resync: the websocket sources have one path for it, WebSocketFeed's (a REST depth snapshot
where the venue has one, else the subscribe frames again); the snapshot reaches `submit` like
any message, in receive order. Replays and rings have no one to ask; the native handler
sequences and resyncs its books itself (a gap reaches the engine as a BOOK_INVALID event,
then the new snapshot).

A ring's producer that dies (its process gone, or the native handler failed) ends the run as
failed (FeedError), never as a quiet stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workbench import tuning as tuning_mod
from workbench.book.sequencing import UNSEQUENCED, SyncRule
from workbench.engine.config import SourceConfig, TuningConfig
from workbench.errors import ConfigError, FeedError
from workbench.events import (
    F_LAST,
    F_SNAPSHOT,
    K_ASK,
    K_BID,
    K_BOOK_INVALID,
    K_SNAP_BEGIN,
    M_BOOK_INVALID,
    M_DELTA,
    M_OTHER,
    M_SNAPSHOT,
    MessageInfo,
)
from workbench.feed.venues import Venue, get_venue, simulated_venue

Submit = Callable[[np.ndarray, MessageInfo | None], None]
SECOND_NS = 1_000_000_000
RING_IDLE_FLUSH = 1000  # empty ring reads before a message cut short is handed on
PRODUCER_CHECK_NS = 100_000_000  # how often an idle ring source checks its producer lives
NATIVE_RING_CAPACITY = 1 << 20  # events (64 MiB): a Coinbase snapshot is ~70k events
WATCH_PERIOD_S = 0.05  # how often a websocket source checks stop and silence
CONNECT_ATTEMPTS = 5  # connections in a row that delivered nothing before any message:
#                      the source is unreachable (after the first message: reconnect forever)


def sequencing_of(cfg: SourceConfig) -> SyncRule:
    """The BookSync rule of the run's events: UNSEQUENCED for events a producer sequenced
    (a ring, the native handler), else the venue's."""
    if cfg.kind in ("ring", "native"):
        return UNSEQUENCED
    return get_venue(resolve_venue(cfg)).sequencing


def resolve_venue(cfg: SourceConfig) -> str:
    """The venue key events are normalized with: the simulator's own format for `sim` without
    a recording (`feed.venues.simulated_venue`: USD-M for binance); `binance` means USD-M for
    recordings under a `usdm` folder, COIN-M under `cm`/`coinm`; a ring carries normalized
    events, sequenced by order (`tardis` rules); other venues as given. Raises ConfigError
    for a venue the simulator does not speak."""
    if cfg.kind == "ring":
        return "tardis"
    if cfg.kind == "native" and not cfg.arg and not cfg.recording:
        return simulated_venue(get_venue(cfg.venue).exchange).key
    if cfg.kind == "sim" and not cfg.recording:
        return simulated_venue(get_venue(cfg.venue).exchange).key
    if cfg.venue != "binance":
        return cfg.venue
    where = (cfg.recording or cfg.arg or "").replace("\\", "/").lower()
    if "/usdm/" in where:
        return "binance-usdm"
    if "/cm/" in where or "coinm" in where:
        return "binance-coinm"
    return "binance"


class Source:
    """What every source offers the engine (the module docstring); subclasses implement
    `open` and `run`.

    venue: the venue key of the events (for BookSync's sequencing rule). upstream_stamped:
    events were received by another process, so their ts_publish_ns is this run's receive
    (the ring). measures_wire: exchange times come with live receive stamps (websockets).
    native_stamped: events carry this process's socket-read (ts_recv_ns) and publish
    (ts_publish_ns) stamps (the in-process native handler). tuning: what the source chose for
    its thread (event loop, warming), for the summary.
    """

    kind = ""
    upstream_stamped = False
    native_stamped = False
    measures_wire = False

    def __init__(self, cfg: SourceConfig) -> None:
        self.config = cfg
        self.venue = resolve_venue(cfg)
        self.tuning: dict[str, Any] = {}
        self._stats: dict[str, Any] = {}

    def open(self, submit: Submit, stop: threading.Event) -> None:
        """Acquire what the source reads (in the caller's thread). Raises ConfigError for a
        source that cannot be opened as configured."""
        raise NotImplementedError

    def run(self) -> None:
        """Read and submit until the data ends or `stop` is set (the feed thread)."""
        raise NotImplementedError

    def close(self, timeout_s: float = 5.0) -> None:
        """Release what the source holds (any thread, idempotent, within `timeout_s`)."""

    def request_resync(self, symbol_id: int) -> None:
        """BookSync asks for a fresh snapshot of `symbol_id` (must not block)."""

    def stats(self) -> dict[str, Any]:
        """The source's counters (messages, events, malformed, ...)."""
        return dict(self._stats)


class ReplaySource(Source):
    """`replay:PATH`: a recording in any format ReplayFeed reads, at `speed` (0: flat out),
    normalized on the feed thread; the run ends with the recording."""

    kind = "replay"

    def open(self, submit: Submit, stop: threading.Event) -> None:
        path = Path(self.config.arg)
        if not path.exists():
            raise ConfigError(f"source: replay file {path} does not exist")
        self._submit, self._stop = submit, stop

    def run(self) -> None:
        from workbench.feed.replay import ReplayFeed

        normalizer = get_venue(self.venue).normalizer()
        submit, stop = self._submit, self._stop
        speed = self.config.speed or None
        clock = time.perf_counter_ns
        messages = 0
        for _, message in ReplayFeed(self.config.arg, speed):
            if stop.is_set():
                break
            batch = normalizer.normalize(message, clock())
            messages += 1
            if len(batch):
                submit(batch, normalizer.last)
        self._stats = {"messages": messages, "events": normalizer.stats.events,
                       "malformed": normalizer.stats.malformed_total}


class RingSource(Source):
    """`ring:NAME`: events a producer (the C++ feed handler) published into a ShmRing, cut
    into messages at LAST_IN_MSG flags; their MessageInfo is derived from the events. An idle
    ring whose producer closed it (its data ended) ends the run; one whose producer process
    died without closing it (the ring is stale) ends the run as failed: FeedError."""

    kind = "ring"
    upstream_stamped = True
    poll_wait_ns = 0  # > 0: an empty ring is busy-polled in C (no GIL) this long per read
    sleep_ns = 0  # > 0: then the reader sleeps until the producer publishes (at most this long)
    spin = False  # True: an empty ring is polled again at once, in Python (the GIL held)

    def open(self, submit: Submit, stop: threading.Event) -> None:
        from workbench.feed.ring import ShmRing

        self._ring = ShmRing.attach(self.config.arg)
        self._submit, self._stop = submit, stop

    def producer_ended(self) -> bool:
        """Called while the ring is idle: True when the producer closed the ring and it is
        drained (the data ended); raises FeedError when the producer died without closing
        it."""
        st = self._ring.stats
        if st.finished:
            return not st.pending
        if st.stale:
            raise FeedError(f"ring {self._ring.name}: its producer (pid {st.producer_pid}) "
                            "died without closing the ring; the ring is stale")
        return False

    def run(self) -> None:
        ring, submit, stop = self._ring, self._submit, self._stop
        wait_ns, sleep_ns = self.poll_wait_ns, self.sleep_ns
        # empty reads before a message cut short is handed on: a waiting read waited already
        flush_after = 1 if wait_ns or sleep_ns else RING_IDLE_FLUSH
        idle = 0
        checked_ns = time.perf_counter_ns()
        cutter = MessageCutter()
        try:
            while not stop.is_set():
                view = ring.read(wait_ns=wait_ns, sleep_ns=sleep_ns)
                if not len(view):
                    idle += 1
                    if idle == flush_after:
                        for message in cutter.flush():
                            submit(message, info_of(message))
                    if idle >= flush_after:
                        now = time.perf_counter_ns()
                        if now - checked_ns >= PRODUCER_CHECK_NS:
                            checked_ns = now
                            if self.producer_ended():
                                break
                    if not wait_ns and not sleep_ns and not self.spin:
                        time.sleep(0 if idle < RING_IDLE_FLUSH else 0.0005)
                    continue
                idle = 0
                for message in cutter.cut(view):
                    submit(message, info_of(message))
        finally:
            self._stats = {**self._stats, "ring": dataclasses.asdict(ring.stats),
                           "unterminated_events": cutter.pending}
            self.close_ring()

    def close_ring(self) -> None:
        """Release the ring (after the feed thread's last read)."""
        self._ring.close()


class NativeSource(RingSource):
    """`native` / `native:URL`: the C++ feed handler (`workbench.feed.native.NativeFeed`)
    reads the venue's websocket in its own thread and publishes into a ring this source
    creates; the feed thread consumes it as `ring:` does. Without a URL the run starts
    SimExchange on loopback (its simulator, or `recording`) and the handler connects to it,
    so the default needs no network. `tuning.native_cpu` pins the handler thread (and tries
    SCHED_FIFO). The feed thread waits for the ring in C with the GIL released: it spins
    `poll_wait_ns`, then sleeps on a futex the handler's next publish wakes (a reader that
    spins for ever takes a core from the handler and the venue on a small machine). With
    `tuning.feed_spin` it polls in Python holding the GIL instead, as the websocket sources'
    spinning feed thread does (a read that returns without the GIL must take it back, which
    costs up to the interpreter's switch interval when another thread runs Python). Events carry
    the handler's socket-read stamp (`ts_recv_ns`) and ring push (`ts_publish_ns`) in this
    process's clock: parse is read to push, queue push to pick-up.
    The handler failing (unreachable, ring truncated) ends the run: FeedError."""

    kind = "native"
    upstream_stamped = False
    native_stamped = True
    poll_wait_ns = 20_000  # an empty ring: spin 20 µs in C, then sleep until the next publish
    sleep_ns = 50_000_000  # (waking at least every 50 ms to check stop and the handler)

    def __init__(self, cfg: SourceConfig, tuning: TuningConfig) -> None:
        super().__init__(cfg)
        self.measures_wire = bool(cfg.arg)  # a live venue's clock; SimExchange replays times
        self.spin = tuning.feed_spin
        if self.spin:
            self.poll_wait_ns = self.sleep_ns = 0
        self._cpu = tuning.native_cpu
        self._simex = None
        self._feed = None
        self._owned = None

    def open(self, submit: Submit, stop: threading.Event) -> None:
        import os

        from workbench.feed.native import NativeFeed
        from workbench.feed.ring import ShmRing

        cfg = self.config
        venue = get_venue(self.venue)
        if cfg.arg:
            url, rest_url = cfg.arg, cfg.rest_url
        else:
            self._simex = start_simex(cfg, venue)
            url, rest_url = self._simex.url + venue.ws_path, self._simex.rest_url
        name = f"native-{os.getpid()}-{id(self):x}"
        self._owned = ShmRing.create(name, NATIVE_RING_CAPACITY)
        try:
            self._feed = NativeFeed(self.venue, cfg.symbols, url, name, self._cpu,
                                    rest_url=rest_url, max_connects=CONNECT_ATTEMPTS)
            self._feed.start()
        except Exception:
            self.close()
            raise
        self._ring = ShmRing.attach(name)
        self._submit, self._stop = submit, stop
        self.tuning["native_cpu"] = self._cpu

    def producer_ended(self) -> bool:
        """FeedError when the handler failed; True after `idle_end` seconds without a read
        once data came (a recording served to its end)."""
        st = self._feed.stats()
        self._stats = {"native": dataclasses.asdict(st)}
        if st.state == "failed":
            raise FeedError(f"native feed handler failed: {st.error}")
        idle_end = self.config.idle_end
        return bool(idle_end and st.last_read_ns and st.counters["messages"]
                    and time.perf_counter_ns() - st.last_read_ns >= idle_end * SECOND_NS)

    def stats(self) -> dict[str, Any]:
        """The ring's counters (at the end) and the handler's, read now (the handler runs
        on: its counters are atomics)."""
        if self._feed is None:
            return dict(self._stats)
        return {**self._stats, "native": dataclasses.asdict(self._feed.stats())}

    def close_ring(self) -> None:
        if self._feed is not None:
            with contextlib.suppress(Exception):
                self._feed.stop()
            self._stats = {**self._stats, "native": dataclasses.asdict(self._feed.stats())}
        super().close_ring()

    def close(self, timeout_s: float = 5.0) -> None:
        if self._feed is not None:
            with contextlib.suppress(Exception):
                self._feed.stop(timeout_s)
        if self._simex is not None:
            with contextlib.suppress(Exception):
                self._simex.stop(timeout_s)
            self._simex = None
        if self._owned is not None:
            with contextlib.suppress(Exception):
                self._owned.close()
            self._owned = None


class WebSocketSource(Source):
    """`ws:URL`: a venue's websocket through WebSocketFeed (picows), REST snapshots from
    `rest_url` (None: the venue's own). With `tuning.feed_spin` the feed thread busy-polls its
    sockets (`tuning.SpinSelector`), calling `on_idle` every `tuning.feed_warm_us` of idle
    polling and `remember(message, channel)` with every message that had events (the path
    warmer's hooks). The run ends on stop, or after `idle_end` seconds of silence."""

    kind = "ws"
    measures_wire = True

    def __init__(self, cfg: SourceConfig, tuning: TuningConfig,
                 on_idle: Callable[[], None] | None = None,
                 remember: Callable[[bytes, str], None] | None = None) -> None:
        super().__init__(cfg)
        self._tuning_cfg = tuning
        self._on_idle = on_idle
        self._remember = remember
        self._feed = None

    def endpoints(self, venue: Venue) -> tuple[str, str | None]:
        """(websocket URL, REST base URL) of the stream."""
        return self.config.arg, self.config.rest_url

    def open(self, submit: Submit, stop: threading.Event) -> None:
        from workbench.feed.ws import WebSocketFeed

        venue = get_venue(self.venue)
        url, rest_url = self.endpoints(venue)
        self._stop = stop
        feed = WebSocketFeed(url, self.venue, list(self.config.symbols), _no_sink,
                             rest_url=rest_url, snapshots=False)
        info = feed.normalizer.last
        remember = self._remember

        def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
            if len(batch):
                submit(batch, info)
                if remember is not None:
                    remember(message, info.channel)

        feed.sink = sink
        self._feed = feed

    def run(self) -> None:
        t = self._tuning_cfg
        loop, name = tuning_mod.new_event_loop(t.event_loop, spin=t.feed_spin,
                                               on_idle=self._on_idle,
                                               idle_period_ns=int(t.feed_warm_us * 1000))
        self.tuning["feed_event_loop"] = name
        self.tuning["feed_warm_us"] = t.feed_warm_us if self._on_idle is not None else 0.0
        try:
            loop.run_until_complete(self._watch())
        finally:
            loop.close()

    async def _watch(self) -> None:
        """Run the feed until stop, silence (`idle_end`) or its end. Raises what ended the
        feed: the exception out of `WebSocketFeed.run()` (it reconnects on connection errors
        itself, so anything else is a failure), or FeedError when the source was unreachable
        (CONNECT_ATTEMPTS connections in a row before any message delivered nothing)."""
        feed = self._feed
        task = asyncio.ensure_future(feed.run())
        idle_end = self.config.idle_end
        idle_ns = int(idle_end * SECOND_NS) if idle_end else None
        seen, seen_at = 0, time.perf_counter_ns()
        unreachable = None
        while not task.done() and not self._stop.is_set():
            await asyncio.sleep(WATCH_PERIOD_S)
            stats = feed.stats
            if not stats.messages and stats.reconnects >= CONNECT_ATTEMPTS:
                unreachable = FeedError(
                    f"{feed.url}: unreachable: {stats.reconnects} connection attempts in a "
                    f"row delivered nothing; last error: {stats.last_error}")
                break
            if idle_ns is not None:
                now = time.perf_counter_ns()
                if stats.messages != seen:
                    seen, seen_at = stats.messages, now
                elif seen and now - seen_at >= idle_ns:
                    break
        feed.stop()
        # the feed's own exception propagates; cancelled or not ended within 5 s: close() ends it
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5.0)
        if unreachable is not None:
            raise unreachable

    def request_resync(self, symbol_id: int) -> None:
        if self._feed is not None:
            self._feed.request_resync(symbol_id)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._feed is not None:
            with contextlib.suppress(Exception):
                self._feed.stop(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {} if self._feed is None else dict(vars(self._feed.stats))


class SimSource(WebSocketSource):
    """`sim`: a SimExchange started for the run (its simulator seeded with `seed`, or
    serving `recording`), read through WebSocketFeed like a venue."""

    kind = "sim"
    measures_wire = False  # simulated or recorded exchange times: no live clock to compare

    def __init__(self, cfg: SourceConfig, tuning: TuningConfig,
                 on_idle: Callable[[], None] | None = None,
                 remember: Callable[[bytes, str], None] | None = None) -> None:
        super().__init__(cfg, tuning, on_idle, remember)
        self._simex = None

    def endpoints(self, venue: Venue) -> tuple[str, str | None]:
        self._simex = start_simex(self.config, venue)
        return self._simex.url + venue.ws_path, self._simex.rest_url

    def close(self, timeout_s: float = 5.0) -> None:
        super().close(timeout_s)
        if self._simex is not None:
            with contextlib.suppress(Exception):
                self._simex.stop(timeout_s)


def start_simex(cfg: SourceConfig, venue: Venue) -> Any:
    """A started SimExchange for a `sim` or `native` run: serving `cfg.recording`, or the
    simulator seeded with `cfg.seed` (ConfigError for symbols it does not simulate)."""
    from workbench.feed.simex import SimExchange
    from workbench.feed.simulator import SimConfig

    sim = None if cfg.recording else SimConfig(seed=cfg.seed)
    if sim is not None and set(cfg.symbols) != {sim.symbol}:
        raise ConfigError(f"symbols: the simulator simulates {sim.symbol} only (its "
                          f"SimConfig), got {', '.join(cfg.symbols)}; serve a recording "
                          "of other symbols with `recording`")
    return SimExchange(cfg.recording, venue=venue.exchange, speed=cfg.speed or None,
                       sim=sim).start()


def make_source(cfg: SourceConfig, tuning: TuningConfig,
                on_idle: Callable[[], None] | None = None,
                remember: Callable[[bytes, str], None] | None = None) -> Source:
    """The Source of `cfg.kind`; the warmer's hooks go to the websocket sources only."""
    if cfg.kind == "replay":
        return ReplaySource(cfg)
    if cfg.kind == "ring":
        return RingSource(cfg)
    if cfg.kind == "native":
        return NativeSource(cfg, tuning)
    cls = SimSource if cfg.kind == "sim" else WebSocketSource
    return cls(cfg, tuning, on_idle, remember)


def _no_sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
    """Placeholder sink until `open` installs the real one."""


class MessageCutter:
    """Cuts ring reads into messages at LAST_IN_MSG flags. A read may end inside a message
    (the ring's wrap, or the producer mid-message): that tail is kept and completed by the
    next read. Batches are copies (a read's view is handed back at the next read)."""

    def __init__(self) -> None:
        self._tail: np.ndarray | None = None

    def cut(self, view: np.ndarray) -> list[np.ndarray]:
        """The whole messages of `view` (1-D EVENT_DTYPE), each a new array."""
        ends = (np.flatnonzero(view["flags"] & F_LAST) + 1).tolist()
        out = []
        start = 0
        for end in ends:
            part = view[start:end]
            if self._tail is not None:
                part = np.concatenate((self._tail, part))
                self._tail = None
            else:
                part = part.copy()
            out.append(part)
            start = end
        if start < len(view):
            rest = view[start:]
            self._tail = rest.copy() if self._tail is None else np.concatenate((self._tail, rest))
        return out

    @property
    def pending(self) -> int:
        """Events of a message not ended yet (read, waiting for its LAST_IN_MSG event)."""
        return 0 if self._tail is None else len(self._tail)

    def flush(self) -> list[np.ndarray]:
        """The incomplete tail as a batch of its own (the producer went quiet mid-message)."""
        tail, self._tail = self._tail, None
        return [] if tail is None else [tail]


def info_of(batch: np.ndarray) -> MessageInfo:
    """MessageInfo of a message that came without one (ring events, sequenced by order
    only), from its first event (a message's events are of one kind of message): snapshot if
    flagged so, book-invalid for a BOOK_INVALID event, delta if it is a level event, else
    other."""
    first = batch.item(0)
    info = MessageInfo()
    info.symbol_id = first[5]
    info.first_id = info.last_id = first[4]
    kind = first[6]
    if kind == K_SNAP_BEGIN or first[8] & F_SNAPSHOT:
        info.kind = M_SNAPSHOT
    elif kind in (K_BID, K_ASK):
        info.kind = M_DELTA
    elif kind == K_BOOK_INVALID:
        info.kind = M_BOOK_INVALID
    else:
        info.kind = M_OTHER
    return info
