"""BookSync: venue sequencing rules, and injected gaps detected and healed by a resync."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from refbook import RefFeed, assert_same_book

from workbench.book.sync import BookSync
from workbench.errors import BookError
from workbench.events import MessageKind
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue, normalizer_for


def depth(U: int, u: int, pu: int | None, bids: list, asks: list, symbol: str = "BTCUSDT"
          ) -> bytes:
    data = {"e": "depthUpdate", "E": 1, "s": symbol, "U": U, "u": u, "b": bids, "a": asks}
    if pu is not None:
        data["pu"] = pu
    return json.dumps({"stream": f"{symbol.lower()}@depth", "data": data}).encode()


def rest(last: int, bids: list, asks: list) -> bytes:
    return json.dumps({"lastUpdateId": last, "bids": bids, "asks": asks}).encode()


class Pipe:
    def __init__(self, venue: str):
        self.registry = SymbolRegistry()
        self.norm = normalizer_for(venue, self.registry, default_symbol="BTCUSDT") if (
            venue.startswith("binance")) else normalizer_for(venue, self.registry)
        self.resyncs: list[int] = []
        self.sync = BookSync(get_venue(venue).sequencing, on_resync=self.resyncs.append)

    def __call__(self, message: bytes) -> None:
        self.sync.process(self.norm.normalize(message, 1), self.norm.last)

    def book(self, symbol: str = "BTCUSDT"):
        return self.sync.book(self.registry.lookup(self.norm.venue, symbol))


def test_binance_futures_rules() -> None:
    p = Pipe("binance-usdm")
    p(depth(90, 95, 80, [["10", "1"]], []))  # before the snapshot: buffered, snapshot asked
    p(depth(96, 100, 95, [["11", "1"]], []))
    p(depth(101, 110, 100, [["12", "1"]], [["20", "1"]]))
    assert p.resyncs == [1] and p.sync.stats.resyncs == 0 and p.sync.buffered(1) == 3
    assert not p.sync.is_valid(1)
    p(rest(100, [["11", "5"], ["9", "1"]], [["21", "1"]]))
    # u=95 < 100 stale; u=100 straddles (U <= 100 <= u) and is applied; then pu == 100 follows
    assert p.sync.stats.dropped_stale == 1 and p.sync.stats.applied == 2
    book = p.book()
    assert book.valid and book.depth(5)[0].tolist() == [12.0, 11.0, 9.0]
    assert book.best_bid_qty == 1.0 and book.best_ask == 20.0
    p(depth(111, 115, 110, [["12", "0"]], []))
    assert book.best_bid == 11.0
    p(depth(120, 125, 118, [["13", "1"]], []))  # pu 118 != 115: gap
    assert p.sync.stats.gaps == 1 and p.sync.stats.resyncs == 1 and p.resyncs == [1, 1]
    assert not book.valid and book.best_bid == 11.0  # not applied
    p(depth(126, 130, 125, [["14", "1"]], []))  # keeps buffering, no second request
    assert p.resyncs == [1, 1] and p.sync.buffered(1) == 2
    p(rest(127, [["13", "1"], ["11", "2"]], [["20", "1"]]))
    assert book.valid and book.depth(3)[0].tolist() == [14.0, 13.0, 11.0]
    assert p.sync.stats.dropped_stale == 2  # u=125 < 127


def test_binance_spot_rules() -> None:
    p = Pipe("binance")
    p(depth(1, 5, None, [["10", "1"]], []))
    p(rest(5, [["10", "1"]], [["12", "1"]]))
    p(depth(5, 8, None, [["10", "2"]], []))  # stale? no: u=8 > 5, U=5 <= 6 <= 8 straddles
    assert p.book().best_bid_qty == 2.0 and p.sync.stats.dropped_stale == 1
    p(depth(9, 9, None, [["11", "1"]], []))  # U == previous u + 1
    assert p.book().best_bid == 11.0 and p.sync.stats.gaps == 0
    p(depth(11, 12, None, [["11", "0"]], []))  # U != 10: gap
    assert p.sync.stats.gaps == 1 and not p.book().valid and p.book().best_bid == 11.0


def test_binance_snapshot_too_old_resyncs_again() -> None:
    p = Pipe("binance-usdm")
    p(depth(200, 210, 190, [["10", "1"]], []))
    p(rest(150, [["10", "1"]], [["12", "1"]]))  # older than every buffered delta
    assert p.sync.stats.gaps == 1 and p.resyncs == [1, 1] and not p.book().valid
    p(rest(205, [["10", "3"]], [["12", "1"]]))  # the buffered delta straddles this one
    assert p.book().valid and p.book().best_bid_qty == 1.0


def test_bybit_rules() -> None:
    p = Pipe("bybit")

    def ob(kind: str, u: int, bids: list) -> bytes:
        return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1, "data": {
            "s": "BTCUSDT", "b": bids, "a": [["30", "1"]], "u": u, "seq": u * 10}}).encode()

    p(ob("snapshot", 10, [["20", "1"]]))
    p(ob("delta", 11, [["21", "1"]]))
    assert p.book().best_bid == 21.0 and p.book().valid
    p(ob("delta", 13, [["22", "1"]]))  # 12 missing
    assert p.sync.stats.gaps == 1 and p.resyncs == [1] and not p.book().valid
    p(ob("delta", 14, [["23", "1"]]))
    p(ob("snapshot", 13, [["22", "1"], ["20", "1"]]))  # resubscribed: a snapshot at u=13
    assert p.book().valid and p.book().depth(5)[0].tolist() == [23.0, 22.0, 20.0]
    p(ob("delta", 1, [["5", "1"]]))  # u == 1: service restart, a snapshot
    assert p.book().depth(5)[0].tolist() == [5.0] and p.sync.stats.gaps == 1


def test_coinbase_connection_sequence() -> None:
    p = Pipe("coinbase")

    def l2(seq: int, kind: str, product: str, price: str) -> bytes:
        return json.dumps({"channel": "l2_data", "timestamp": "2026-01-01T00:00:00Z",
                           "sequence_num": seq, "events": [{"type": kind, "product_id": product,
                           "updates": [{"side": "bid", "price_level": price,
                                        "new_quantity": "1"}]}]}).encode()

    p(l2(0, "snapshot", "BTC-USD", "100"))
    p(l2(1, "snapshot", "ETH-USD", "10"))
    p(b'{"channel":"heartbeats","sequence_num":2,"events":[{}]}')
    p(l2(3, "update", "BTC-USD", "101"))
    assert p.book("BTC-USD").best_bid == 101.0 and p.sync.stats.gaps == 0
    p(l2(5, "update", "ETH-USD", "11"))  # 4 lost: every book of the connection resyncs
    assert p.sync.stats.gaps == 1 and sorted(p.resyncs) == [1, 2]
    assert not p.book("BTC-USD").valid and not p.book("ETH-USD").valid
    p(l2(6, "snapshot", "ETH-USD", "12"))
    assert p.book("ETH-USD").valid and p.book("ETH-USD").best_bid == 12.0
    assert p.sync.stats.dropped_stale == 1  # the buffered ETH update predates the snapshot
    p.sync.connection_reset()
    p(l2(0, "snapshot", "BTC-USD", "102"))  # a new connection restarts the sequence
    assert p.sync.stats.gaps == 1 and p.book("BTC-USD").valid


def _coinbase_l2(seq: int, kind: str, price: str, updates: str = "updates") -> bytes:
    return json.dumps({"channel": "l2_data", "timestamp": "2026-01-01T00:00:00Z",
                       "sequence_num": seq, "events": [{"type": kind, "product_id": "BTC-USD",
                       updates: [{"side": "bid", "price_level": price,
                                  "new_quantity": "1"}]}]}).encode()


@pytest.mark.parametrize("handed_over", [True, False])
def test_coinbase_malformed_l2_data_invalidates_and_resyncs(handed_over: bool) -> None:
    """An l2_data whose body cannot be read (here `updates` renamed) still took a
    sequence_num. Given to BookSync (as inspect does) the book is invalid and a resync asked
    at once; not given (the engine submits only messages with events) the next message's
    sequence_num is the gap. Never valid with the update lost."""
    p = Pipe("coinbase")
    p(_coinbase_l2(0, "snapshot", "100"))
    p(_coinbase_l2(1, "update", "101"))
    book = p.book("BTC-USD")
    assert book.valid and book.best_bid == 101.0 and p.resyncs == []
    lost = _coinbase_l2(2, "update", "102", updates="update")
    events = p.norm.normalize(lost, 1)
    assert len(events) == 0 and p.norm.last.kind == MessageKind.MALFORMED
    if handed_over:
        p.sync.process(events, p.norm.last)
        assert not book.valid and p.resyncs == [1] and p.sync.stats.lost == 1
    p(_coinbase_l2(3, "update", "103"))
    assert not book.valid and p.resyncs == [1] and book.best_bid == 101.0
    assert p.sync.stats.gaps == 1 and p.sync.stats.resyncs == 1
    p(_coinbase_l2(4, "snapshot", "104"))  # the resubscription's snapshot
    assert book.valid and book.best_bid == 104.0 and p.sync.stats.gaps == 1


def _bybit_ob(kind: str, u: int, price: str) -> bytes:
    return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1, "data": {
        "s": "BTCUSDT", "b": [[price, "1"]], "a": [["30", "1"]], "u": u, "seq": u}}).encode()


BOOK_VENUES = {  # venue -> (snapshot, first delta, malformed deltas, next delta)
    "binance-usdm": (rest(100, [["10", "1"]], [["20", "1"]]),
                     depth(99, 101, 100, [["11", "1"]], []),
                     [depth(102, 103, 101, [["12", "NaN"]], []),
                      depth(102, 103, 101, [["12", "1"]], []).replace(
                          b', "b": [["12", "1"]]', b""),
                      depth(102, 103, 101, [["12.0.1", "1"]], [])],
                     depth(104, 105, 103, [["13", "1"]], [])),
    "binance": (rest(100, [["10", "1"]], [["20", "1"]]),
                depth(99, 101, None, [["11", "1"]], []),
                [depth(102, 103, None, [["12", "-1"]], []),
                 depth(102, 103, None, [["12", "1"]], []).replace(b'"E": 1', b'"E": -1')],
                depth(104, 105, None, [["13", "1"]], [])),
    "bybit": (_bybit_ob("snapshot", 10, "20"), _bybit_ob("delta", 11, "21"),
              [_bybit_ob("delta", 12, "0"), _bybit_ob("delta", 12, "22").replace(
                  b'"ts": 1', b'"ts": -1'), _bybit_ob("delta", 12, "22").replace(
                  b'"u": 12', b'"u": 99999999999999999999')],
              _bybit_ob("delta", 13, "23")),
}


@pytest.mark.parametrize("venue", sorted(BOOK_VENUES))
def test_malformed_delta_is_a_gap(venue: str) -> None:
    """A skipped delta is never applied in part and the book does not stay valid with the
    hole: the next delta does not follow, so the book is invalid and resyncs."""
    snapshot, first, malformed, after = BOOK_VENUES[venue]
    for bad in malformed:
        p = Pipe(venue)
        p(snapshot)
        p(first)
        book = p.book()
        assert book.valid and p.sync.stats.gaps == 0
        top = book.depth(5)
        p(bad)
        assert p.norm.last.kind == MessageKind.MALFORMED, bad
        assert [a.tolist() for a in book.depth(5)] == [a.tolist() for a in top]
        p(after)
        assert not book.valid and p.sync.stats.gaps == 1 and p.resyncs[-1] == 1, bad


def test_rule_must_be_a_sync_rule() -> None:
    for rule in ("kraken", "binance-usdm", None):  # a venue key is not a rule
        with pytest.raises(BookError, match="SyncRule"):
            BookSync(rule)


# ---- injected gaps on real recordings ------------------------------------------------------
def _records(root: Path, rel: str, conn: str = "", limit: int | None = None):
    out = []
    for record in open_recording(root / rel).records():
        if not conn or record.conn == conn:
            out.append(record)
        if limit is not None and len(out) >= limit:
            break
    return out


@pytest.mark.parametrize(("rel", "venue", "limit"), [
    ("binance/hftbacktest/usdm/btcusdt_20240808.gz", "binance-usdm", 12000),
    ("binance/hftbacktest/spot/btcusdt_20240808.gz", "binance", 20000),
])
def test_binance_dump_injected_gap_heals(shared_data: Path, rel: str, venue: str,
                                         limit: int) -> None:
    records = _records(shared_data, rel, limit=limit)
    depth_at = [i for i, r in enumerate(records) if b"@depth" in r.message[:40]]
    drop = depth_at[len(depth_at) // 3]  # a delta well after the snapshot
    heal = depth_at[len(depth_at) // 3 + 20]  # the snapshot comes 20 deltas later
    registry = SymbolRegistry()
    norm = normalizer_for(venue, registry)
    asked: list[int] = []
    sync = BookSync(get_venue(venue).sequencing, on_resync=asked.append)
    ref = RefFeed(venue)
    sid = registry.id(venue, "BTCUSDT")
    for i, record in enumerate(records):
        ref.feed(record.message)  # the reference sees every message
        if i != drop:
            sync.process(norm.normalize(record.message, record.recv_ns), norm.last)
        if i == depth_at[depth_at.index(drop) + 1]:
            assert sync.stats.gaps == 1 and asked == [sid, sid] and not sync.is_valid(sid)
        if i == heal:
            assert sync.buffered(sid) == 20
            bids, asks = ref.books["BTCUSDT"].snapshot_lists()
            last = json.loads(record.message)["data"]["u"]
            body = json.dumps({"lastUpdateId": last, "bids": bids, "asks": asks}).encode()
            sync.process(norm.normalize_snapshot(body, record.recv_ns, "BTCUSDT"), norm.last)
            assert sync.is_valid(sid) and sync.buffered(sid) == 0
            assert_same_book(sync.book(sid), ref.books["BTCUSDT"], "after resync")
    assert sync.stats.gaps == 1 and sync.stats.resyncs == 1 and sync.is_valid(sid)
    assert_same_book(sync.book(sid), ref.books["BTCUSDT"], "end")


def test_bybit_injected_gap_heals(shared_data: Path) -> None:
    records = _records(shared_data, "bybit/BYBIT.jsonl.zst", conn="BYBIT.ws.2")
    btc = [i for i, r in enumerate(records) if b'"orderbook.200.BTCUSDT"' in r.message[:40]]
    drop, heal = btc[100], btc[110]
    registry = SymbolRegistry()
    norm = normalizer_for("bybit", registry)
    asked: list[int] = []
    sync = BookSync(get_venue("bybit").sequencing, on_resync=asked.append)
    ref = RefFeed("bybit")
    for i, record in enumerate(records):
        ref.feed(record.message)
        if i != drop:
            sync.process(norm.normalize(record.message, record.recv_ns), norm.last)
        if i == heal:
            sid = registry.lookup("bybit", "BTCUSDT")
            assert asked == [sid] and not sync.is_valid(sid)
            bids, asks = ref.books["BTCUSDT"].snapshot_lists()
            u = json.loads(record.message)["data"]["u"]
            snap = json.dumps({"topic": "orderbook.200.BTCUSDT", "type": "snapshot", "ts": 1,
                               "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u,
                                        "seq": 0}}).encode()
            sync.process(norm.normalize(snap, record.recv_ns), norm.last)
            assert sync.is_valid(sid)
            assert_same_book(sync.book(sid), ref.books["BTCUSDT"], "after resync")
    assert sync.stats.gaps == 1 and sync.stats.dropped_stale == 10  # btc[101..110]
    for symbol, rbook in ref.books.items():
        assert_same_book(sync.book(registry.lookup("bybit", symbol)), rbook, symbol)


def test_coinbase_injected_gap_heals(shared_data: Path) -> None:
    records = _records(shared_data, "coinbase/COINBASE.jsonl.zst")
    l2 = [i for i, r in enumerate(records) if b'"l2_data"' in r.message[:20]]
    drop, heal = l2[200], l2[230]
    registry = SymbolRegistry()
    norm = normalizer_for("coinbase", registry)
    asked: list[int] = []
    sync = BookSync(get_venue("coinbase").sequencing, on_resync=asked.append)
    ref = RefFeed("coinbase")
    shift = 0
    for i, record in enumerate(records):
        ref.feed(record.message)
        message = re.sub(rb'"sequence_num":(\d+)',
                         lambda m, k=shift: b'"sequence_num":%d' % (int(m.group(1)) + k),
                         record.message, count=1)
        if i != drop:
            sync.process(norm.normalize(message, record.recv_ns), norm.last)
        if i == heal:
            assert sync.stats.gaps == 1 and len(asked) == 2
            seq = norm.last.seq
            for product, rbook in ref.books.items():  # the resubscribe's fresh snapshots
                bids, asks = rbook.snapshot_lists()
                updates = ([{"side": "bid", "price_level": p, "new_quantity": q}
                            for p, q in bids] + [{"side": "offer", "price_level": p,
                                                  "new_quantity": q} for p, q in asks])
                seq += 1
                snap = json.dumps({"channel": "l2_data", "timestamp": "2026-08-09T21:06:00Z",
                                   "sequence_num": seq, "events": [{
                                       "type": "snapshot", "product_id": product,
                                       "updates": updates}]}).encode()
                sync.process(norm.normalize(snap, record.recv_ns), norm.last)
                shift += 1
    assert sync.stats.gaps == 1 and sync.stats.resyncs == 2
    for product, rbook in ref.books.items():
        sid = registry.lookup("coinbase", product)
        assert sync.is_valid(sid)
        assert_same_book(sync.book(sid), rbook, product)


def test_tick_sizes_from_symbol_metadata() -> None:
    """A tick size given per symbol (metadata) sets the ladder's grid before any snapshot;
    other symbols infer theirs from the snapshot; a finer price still refines it."""
    registry = SymbolRegistry()
    norm = normalizer_for("binance-usdm", registry, default_symbol="BTCUSDT")
    sid = registry.id("binance-usdm", "BTCUSDT")
    sync = BookSync(get_venue("binance-usdm").sequencing, tick_sizes={sid: 0.1})
    assert sync.book(sid).tick_size == 0.1 and sync.book(sid + 1).tick_size != 0.1
    for message in (depth(1, 5, 0, [["10.1", "1"]], []),
                    rest(5, [["10.1", "1"], ["9.9", "2"]], [["10.3", "1"]]),
                    depth(6, 7, 5, [["10.15", "3"]], [])):
        sync.process(norm.normalize(message, 1), norm.last)
    book = sync.book(sid)
    assert book.valid and book.depth(5)[0].tolist() == [10.15, 10.1, 9.9]
    assert book.tick_size == 0.05


def test_price_refused_by_the_book_is_a_gap_and_heals() -> None:
    p = Pipe("binance-usdm")
    p(rest(100, [["11", "5"]], [["21", "1"]]))
    p(depth(99, 101, 98, [["12", "1"]], []))
    book = p.book()
    assert book.valid and book.best_bid == 12.0
    p(depth(102, 103, 101, [["1.0000000000000002", "1"]], []))  # 16 decimals: off every grid
    assert p.sync.stats.rejected == 1 and p.sync.stats.gaps == 1
    assert not book.valid and p.resyncs == [1]  # the first snapshot came unasked
    p(depth(104, 105, 103, [["13", "1"]], []))  # buffered while the snapshot comes
    p(rest(104, [["12", "2"]], [["21", "1"]]))
    assert book.valid and book.depth(2)[0].tolist() == [13.0, 12.0]
    assert p.sync.stats.rejected == 1


def test_binance_futures_first_delta_may_continue_the_snapshot_exactly() -> None:
    p = Pipe("binance-usdm")
    p(rest(100, [["11", "5"]], [["21", "1"]]))  # taken between two deltas: none straddles
    p(depth(101, 104, 100, [["12", "1"]], []))  # pu == lastUpdateId: the next update
    assert p.book().valid and p.book().best_bid == 12.0 and p.sync.stats.gaps == 0
    q = Pipe("binance-usdm")
    q(rest(100, [["11", "5"]], [["21", "1"]]))
    q(depth(102, 104, 101, [["12", "1"]], []))  # neither straddles nor continues: a gap
    assert not q.book().valid and q.sync.stats.gaps == 1


def test_get_finds_a_seen_book_and_creates_none() -> None:
    p = Pipe("binance-usdm")
    assert p.sync.get(1) is None and p.sync.books == {}  # asking created nothing
    p(rest(100, [["11", "5"]], [["21", "1"]]))
    assert p.sync.get(1) is p.book() and p.sync.get(1).best_ask == 21.0
    assert p.sync.get(2) is None and list(p.sync.books) == [1]
