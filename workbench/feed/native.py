"""The native feed handler from Python: `NativeFeed` starts the C++ handler of `csrc/native/`
(one thread, Boost.Beast + OpenSSL + simdjson, no GIL) on one venue connection publishing
normalized events into a `ShmRing`.

    ring = ShmRing.create("btc", 1 << 20)
    with NativeFeed("binance-usdm", ["BTCUSDT"], url=simex.url + "/stream", ring="btc",
                    rest_url=simex.rest_url) as feed:
        ...                  # the consumer reads `ring` (the engine's `--source native`)
        feed.stats()         # NativeStats: counters and read-to-publish percentiles

What reaches the ring (wb_native.h): each message's events in order, with `ts_recv_ns` the
CLOCK_MONOTONIC time of the socket read that completed the message (the clock of
`time.perf_counter_ns()`), `ts_publish_ns` the push, `ts_event_ns` the venue's time; book deltas
only while their book is live (sequenced in C++ by the venue's rules); a gap publishes one
`BOOK_INVALID` event for the book, then the new snapshot (SNAPSHOT_BEGIN .. END) and the
deltas that continue it. Subscribe frames are the venue record's (`Venue.subscribe`); REST
depth snapshots come from the venue's `RestMarket` (Binance), other venues resubscribe.

In another process: `workbench feed --venue binance-usdm --symbols BTCUSDT --ring NAME
[--url URL] [--cpu N]` (`main`). The ring must exist (its consumer creates it) unless
`--create` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench._native import ffi, lib
from workbench.errors import ConfigError, FeedError
from workbench.feed.native_codes import VENUE_CODES, malformed_counts
from workbench.feed.ring import ShmRing, validate_name
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues import get_venue

STATES = {lib.WB_NF_IDLE: "idle", lib.WB_NF_CONNECTING: "connecting", lib.WB_NF_LIVE: "live",
          lib.WB_NF_STOPPED: "stopped", lib.WB_NF_FAILED: "failed"}
DEFAULT_MAX_FRAME = 64 << 20  # bytes: a longer message is skipped and counted 'oversize'
DEFAULT_RT_PRIORITY = 10  # SCHED_FIFO priority tried with a CPU (reported when refused)
_ERR = 512
_WAIT_SLICE_NS = 100_000_000  # wait in slices so Ctrl-C gets through
_BUCKET_LOW = np.array([lib.wb_nf_bucket_low(i) for i in range(lib.WB_NF_HIST_BUCKETS)],
                       dtype=np.float64)
_COUNTERS = ("messages", "bytes", "events", "dropped", "malformed", "gaps", "resyncs",
             "snapshot_fetches", "snapshot_failures", "rest_throttled", "stale", "buffered",
             "buffer_overflow", "connects", "reconnects", "silences", "switches",
             "invalidations")


@dataclass(frozen=True)
class NativeStats:
    """The handler's counters at one moment (read while it runs; see wb_nf_stats in
    csrc/native/wb_native.h for each counter). state: idle | connecting | live | stopped |
    failed. malformed_by: malformed kind ('json', 'schema', ..., 'oversize') -> count.
    read_to_publish_ns: {'count', 'p50', 'p99', 'p999', 'max'}: ns from the socket read that
    completed a message to its ring push (the lower edge of the HDR-style bucket, relative
    error < 1/32). pinned_cpu: the CPU the thread is pinned to (None); pin_error / rt_error:
    why pinning / SCHED_FIFO was refused ('' when not asked or granted); rt_priority: the
    SCHED_FIFO priority in force (0: none). error: why the handler failed, or the last
    connection error."""

    state: str
    url: str
    counters: dict[str, int] = field(default_factory=dict)
    malformed_by: dict[str, int] = field(default_factory=dict)
    read_to_publish_ns: dict[str, float] = field(default_factory=dict)
    last_read_ns: int = 0
    pinned_cpu: int | None = None
    pin_error: str = ""
    rt_priority: int = 0
    rt_error: str = ""
    error: str = ""

    def __getitem__(self, name: str) -> int:
        return self.counters[name]


def percentiles(counts: np.ndarray) -> dict[str, float]:
    """count, p50, p99, p999 and max (ns, bucket lower edges) of histogram `counts`
    (shape (WB_NF_HIST_BUCKETS,), int)."""
    total = int(counts.sum())
    if not total:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    cum = np.cumsum(counts)
    out: dict[str, float] = {"count": total}
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        out[name] = float(_BUCKET_LOW[int(np.searchsorted(cum, q * total, side="left"))])
    out["max"] = float(_BUCKET_LOW[int(np.flatnonzero(counts)[-1])])
    return out


def _errno_text(code: int) -> str:
    return os.strerror(code) if code else ""


class NativeFeed:
    """The C++ feed handler on one connection of `venue` (a venue key of
    `workbench.feed.venues`: binance, binance-usdm, binance-coinm, bybit, bybit-spot,
    bybit-inverse, coinbase) for `symbols`, publishing into the existing ring `ring` (a name or
    a ShmRing).

    url: ws:// or wss:// URL (None: the venue's public `Venue.ws_url`). rest_url: base URL of
    the REST depth market (None: the venue's own; venues without one resubscribe on a gap).
    cpu: pin the handler thread to this CPU and try SCHED_FIFO at `rt_priority` (default
    DEFAULT_RT_PRIORITY with a cpu, none without; 0 disables); refusals are reported in
    `stats()`, never raised. ca_file: PEM CA bundle for wss/https (None: the system's);
    verify: check the peer's certificate and host name. registry: the symbol registry the
    ids come from (the consumer's). channels: the venue's subscribe channels (None: its
    defaults). silence_s, backoff_s, backoff_max_s, open_timeout_s, resync_retry_s: as
    WebSocketFeed's. max_frame: bytes (a longer message is skipped, counted 'oversize').
    max_connects: fail after this many connections in a row delivered nothing (None: retry
    for ever). max_buffer: deltas buffered per book while it waits. snapshot_limit: REST depth
    levels (None: 1000 where legal, else the venue's default). Raises ConfigError for bad
    arguments and FeedError when the handler cannot be created (ring missing, TLS set-up).
    """

    def __init__(self, venue: str, symbols: Sequence[str], url: str | None = None,
                 ring: str | ShmRing = "", cpu: int | None = None, *,
                 rest_url: str | None = None, ca_file: str | None = None, verify: bool = True,
                 registry: SymbolRegistry = SYMBOLS, channels: tuple[str, ...] | None = None,
                 silence_s: float = 10.0, backoff_s: float = 0.05, backoff_max_s: float = 5.0,
                 open_timeout_s: float = 5.0, resync_retry_s: float = 1.0,
                 max_frame: int = DEFAULT_MAX_FRAME, max_connects: int | None = None,
                 max_buffer: int = 100_000, rt_priority: int | None = None,
                 snapshot_limit: int | None = None, seed: int | None = None) -> None:
        record = get_venue(venue)
        if venue not in VENUE_CODES:
            raise ConfigError(f"venue: the native handler reads {', '.join(VENUE_CODES)}; got "
                              f"{venue!r}")
        symbols = [s.upper() for s in symbols]
        if not symbols or not all(symbols):
            raise ConfigError("symbols must name at least one symbol")
        url = url or record.ws_url
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"url must start with ws:// or wss://, got {url!r}")
        ring_name = ring.name if isinstance(ring, ShmRing) else validate_name(ring)
        if cpu is not None and not 0 <= cpu < 1024:
            raise ConfigError(f"cpu must be a CPU number in 0..1023, got {cpu!r}")
        if not (silence_s > 0 and 0 <= backoff_s <= backoff_max_s and open_timeout_s > 0
                and resync_retry_s >= 0 and max_frame > 0 and max_buffer > 0):
            raise ConfigError("expected silence_s > 0, 0 <= backoff_s <= backoff_max_s, "
                              "open_timeout_s > 0, resync_retry_s >= 0, max_frame > 0, "
                              "max_buffer > 0")
        if max_connects is not None and max_connects < 1:
            raise ConfigError(f"max_connects must be None or >= 1, got {max_connects}")
        self.venue, self.record, self.symbols, self.registry = venue, record, symbols, registry
        self.ring_name = ring_name
        market = record.rest
        limit = 0
        if market is not None:
            limit = snapshot_limit or (1000 if 1000 in market.limits else market.default_limit)
            if limit not in market.limits:
                raise ConfigError(f"snapshot_limit: {market.name} allows {market.limits}, got "
                                  f"{limit}")
        self._keep = [ffi.new("char[]", s.encode()) for s in (
            url, ring_name, (rest_url or market.base_url) if market else "",
            market.path if market else "", ca_file or "")]
        cfg = ffi.new("wb_nf_config *")
        cfg.venue = VENUE_CODES[venue]
        cfg.url, cfg.ring, cfg.rest_url, cfg.rest_path, cfg.ca_file = self._keep
        cfg.rest_limit = limit
        cfg.rest_weight = market.weight(limit) if market else 0
        cfg.rest_budget = market.weight_limit_1m if market else 0
        cfg.verify = int(verify)
        cfg.silence_s, cfg.backoff_s, cfg.backoff_max_s = silence_s, backoff_s, backoff_max_s
        cfg.open_timeout_s, cfg.resync_retry_s = open_timeout_s, resync_retry_s
        cfg.max_frame = max_frame
        cfg.max_connects = max_connects or 0
        cfg.max_buffer = max_buffer
        cfg.cpu = -1 if cpu is None else cpu
        cfg.rt_priority = (DEFAULT_RT_PRIORITY if cpu is not None else 0) \
            if rt_priority is None else rt_priority
        cfg.seed = time.perf_counter_ns() if seed is None else seed
        err = ffi.new("char[]", _ERR)
        handle = lib.wb_nf_new(cfg, err, _ERR)
        if handle == ffi.NULL:
            raise FeedError(f"native feed handler ({venue} {url}): {ffi.string(err).decode()}")
        self._h = ffi.gc(handle, lib.wb_nf_free)
        for symbol in symbols:
            lib.wb_nf_add_symbol(self._h, symbol.encode(), registry.id(venue, symbol))
        for frame in record.subscribe(symbols, channels):
            lib.wb_nf_add_subscribe(self._h, bytes(frame))
        self._started = False

    # ---- control -------------------------------------------------------------------------
    def start(self) -> NativeFeed:
        """Start the handler thread. Raises FeedError (started twice, TLS set-up failed)."""
        err = ffi.new("char[]", _ERR)
        if lib.wb_nf_start(self._h, err, _ERR) != 0:
            raise FeedError(f"native feed handler: {ffi.string(err).decode()}")
        self._started = True
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the handler and join its thread (idempotent). Raises FeedError if it has not
        ended within `timeout_s`."""
        lib.wb_nf_stop(self._h)
        if self._started and not self.wait(timeout_s):
            raise FeedError(f"native feed handler did not stop within {timeout_s} s")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the handler ends (stop() or failure); True if it has. Ctrl-C works."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            slice_ns = _WAIT_SLICE_NS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return bool(lib.wb_nf_wait(self._h, 0))
                slice_ns = min(slice_ns, int(left * 1e9))
            if lib.wb_nf_wait(self._h, slice_ns):
                return True

    def switch_endpoint(self, url: str) -> None:
        """Move to `url` (same venue), keeping the subscriptions; the books resync. Raises
        ConfigError for a URL that is not ws:// or wss://."""
        if lib.wb_nf_switch_endpoint(self._h, url.encode()) != 0:
            raise ConfigError(f"url must be ws://host[:port]/... or wss://..., got {url!r}")

    # ---- state ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """idle | connecting | live | stopped | failed."""
        st = ffi.new("wb_nf_stats *")
        lib.wb_nf_stats_get(self._h, st)
        return STATES[st.state]

    @property
    def url(self) -> str:
        out = ffi.new("char[]", 4096)
        lib.wb_nf_url(self._h, out, 4096)
        return ffi.string(out).decode()

    @property
    def error(self) -> str:
        """Why the handler failed, or the last connection error ('' if none)."""
        out = ffi.new("char[]", _ERR)
        lib.wb_nf_error(self._h, out, _ERR)
        return ffi.string(out).decode(errors="replace")

    def histogram(self) -> np.ndarray:
        """Read-to-publish counts per bucket, shape (WB_NF_HIST_BUCKETS,), uint64; bucket i
        holds ns values from `bucket_low()[i]` up to the next bucket's."""
        out = np.zeros(lib.WB_NF_HIST_BUCKETS, dtype=np.uint64)
        lib.wb_nf_histogram(self._h, ffi.cast("uint64_t *", out.ctypes.data), len(out))
        return out

    @staticmethod
    def bucket_low() -> np.ndarray:
        """The lower edge (ns) of each histogram bucket, shape (WB_NF_HIST_BUCKETS,)."""
        return _BUCKET_LOW.copy()

    def stats(self) -> NativeStats:
        """The counters now (the handler keeps running)."""
        st = ffi.new("wb_nf_stats *")
        lib.wb_nf_stats_get(self._h, st)
        return NativeStats(
            state=STATES[st.state], url=self.url,
            counters={name: int(getattr(st, name)) for name in _COUNTERS},
            malformed_by=malformed_counts(st.malformed_by),
            read_to_publish_ns=percentiles(self.histogram()), last_read_ns=int(st.last_read_ns),
            pinned_cpu=None if st.pinned_cpu < 0 else int(st.pinned_cpu),
            pin_error=_errno_text(st.pin_errno), rt_priority=int(st.rt_priority),
            rt_error=_errno_text(st.rt_errno), error=self.error)

    def __enter__(self) -> NativeFeed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NativeFeed {self.venue} {','.join(self.symbols)} -> ring {self.ring_name}>"


# ---- `workbench feed --venue ...` ---------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The live-venue options of `workbench feed` (the ring options are the replay's)."""
    parser.add_argument("--venue", default=None, choices=sorted(VENUE_CODES),
                        help="read this venue's websocket live with the native handler")
    parser.add_argument("--symbols", default="BTCUSDT",
                        help="comma-separated venue symbols (with --venue)")
    parser.add_argument("--url", default=None,
                        help="ws:// or wss:// URL (default: the venue's public endpoint)")
    parser.add_argument("--rest-url", default=None,
                        help="base URL of the REST depth market (default: the venue's)")
    parser.add_argument("--ca-file", default=None, help="PEM CA bundle for wss:// and https://")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin the handler thread to this CPU (and try real-time priority)")
    parser.add_argument("--rt-priority", type=int, default=None,
                        help=f"SCHED_FIFO priority with --cpu (default {DEFAULT_RT_PRIORITY}; "
                             "0: none)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to run (default: until Ctrl-C or SIGTERM)")


def main(args: argparse.Namespace) -> int:
    """Run the native handler until Ctrl-C, SIGTERM or `--duration`; print its counters.
    Returns 0 when stopped, 1 when the handler failed (its error on stderr)."""
    symbols = [s for s in args.symbols.split(",") if s]
    ring = ShmRing.create(args.ring, args.capacity) if args.create else None
    feed = NativeFeed(args.venue, symbols, args.url, args.ring, args.cpu,
                      rest_url=args.rest_url, ca_file=args.ca_file, rt_priority=args.rt_priority)
    previous = signal.signal(signal.SIGTERM, lambda *_: lib.wb_nf_stop(feed._h))
    try:
        feed.start()
        st = feed.stats()
        if args.cpu is not None:
            print(f"feed: pinned to CPU {st.pinned_cpu}" if st.pinned_cpu is not None else
                  f"feed: CPU pinning refused ({st.pin_error})", file=sys.stderr)
            print(f"feed: SCHED_FIFO priority {st.rt_priority}" if st.rt_priority else
                  f"feed: real-time priority refused ({st.rt_error or 'not asked'})",
                  file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            feed.wait(args.duration)
        failed = feed.state == "failed"
        if not failed:
            feed.stop()
        st = feed.stats()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ring is not None:
            ring.close()
    c = st.counters
    lat = st.read_to_publish_ns
    print(f"feed {args.venue} -> ring {args.ring}: {st.state}; {c['messages']} messages, "
          f"{c['events']} events ({c['dropped']} dropped), {c['malformed']} malformed, "
          f"{c['gaps']} gaps, {c['resyncs']} resyncs, {c['reconnects']} reconnects; "
          f"read-to-publish P50 {lat['p50'] / 1e3:.1f} µs P99 {lat['p99'] / 1e3:.1f} µs",
          file=sys.stderr)
    if failed:
        print(f"feed failed: {st.error}", file=sys.stderr)
    return 1 if failed else 0
