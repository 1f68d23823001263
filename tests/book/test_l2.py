"""L2Book: unit behaviour, then every real recording with book messages against a reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from refbook import RefFeed, assert_same_book, assert_same_top

from workbench.book.l2 import L2Book
from workbench.book.sync import BookSync
from workbench.errors import BookError
from workbench.events import EventFlag, EventKind, empty_batch
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue, normalizer_for

BID, ASK = int(EventKind.BID_LEVEL), int(EventKind.ASK_LEVEL)


def batch(rows: list[tuple[int, float, float]], symbol_id: int = 1, flags: int = 0
          ) -> np.ndarray:
    ev = empty_batch(len(rows))
    ev["symbol_id"] = symbol_id
    ev["flags"] = flags
    for i, (kind, price, qty) in enumerate(rows):
        ev[i]["kind"], ev[i]["price"], ev[i]["qty"] = kind, price, qty
    return ev


def snapshot(bids: list[tuple[float, float]], asks: list[tuple[float, float]],
             symbol_id: int = 1) -> np.ndarray:
    rows = ([(int(EventKind.SNAPSHOT_BEGIN), 0.0, 0.0)] + [(BID, p, q) for p, q in bids]
            + [(ASK, p, q) for p, q in asks] + [(int(EventKind.SNAPSHOT_END), 0.0, 0.0)])
    return batch(rows, symbol_id, int(EventFlag.SNAPSHOT))


def test_snapshot_then_deltas() -> None:
    book = L2Book(1)
    assert not book.valid and math.isnan(book.best_bid) and math.isnan(book.mid)
    book.apply(snapshot([(99.0, 1.0), (100.0, 2.0), (98.0, 3.0)], [(101.0, 4.0), (102.0, 5.0)]))
    assert book.valid
    assert book.top() == (100.0, 2.0, 101.0, 4.0)
    assert (book.mid, book.spread) == (100.5, 1.0)
    assert book.microprice == pytest.approx((100.0 * 4.0 + 101.0 * 2.0) / 6.0)
    book.apply(batch([(BID, 100.5, 1.0), (ASK, 101.0, 0.0), (BID, 98.0, 0.0),
                      (ASK, 103.0, 1.0), (BID, 97.0, 0.0)]))  # deleting an absent level: no-op
    bp, bq, ap, aq = book.depth(10)
    assert bp.tolist() == [100.5, 100.0, 99.0] and bq.tolist() == [1.0, 2.0, 1.0]
    assert ap.tolist() == [102.0, 103.0] and aq.tolist() == [5.0, 1.0]
    assert [len(a) for a in book.depth(1)] == [1, 1, 1, 1]
    assert not book.crossed
    book.apply(batch([(BID, 102.0, 1.0)]))
    assert book.crossed and book.spread == 0.0


def test_snapshot_replaces_everything_and_ignores_other_symbols() -> None:
    book = L2Book(7)
    book.apply(snapshot([(10.0, 1.0)], [(11.0, 1.0)], symbol_id=7))
    book.apply(snapshot([(50.0, 1.0)], [(51.0, 1.0)], symbol_id=8))  # another symbol
    assert book.top() == (10.0, 1.0, 11.0, 1.0)
    book.apply(snapshot([(20.0, 2.0), (20.0, 3.0), (19.0, 0.0)], [(21.0, 5.0)], symbol_id=7))
    assert book.depth(5)[0].tolist() == [20.0] and book.best_bid_qty == 3.0  # last repeat wins
    assert book.n_asks == 1
    trade = batch([(int(EventKind.TRADE), 20.5, 1.0), (int(EventKind.BBO), 1.0, 1.0)], 7)
    book.apply(trade)
    assert book.top() == (20.0, 3.0, 21.0, 5.0)


def test_random_updates_match_reference_through_growth_and_refills() -> None:
    """Inserts and deletes anywhere in a 600-level-per-side range (deep and near the top):
    the table grows, the top cache evicts and refills; best levels and depth(5/128/200/all)
    match a dict reference after every batch, and so does each level's `level_qty`."""
    rng = np.random.default_rng(3)
    book = L2Book(1, capacity=8, window=256)  # deep levels spill into the overflow table
    ref_b: dict[float, float] = {}
    ref_a: dict[float, float] = {}
    book.apply(snapshot([], []))
    for step in range(300):
        rows = []
        for _ in range(40):
            side = BID if rng.random() < 0.5 else ASK
            ticks = int(rng.integers(1, 600)) if rng.random() < 0.5 else int(rng.integers(1, 20))
            price = 1000.0 - ticks * 0.25 if side == BID else 1000.25 + ticks * 0.25
            qty = 0.0 if rng.random() < 0.45 else float(rng.integers(1, 9))
            rows.append((side, price, qty))
            ref = ref_b if side == BID else ref_a
            if qty:
                ref[price] = qty
            else:
                ref.pop(price, None)
        book.apply(batch(rows))
        want_b = sorted(ref_b.items(), reverse=True)
        want_a = sorted(ref_a.items())
        assert book.top() == (want_b[0] + want_a[0] if want_b and want_a else book.top())
        assert math.isnan(book.best_bid) == (not want_b)
        assert (book.n_bids, book.n_asks) == (len(want_b), len(want_a))
        if step % 25 == 0 or step == 299:
            for n in (5, 128, 200, 10_000):
                bp, bq, ap, aq = book.depth(n)
                assert list(zip(bp.tolist(), bq.tolist(), strict=True)) == want_b[:n]
                assert list(zip(ap.tolist(), aq.tolist(), strict=True)) == want_a[:n]
            for ticks in range(1, 600):  # one level at a time, present or not
                bid, ask = 1000.0 - ticks * 0.25, 1000.25 + ticks * 0.25
                assert book.level_qty(True, bid) == ref_b.get(bid, 0.0)
                assert book.level_qty(False, ask) == ref_a.get(ask, 0.0)
    assert book.capacity > L2Book(1, capacity=8).capacity  # the overflow table grew


def random_messages(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A snapshot, then n delta messages (inserts/deletes near the top and deep, absent
    deletes, empty messages, other symbols' levels, trades), a second snapshot midway."""
    out = [snapshot([(1000.0 - i * 0.25, 1.0) for i in range(50)],
                    [(1000.25 + i * 0.25, 1.0) for i in range(50)])]
    for step in range(n):
        if step == n // 2:
            out.append(snapshot([(990.0, 2.0), (989.5, 1.0)], [(990.5, 3.0)]))
            continue
        rows = []
        for _ in range(int(rng.integers(0, 60))):
            side = BID if rng.random() < 0.5 else ASK
            ticks = int(rng.integers(1, 600)) if rng.random() < 0.5 else int(rng.integers(1, 12))
            price = 1000.0 - ticks * 0.25 if side == BID else 1000.25 + ticks * 0.25
            rows.append((side, price, 0.0 if rng.random() < 0.45 else float(rng.integers(1, 9))))
        ev = batch([*rows, (int(EventKind.TRADE), 1000.0, 1.0)])
        if len(ev) > 2:
            ev[0]["symbol_id"] = 2  # another symbol's level: ignored
        out.append(ev)
    return out


def test_apply_messages_equals_reference_after_every_message() -> None:
    """apply_messages (one call, the table growing mid-batch) gives, after every message, the
    top of book of a dict reference, and leaves the same book as apply per message."""
    msgs = random_messages(np.random.default_rng(11), 400)
    ref_b: dict[float, float] = {}
    ref_a: dict[float, float] = {}
    want = []
    for ev in msgs:
        for row in ev:
            kind, price, qty = int(row["kind"]), float(row["price"]), float(row["qty"])
            if kind == int(EventKind.SNAPSHOT_BEGIN):
                ref_b.clear()
                ref_a.clear()
            if kind not in (BID, ASK) or int(row["symbol_id"]) != 1:
                continue
            ref = ref_b if kind == BID else ref_a
            if qty:
                ref[price] = qty
            else:
                ref.pop(price, None)
        bid = max(ref_b) if ref_b else math.nan
        ask = min(ref_a) if ref_a else math.nan
        want.append((bid, ref_b.get(bid, math.nan), ask, ref_a.get(ask, math.nan)))
    book = L2Book(1, capacity=8, window=128)
    ends = np.cumsum([len(ev) for ev in msgs])
    tops = book.apply_messages(np.concatenate(msgs), ends)
    assert tops.shape == (len(msgs), 4) and tops.dtype == np.float64
    np.testing.assert_array_equal(tops, np.array(want))
    assert book.valid and book.capacity > L2Book(1, capacity=8).capacity
    per_call = L2Book(1, capacity=8, window=128)
    for ev in msgs:
        per_call.apply(ev)
    for a, b in zip(book.depth(10_000), per_call.depth(10_000), strict=True):
        np.testing.assert_array_equal(a, b)
    want_b = sorted(ref_b.items(), reverse=True)
    assert list(zip(*book.depth(10_000)[:2], strict=True)) == want_b


def test_apply_messages_edges() -> None:
    book = L2Book(1)
    assert book.apply_messages(empty_batch(0), np.zeros(0, dtype=np.int64)).shape == (0, 4)
    assert not book.valid
    snap = snapshot([(10.0, 1.0)], [(11.0, 2.0)])
    tops = book.apply_messages(snap, np.array([0, len(snap), len(snap)]))  # empty messages
    assert np.isnan(tops[0]).all() and tops[1:].tolist() == [[10.0, 1.0, 11.0, 2.0]] * 2
    assert book.valid
    for ends in ([1, 2], [len(snap), 1], [[len(snap)]], [-1, len(snap)]):
        with pytest.raises(ValueError):
            book.apply_messages(snap, np.array(ends))
    assert book.top() == (10.0, 1.0, 11.0, 2.0)  # a rejected call changes nothing


def test_bad_construction() -> None:
    with pytest.raises(BookError):
        L2Book(0)
    with pytest.raises(BookError):
        L2Book(1, capacity=2)
    with pytest.raises(ValueError):
        L2Book(1).depth(-1)


# ---- real recordings -----------------------------------------------------------------------
# (files, top-10 checked after each of the first `prefix` book messages, then the whole book
# at the end; None = after every book message)
RECORDINGS = {
    "binance-usdm-btc": (["binance/hftbacktest/usdm/btcusdt_20240808.gz"], 600),
    "binance-usdm-eth": (["binance/hftbacktest/usdm/ethusdt_20240808.gz"], 300),
    "binance-spot-btc": (["binance/hftbacktest/spot/btcusdt_20240808.gz",
                          "binance/hftbacktest/spot/btcusdt_20240809.gz"], 600),
    "binance-spot-eth": (["binance/hftbacktest/spot/ethusdt_20240808.gz",
                          "binance/hftbacktest/spot/ethusdt_20240809.gz"], 300),
    "binance-coinm": (["binance/hftbacktest/cm/btcusd_perp_20240808.gz",
                       "binance/hftbacktest/cm/btcusd_perp_20240809.gz"], 500),
    "cf3-binance": (["binance/cryptofeed_v3/BINANCE.jsonl.zst"], None),
    "cf3-binance-futures": (["binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst"], None),
    "cf3-bybit": (["bybit/BYBIT.jsonl.zst"], None),
    "cf3-coinbase": (["coinbase/COINBASE.jsonl.zst"], 150),
    "bybit-data-zip": (["bybit/xrpusdt-ob500.data.zip"], None),
    "tardis-incremental": (["tardis_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv"],
                           None),
}


def replay_against_reference(root: Path, files: list[str], prefix: int | None
                             ) -> dict[str, object]:
    """Replay files through normalizer + BookSync and the reference side by side; returns
    counts for the caller's assertions."""
    registry = SymbolRegistry()
    pipes: dict[str, tuple] = {}
    checked = 0
    book_messages = 0
    for rel in files:
        rec = open_recording(root / rel)
        for record in rec.records():
            if record.conn not in pipes:
                venue = rec.venues[record.conn]
                venue_record = get_venue(venue)
                pipes[record.conn] = (venue, venue_record.normalizer(registry),
                                      BookSync(venue_record.sequencing), RefFeed(venue))
            venue, norm, sync, ref = pipes[record.conn]
            events = norm.normalize(record.message, record.recv_ns)
            sync.process(events, norm.last)
            symbol = ref.feed(record.message)
            if symbol is None:
                continue
            book_messages += 1
            rbook = ref.books[symbol]
            sid = registry.lookup(venue, symbol)
            assert sid is not None, symbol
            assert sync.is_valid(sid) == rbook.synced, (rel, symbol, book_messages)
            if rbook.synced and (prefix is None or book_messages <= prefix):
                assert_same_top(sync.book(sid), rbook, 10, (rel, symbol, book_messages))
                checked += 1
    gaps = 0
    for venue, _, sync, ref in pipes.values():
        gaps += sync.stats.gaps
        for symbol, rbook in ref.books.items():
            sid = registry.lookup(venue, symbol)
            assert rbook.synced and sync.is_valid(sid), (symbol, "never synced")
            assert_same_book(sync.book(sid), rbook, (symbol, "end"))
    return {"checked": checked, "book_messages": book_messages, "gaps": gaps,
            "malformed": sum(p[1].stats.malformed_total for p in pipes.values())}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_book_equals_reference_after_each_message(shared_data: Path, name: str) -> None:
    files, prefix = RECORDINGS[name]
    result = replay_against_reference(shared_data, files, prefix)
    assert result["gaps"] == 0 and result["malformed"] == 0
    assert result["checked"] >= min(prefix or 1, result["book_messages"]) * 0.5
    assert result["checked"] > 0


def test_coinbase_snapshot_depth(shared_data: Path) -> None:
    """The Coinbase snapshot holds ~46k BTC-USD levels: the book grows past its capacity."""
    rec = open_recording(shared_data / "coinbase/COINBASE.jsonl.zst")
    registry = SymbolRegistry()
    norm = normalizer_for("coinbase", registry)
    sync = BookSync(get_venue("coinbase").sequencing, capacity=64)
    for record in rec.records():
        msg = record.message
        sync.process(norm.normalize(msg, record.recv_ns), norm.last)
        if b'"snapshot"' in msg[:200] and b"l2_data" in msg[:30]:
            snap = json.loads(msg)["events"][0]
            sid = registry.lookup("coinbase", snap["product_id"])
            book = sync.book(sid)
            n_bids = sum(1 for u in snap["updates"] if u["side"] == "bid")
            assert (book.n_bids, book.n_asks) == (n_bids, len(snap["updates"]) - n_bids)
            assert book.capacity >= max(book.n_bids, book.n_asks)
