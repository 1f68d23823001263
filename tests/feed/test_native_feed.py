"""The native feed handler (NativeFeed, csrc/native) against SimExchange over real loopback
websockets and HTTP, publishing into a real shared-memory ring.

The ring's events are cut into messages and applied by BookSync (UNSEQUENCED: the handler
sequenced them) exactly as the engine does; books are compared with independent references
(a same-seed MarketSimulator, or a dict book rebuilt from the recording with plain json), and
events with the Python normalizer's events for the same venue messages.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_ws import USDM, assert_matches_simulator, reference_tops, wait_until

from workbench.book.sequencing import UNSEQUENCED
from workbench.book.sync import BookSync
from workbench.engine.sources import MessageCutter, info_of
from workbench.errors import ConfigError, FeedError
from workbench.events import K_BBO, K_TRADE, M_DELTA, M_SNAPSHOT
from workbench.feed.native import NativeFeed
from workbench.feed.replay import ReplayFeed
from workbench.feed.ring import ShmRing
from workbench.feed.simex import Faults, SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.tls import self_signed, server_context
from workbench.feed.venues import get_venue

CHANNELS = ("depth@0ms", "bookTicker", "trade")
COMPARED = ["ts_event_ns", "venue_seq", "symbol_id", "kind", "side", "flags", "price", "qty"]


class RingBook:
    """A ring this test owns, a NativeFeed publishing into it, and the consumer side: the
    ring's messages through BookSync, the top `depth` levels at every `checkpoint_every`-th
    delta applied to a valid book."""

    def __init__(self, venue: str, url: str, *, symbol: str = "BTCUSDT",
                 checkpoint_every: int = 0, depth: int = 20, **options: object) -> None:
        self.name = f"test-native-{time.perf_counter_ns()}"
        self.ring = ShmRing.create(self.name, 1 << 20)
        self.registry = SymbolRegistry()
        self.sid = self.registry.id(venue, symbol)
        self.sync = BookSync(UNSEQUENCED)
        self.cutter = MessageCutter()
        self.messages: list[np.ndarray] = []
        self.checkpoints: dict[int, tuple[np.ndarray, ...]] = {}
        self._every = checkpoint_every
        self._depth = depth
        self._deltas = 0
        self.feed = NativeFeed(venue, [symbol], url, self.name, registry=self.registry,
                               **options)

    def pump(self) -> int:
        """Read what the ring holds; returns the messages read."""
        n = 0
        while True:
            view = self.ring.read()
            if not len(view):
                return n
            for message in self.cutter.cut(view):
                n += 1
                self.messages.append(message)
                info = info_of(message)
                book = self.sync.process(message, info)
                if info.kind == M_DELTA and book is not None and book.valid:
                    self._deltas += 1
                    if self._every and self._deltas % self._every == 0:
                        self.checkpoints[info.last_id] = book.depth(self._depth)

    def until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        def pumped() -> bool:
            self.pump()
            return predicate()

        wait_until(pumped, timeout_s, what)

    @property
    def book(self):
        return self.sync.book(self.sid)

    def events(self) -> np.ndarray:
        return np.concatenate(self.messages) if self.messages else np.zeros(0)

    def __enter__(self) -> RingBook:
        self.feed.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.feed.stop()
            self.pump()
        finally:
            self.ring.close()


def python_events(messages: list[bytes], venue: str, registry: SymbolRegistry) -> np.ndarray:
    """The Python normalizer's events of `messages`, concatenated (copies)."""
    normalizer = get_venue(venue).normalizer(registry)
    out = [normalizer.normalize(m, 1).copy() for m in messages]
    return np.concatenate([o for o in out if len(o)])


def assert_same_events(got: np.ndarray, want: np.ndarray,
                       fields: list[str] = COMPARED) -> None:
    assert len(got) == len(want) > 0
    for name in fields:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ---- a real recording: ReplayFeed -> SimExchange -> NativeFeed -> ring ---------------------------

def test_usdm_recording_events_equal_python_and_the_book_heals(shared_data: Path) -> None:
    path = shared_data / USDM
    messages = [m for _, m in ReplayFeed(path, speed=None)]
    recorded = [m for m in messages if m.startswith(b'{"stream"')]
    # as tests/feed/test_ws.py: a gap 3,000 messages after the snapshot the handler syncs
    # from, then a disconnect; paced at 100x so each REST snapshot comes before the next fault
    faults = Faults(gap_after=3_000, gap_after_snapshot=True, disconnect_after=70_000)
    with SimExchange(path, speed=100, faults=faults) as ex, \
            RingBook("binance-usdm", ex.url + "/stream", rest_url=ex.rest_url,
                     checkpoint_every=500, channels=CHANNELS) as rb:
        # every recorded message but the delta the gap fault dropped, plus the SUBSCRIBE
        # reply of each of the two connections
        rb.until(lambda: rb.feed.stats()["messages"] >= len(recorded) + 1 and rb.book.valid
                 and rb.ring.stats.pending == 0, 90, "the whole recording and a valid book")
        time.sleep(0.2)
        rb.pump()
        st = rb.feed.stats()
    c = st.counters
    assert st.state == "live"
    assert c["messages"] == len(recorded) - 1 + c["connects"]
    assert c["malformed"] == 0 and c["dropped"] == 0
    assert c["gaps"] == 1 and c["connects"] == 2 and c["reconnects"] == 1
    assert c["snapshot_fetches"] >= 3 and ex.stats.rest_requests.get(200, 0) >= 3
    assert c["invalidations"] == 2  # the gap, the disconnect (and later the stop)
    assert rb.sync.stats.crossed == 0 and rb.sync.stats.invalidated == 3
    assert not rb.book.valid  # the handler stopped: nobody keeps the book any more
    want = reference_tops(messages, set(rb.checkpoints))
    assert len(rb.checkpoints) >= 10 and set(want) == set(rb.checkpoints)
    for update_id, top in rb.checkpoints.items():
        for got_side, want_side in zip(top, want[update_id], strict=True):
            np.testing.assert_array_equal(got_side, want_side)
    # trades and best bid/offer: every one of the recording, equal to the Python path's
    got = rb.events()
    py = python_events(recorded, "binance-usdm", rb.registry)
    for kind in (K_TRADE, K_BBO):
        assert_same_events(got[got["kind"] == kind], py[py["kind"] == kind])
    # the deltas published while the book was live equal the Python events of those messages
    by_u = {}
    normalizer = get_venue("binance-usdm").normalizer(rb.registry)
    for m in recorded:
        if b'"depthUpdate"' in m[:80]:
            ev = normalizer.normalize(m, 1)
            by_u[int(ev["venue_seq"][0])] = ev.copy()
    deltas = [m for m in rb.messages if info_of(m).kind == M_DELTA]
    assert len(deltas) > 1000
    for m in deltas:
        assert_same_events(m, by_u[int(m["venue_seq"][0])])
    # stamps: socket read <= ring push, in this process's clock
    assert (got["ts_publish_ns"] >= got["ts_recv_ns"]).all()
    # every message published is in the histogram (buffered deltas dropped as stale and the
    # subscription replies publish nothing)
    assert st.read_to_publish_ns["count"] >= c["messages"] - c["stale"] - c["buffered"] \
        - c["connects"]
    assert 0 < st.read_to_publish_ns["p50"] <= st.read_to_publish_ns["p99"]


def test_coinbase_recording_events_equal_python(shared_data: Path) -> None:
    path = shared_data / "coinbase/COINBASE.jsonl.zst"
    with SimExchange(path, venue="coinbase", speed=None) as ex:
        rb = RingBook("coinbase", ex.url, symbol="BTC-USD")
        rb.registry.id("coinbase", "ETH-USD")
        rb.feed = NativeFeed("coinbase", ["BTC-USD", "ETH-USD"], ex.url, rb.name,
                             registry=rb.registry)
        with rb:
            rb.until(lambda: rb.feed.stats()["messages"] >= 900 and rb.ring.stats.pending == 0,
                     60, "the recording")
            time.sleep(0.5)
            rb.pump()
            st = rb.feed.stats()
            tops = {sid: book.depth(20) for sid, book in rb.sync.books.items() if book.valid}
        sent = [m for _, m in ReplayFeed(path, speed=None)]
    assert st.counters["malformed"] == 0 and st.counters["gaps"] == 0
    got = rb.events()
    py = python_events([m for m in sent if b'"channel":"subscriptions"' not in m[:40]],
                       "coinbase", rb.registry)
    # SimExchange streams from the start while the subscribe frames (one per channel) arrive:
    # each channel's events are the tail of the recording's from its subscription on.
    # SimExchange numbers sequence_num per connection (venue_seq of tickers), as Coinbase does
    no_seq = [f for f in COMPARED if f != "venue_seq"]
    for kind, fields in ((K_TRADE, COMPARED), (K_BBO, no_seq)):
        mine, theirs = got[got["kind"] == kind], py[py["kind"] == kind]
        assert len(mine) >= 50
        assert_same_events(mine, theirs[len(theirs) - len(mine):], fields)
    snapshots = [m for m in rb.messages if info_of(m).kind == M_SNAPSHOT]
    assert len(snapshots) == 2 and len(tops) == 2  # BTC-USD and ETH-USD, valid at the end
    # the books equal the Python normalizer's l2_data events applied in order
    reference = BookSync(UNSEQUENCED)
    normalizer = get_venue("coinbase").normalizer(rb.registry)
    for m in sent:
        if b'"l2_data"' in m[:40]:
            ev = normalizer.normalize(m, 1)
            reference.process(ev, normalizer.last)
    for sid, top in tops.items():
        for got_side, want_side in zip(top, reference.book(sid).depth(20), strict=True):
            np.testing.assert_array_equal(got_side, want_side)


RECORDINGS = [  # (file, venue, websocket path on SimExchange, recorded connection, speed)
    # Binance books sync from a REST snapshot SimExchange takes where its stream has got to:
    # paced (a few seconds each), so the snapshot comes while most of the recording is to come
    ("binance/hftbacktest/spot/btcusdt_20240808.gz", "binance", "/stream", None, 150),
    ("binance/hftbacktest/cm/btcusd_perp_20240808.gz", "binance-coinm", "/stream", None, 150),
    ("binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", "binance-usdm", "/stream", None, 8),
    # Bybit sends its snapshots in the stream: flat out
    ("bybit/BYBIT.jsonl.zst", "bybit", "/v5/public/linear", "BYBIT.ws.2", None),
    ("bybit/BYBIT.jsonl.zst", "bybit-spot", "/v5/public/spot", "BYBIT.ws.3", None),
]


def python_reference(path: Path, venue: str, conn: str | None, registry: SymbolRegistry,
                     depth: int = 10) -> tuple[dict, dict, list[str]]:
    """The Python path over the recording: the top `depth` levels after every delta applied
    to a valid book, keyed (symbol_id, update id); the trade and BBO events by symbol; and the
    symbols seen."""
    normalizer = get_venue(venue).normalizer(registry)
    sync = BookSync(get_venue(venue).sequencing)
    tops: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    events: dict[tuple[int, int], list[np.ndarray]] = {}
    for _, message in ReplayFeed(path, speed=None, conn=conn):
        batch = normalizer.normalize(message, 1)
        info = normalizer.last
        book = sync.process(batch, info)
        if info.kind == M_DELTA and book is not None and book.valid:
            tops[info.symbol_id, info.last_id] = book.depth(depth)
        for kind in (K_TRADE, K_BBO):
            mine = batch[batch["kind"] == kind]
            if len(mine):
                events.setdefault((kind, int(mine["symbol_id"][0])), []).append(mine.copy())
    symbols = [registry.symbol(sid) for sid, _ in tops] + [
        registry.symbol(sid) for _, sid in events]
    return tops, {k: np.concatenate(v) for k, v in events.items()}, sorted(set(symbols))


@pytest.mark.parametrize("relative, venue, ws_path, conn, speed", RECORDINGS,
                         ids=[f"{v}-{Path(r).name}" for r, v, *_ in RECORDINGS])
def test_recordings_served_over_loopback_equal_the_python_path(
        shared_data: Path, relative: str, venue: str, ws_path: str, conn: str | None,
        speed: float | None) -> None:
    """Every recording with book or trade messages (the USD-M and Coinbase ones above):
    SimExchange serves it (paced where the books need a REST snapshot), the handler
    subscribes to every symbol in it. The book
    after each delta equals the Python path's (normalizer + BookSync with the venue's rule)
    at the same update id, and each symbol's trades and BBO events are the tail of the Python
    path's (the subscriptions start a little after the stream), field by field."""
    path = shared_data / relative
    registry = SymbolRegistry()
    tops, events, symbols = python_reference(path, venue, conn, registry)
    exchange = get_venue(venue).exchange
    with SimExchange(path, venue=exchange, speed=speed, conn=conn) as ex:
        rb = RingBook(venue, ex.url + ws_path, symbol=symbols[0])
        rb.registry = registry
        rb.feed = NativeFeed(venue, symbols, ex.url + ws_path, rb.name, registry=registry,
                             rest_url=ex.rest_url if get_venue(venue).rest else None)
        with rb:
            rb.until(lambda: rb.feed.stats()["messages"] >= 10, 60, "messages")
            quiet_since = time.monotonic()
            seen = -1
            while time.monotonic() - quiet_since < 1.0:  # until nothing more comes for 1 s
                rb.pump()
                count = rb.feed.stats()["messages"]
                if count != seen:
                    seen, quiet_since = count, time.monotonic()
                time.sleep(0.05)
            st = rb.feed.stats()
    assert st.counters["malformed"] == 0 and st.counters["dropped"] == 0
    got = rb.events()
    compared = 0
    for (kind, sid), theirs in events.items():
        mine = got[(got["kind"] == kind) & (got["symbol_id"] == sid)]
        fields = COMPARED if kind == K_TRADE or venue != "coinbase" else \
            [f for f in COMPARED if f != "venue_seq"]
        if len(mine):
            assert_same_events(mine, theirs[len(theirs) - len(mine):], fields)
            compared += len(mine)
    assert compared > 0
    # the book after each delta, where both paths had a valid book at that update id
    mine_tops = {}
    sync = BookSync(UNSEQUENCED)
    for message in rb.messages:
        info = info_of(message)
        book = sync.process(message, info)
        if info.kind == M_DELTA and book is not None and book.valid:
            mine_tops[info.symbol_id, info.last_id] = book.depth(10)
    common = set(mine_tops) & set(tops)
    assert len(common) >= min(20, len(tops) // 2), (len(common), len(tops))
    for key in common:
        for got_side, want_side in zip(mine_tops[key], tops[key], strict=True):
            np.testing.assert_array_equal(got_side, want_side)


# ---- the simulator: every fault detected, counted and healed ---------------------------------

@pytest.mark.parametrize("faults, counter", [
    (Faults(malformed_after=300), "malformed"),
    (Faults(deep_json_after=300), "malformed"),
    (Faults(stall_after=500, stall_s=4.0), "silences"),
    (Faults(rest_errors=2, retry_after_s=1), "rest_throttled"),
    (Faults(gap_after=1500, gap_after_snapshot=True), "gaps"),
    (Faults(disconnect_after=1500), "reconnects"),
], ids=["malformed", "deep-json", "stall", "rest-429", "gap", "disconnect"])
def test_each_fault_is_counted_and_healed(faults: Faults, counter: str) -> None:
    with SimExchange(speed=3, faults=faults) as ex, \
            RingBook("binance-usdm", ex.url + "/stream", rest_url=ex.rest_url, silence_s=1.5,
                     checkpoint_every=500) as rb:
        rb.until(lambda: rb.feed.stats()[counter] >= 1 and rb.book.valid
                 and len(rb.checkpoints) >= 4, 40, f"{counter} and a healed book")
        st = rb.feed.stats()
    assert sum(ex.stats.faults.values()) >= 1
    if counter == "malformed":
        assert st.malformed_by == ({"json": 1} if faults.malformed_after else {"depth": 1})
    assert rb.sync.stats.crossed == 0
    assert_matches_simulator(rb.checkpoints)


def test_oversize_frame_is_skipped_and_counted() -> None:
    with SimExchange(speed=3, faults=Faults(deep_json_after=200)) as ex, \
            RingBook("binance-usdm", ex.url + "/stream", rest_url=ex.rest_url,
                     max_frame=1500, checkpoint_every=300) as rb:
        rb.until(lambda: rb.feed.stats()["malformed"] >= 1 and len(rb.checkpoints) >= 3, 30,
                 "the oversize frame")
        st = rb.feed.stats()
    assert st.malformed_by == {"oversize": 1}
    assert st.counters["connects"] == 1  # the connection went on
    assert_matches_simulator(rb.checkpoints)


def test_bybit_simulator_gap_resubscribes_and_reconnect_heals() -> None:
    """As tests/feed/test_ws.py's Bybit test: a dropped delta is a gap, the handler
    resubscribes and the venue answers with a fresh snapshot; after a disconnect the same.
    Checkpoints equal a same-seed simulator's top 50 at the same `u`."""
    faults = Faults(gap_after=3000, disconnect_after=8000)
    # paced: flat out the simulator outruns this test's Python consumer by the whole ring
    with SimExchange(venue="bybit", speed=20, faults=faults) as ex, \
            RingBook("bybit", ex.url + "/v5/public/linear", checkpoint_every=1000, depth=50,
                     channels=("orderbook.50", "publicTrade")) as rb:
        rb.until(lambda: rb.feed.stats()["messages"] > 12000 and rb.book.valid, 30,
                 "12k messages and a valid book")
        st = rb.feed.stats()
    c = st.counters
    assert ex.stats.faults == {"gap": 1, "disconnect": 1}
    assert c["gaps"] == 1 and c["reconnects"] == 1 and c["resyncs"] == 1
    assert c["invalidations"] == 2 and c["snapshot_fetches"] == 0
    assert rb.sync.stats.snapshots >= 3 and rb.sync.stats.crossed == 0
    assert len(rb.checkpoints) >= 6
    sim = MarketSimulator(SimConfig(venue="bybit"))
    for update_id, (bid_px, bid_qty, ask_px, ask_qty) in sorted(rb.checkpoints.items()):
        while sim.book_update_id < update_id:
            sim.step()
        bids, asks = sim.top(50)
        np.testing.assert_array_equal(bid_px, bids[:, 0])
        np.testing.assert_array_equal(bid_qty, bids[:, 1])
        np.testing.assert_array_equal(ask_px, asks[:, 0])
        np.testing.assert_array_equal(ask_qty, asks[:, 1])


def test_switch_endpoint_keeps_the_subscriptions() -> None:
    with SimExchange(speed=3) as a, SimExchange(speed=3) as b, \
            RingBook("binance-usdm", a.url + "/stream", rest_url=a.rest_url,
                     checkpoint_every=200) as rb:
        rb.until(lambda: rb.feed.stats()["messages"] > 300, 20, "messages from a")
        rb.feed.switch_endpoint(b.url + "/stream")
        rb.until(lambda: rb.feed.stats()["switches"] == 1 and rb.feed.url.startswith(b.url)
                 and rb.feed.stats()["connects"] == 2, 20, "the switch")
        seen = rb.feed.stats()["messages"]
        rb.until(lambda: rb.feed.stats()["messages"] > seen + 300 and rb.book.valid, 20,
                 "messages from b")
    with pytest.raises(ConfigError):
        rb.feed.switch_endpoint("http://example.com")


# ---- TLS, failures ----------------------------------------------------------------------------

def test_wss_with_the_ca_file_connects_and_without_it_is_refused(tmp_path: Path) -> None:
    ca, cert, key = self_signed(tmp_path)
    with SimExchange(speed=3, ssl_context=server_context(cert, key)) as ex:
        assert ex.url.startswith("wss://") and ex.rest_url.startswith("https://")
        with RingBook("binance-usdm", ex.url + "/stream", rest_url=ex.rest_url,
                      ca_file=str(ca), checkpoint_every=100) as rb:
            rb.until(lambda: len(rb.checkpoints) >= 3, 20, "data over TLS")
        assert_matches_simulator(rb.checkpoints)
        refused = RingBook("binance-usdm", ex.url + "/stream", rest_url=ex.rest_url,
                           max_connects=2, backoff_s=0.01, backoff_max_s=0.05)
        with refused:
            assert refused.feed.wait(20), "the handler did not give up"
            st = refused.feed.stats()
    assert st.state == "failed" and st.counters["messages"] == 0
    assert "certificate verify failed" in st.error and "2 connection attempts" in st.error


def test_unreachable_venue_fails_the_handler() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rb = RingBook("binance-usdm", f"ws://127.0.0.1:{port}/stream", max_connects=3,
                  backoff_s=0.01, backoff_max_s=0.02)
    with rb:
        assert rb.feed.wait(20)
        st = rb.feed.stats()
    assert st.state == "failed" and "3 connection attempts" in st.error
    assert "refused" in st.error.lower()


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="native handler reads"):
        NativeFeed("tardis", ["X"], "ws://127.0.0.1:1/", "r")
    with pytest.raises(ConfigError, match="ws://"):
        NativeFeed("binance", ["BTCUSDT"], "http://127.0.0.1:1/", "r")
    with pytest.raises(FeedError, match="ring"):
        NativeFeed("binance", ["BTCUSDT"], "ws://127.0.0.1:1/", "no-such-ring-here")
