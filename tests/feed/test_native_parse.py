"""The C++ venue parsers (`workbench.feed.native_parser.NativeParser`, csrc/native/parse*.cpp)
against the Python normalizers, the specification, on every real recording of the shared data
with book or trade messages.

Each recording's raw messages (read through `workbench.feed.replay`, per connection and its
venue) go through the Python normalizer one by one and through NativeParser (`parse_many`, one
C call, and `parse` for a sample); with the same symbol registry the events must be equal field
by field (ts_publish_ns is 0 on both) and the message info (kind, symbol_id, first/last/prev id,
seq, ts_event_ns, the malformed kind) message by message. Both event streams also feed a
BookSync with the venue's rule, and the top BOOK_LEVELS levels of the changed book are compared
after every book message. Every message of one file per venue and market is run, and the
first SUBSET of the other big dumps (about 330k messages in all).
REST depth bodies (the hftbacktest dumps' first line, cryptofeed's `@depthSnapshot` responses)
go through `parse_snapshot` and `normalize_snapshot`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.book.sync import BookSync
from workbench.errors import ConfigError
from workbench.events import EVENT_DTYPE, M_DELTA, M_SNAPSHOT, MessageInfo
from workbench.feed.native_codes import BAD_KINDS, VENUE_CODES
from workbench.feed.native_parser import INFO_DTYPE, NativeParser
from workbench.feed.replay import Record, open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue, normalizer_for

INFO_FIELDS = ("kind", "symbol_id", "first_id", "last_id", "prev_id", "seq", "ts_event_ns")
BOOK_LEVELS = 10
SUBSET = 15_000  # messages of the other big dumps (the first ones: deterministic)
# (recording, default_symbol of bare REST bodies, messages per connection: None = all). One
# file per Binance market runs whole; the other 75k-100k message dumps their first SUBSET.
RECORDINGS = [
    ("binance/hftbacktest/spot/btcusdt_20240808.gz", "BTCUSDT", None),
    ("binance/hftbacktest/spot/btcusdt_20240809.gz", "BTCUSDT", SUBSET),
    ("binance/hftbacktest/spot/ethusdt_20240808.gz", "ETHUSDT", SUBSET),
    ("binance/hftbacktest/spot/ethusdt_20240809.gz", "ETHUSDT", SUBSET),
    ("binance/hftbacktest/usdm/btcusdt_20240808.gz", "BTCUSDT", None),
    ("binance/hftbacktest/usdm/ethusdt_20240808.gz", "ETHUSDT", SUBSET),
    ("binance/hftbacktest/cm/btcusd_perp_20240808.gz", "BTCUSD_PERP", None),
    ("binance/hftbacktest/cm/btcusd_perp_20240809.gz", "BTCUSD_PERP", SUBSET),
    ("binance/cryptofeed_v3/BINANCE.jsonl.zst", None, None),
    ("binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", None, None),
    ("bybit/BYBIT.jsonl.zst", None, None),
    ("bybit/xrpusdt-ob500.data.zip", None, None),
    ("coinbase/COINBASE.jsonl.zst", None, None),
]



def connections(shared_data, rel: str, limit: int | None = None
                ) -> dict[str, tuple[str, list[Record]]]:
    """conn -> (venue key, its first `limit` records) for the normalized connections of a
    recording."""
    rec = open_recording(shared_data / rel)
    out: dict[str, tuple[str, list[Record]]] = {}
    for record in rec.records():
        venue = rec.venues.get(record.conn)
        if venue is not None:
            records = out.setdefault(record.conn, (venue, []))[1]
            if limit is None or len(records) < limit:
                records.append(record)
    return out


def python_pass(venue: str, records: list[Record], default: str | None
                ) -> tuple[SymbolRegistry, np.ndarray, np.ndarray, list[MessageInfo]]:
    """The Python normalizer's events (all messages, concatenated), event ends and infos;
    the registry holds every symbol it met."""
    registry = SymbolRegistry()
    options = {"default_symbol": default} if default else {}
    norm = normalizer_for(venue, registry, **options)
    batches, infos, ends, total = [], [], np.zeros(len(records), dtype=np.uint64), 0
    for i, r in enumerate(records):
        before = norm.stats.malformed_total
        events = norm.normalize(r.message, r.recv_ns).copy()
        info = norm.last.copy()
        info.channel = ""  # the malformed kind, as NativeParser's `last.channel`
        if norm.stats.malformed_total != before:
            info.channel = next(k for k, v in norm.stats.malformed.items() if v)
            norm.stats.malformed.clear()
        batches.append(events)
        infos.append(info)
        total += len(events)
        ends[i] = total
    events = np.concatenate(batches) if batches else np.zeros(0, dtype=EVENT_DTYPE)
    return registry, events, ends, infos


def info_array(infos: list[MessageInfo]) -> np.ndarray:
    out = np.zeros(len(infos), dtype=INFO_DTYPE)
    for name in INFO_FIELDS:
        out[name] = [getattr(i, name) for i in infos]
    out["bad"] = [BAD_KINDS.index(i.channel) for i in infos]
    return out


def assert_same_books(venue: str, records: list[Record], py_events: np.ndarray,
                      nat_events: np.ndarray, ends: np.ndarray, infos: list[MessageInfo]
                      ) -> int:
    """Both event streams through a BookSync each; the changed book's top levels compared after
    every book message. Returns the number of comparisons."""
    rule = get_venue(venue).sequencing
    py_sync, nat_sync = BookSync(rule), BookSync(rule)
    compared = 0
    start = 0
    for i, info in enumerate(infos):
        stop = int(ends[i])
        py_book = py_sync.process(py_events[start:stop], info)
        nat_book = nat_sync.process(nat_events[start:stop], info)
        start = stop
        if info.kind not in (M_SNAPSHOT, M_DELTA):
            continue
        assert (py_book is None) == (nat_book is None), f"message {i}: {records[i].message[:120]!r}"
        if py_book is not None and py_book.valid:
            for side in (0, 1):
                expected = py_book.depth(BOOK_LEVELS)[side]
                assert np.array_equal(nat_book.depth(BOOK_LEVELS)[side], expected), i
            compared += 1
    return compared


@pytest.mark.parametrize(("rel", "default", "limit"), RECORDINGS,
                         ids=[r for r, *_ in RECORDINGS])
def test_native_events_and_books_equal_the_python_normalizer(shared_data, rel: str,
                                                            default: str | None,
                                                            limit: int | None) -> None:
    conns = connections(shared_data, rel, limit)
    assert conns, f"{rel}: no normalized connection"
    for conn, (venue, records) in conns.items():
        registry, py_events, py_ends, py_infos = python_pass(venue, records, default)
        symbols = [s for _, v, s in registry.items() if v == venue]
        parser = NativeParser(venue, registry, symbols=symbols, default_symbol=default)
        events, ends, infos = parser.parse_many([r.message for r in records],
                                                [r.recv_ns for r in records], infos=True)
        assert np.array_equal(ends, py_ends), f"{rel} {conn}: event counts differ"
        assert events.tobytes() == py_events.tobytes(), f"{rel} {conn}: events differ"
        expected = info_array(py_infos)
        for name in (*INFO_FIELDS, "bad"):
            differ = np.flatnonzero(infos[name] != expected[name])
            assert not len(differ), (f"{rel} {conn}: info.{name} differs at message "
                                     f"{differ[0]}: {records[differ[0]].message[:200]!r}")
        assert np.array_equal(infos["n_events"], np.diff(ends, prepend=np.uint64(0)))
        assert parser.stats()["messages"] == len(records)
        assert parser.stats()["events"] == len(events)
        kinds = set(infos["kind"].tolist())
        compared = assert_same_books(venue, records, py_events, events, ends, py_infos)
        assert compared > 0 or not kinds & {M_SNAPSHOT}, f"{rel} {conn}: no book compared"


def test_parse_one_message_at_a_time_equals_the_bulk_call(shared_data) -> None:
    """`parse` (one message per call, the batch grown on demand from 16 events) gives what
    `parse_many` gives, on a mixed recording."""
    (venue, records), = connections(shared_data, "binance/cryptofeed_v3/BINANCE.jsonl.zst"
                                    ).values()
    registry, py_events, py_ends, _ = python_pass(venue, records, None)
    symbols = [s for _, v, s in registry.items() if v == venue]
    one = NativeParser(venue, registry, symbols=symbols, capacity=16)
    start = 0
    for r, stop in zip(records, py_ends.tolist(), strict=True):
        events, _ = one.parse(r.message, r.recv_ns)
        assert events.tobytes() == py_events[start:stop].tobytes()
        start = stop
    assert one.capacity > 16  # the snapshot grew the batch


def rest_bodies(shared_data) -> list[tuple[str, str, bytes]]:
    """(venue, symbol, REST depth body) from the recordings."""
    out = []
    for rel, symbol, _ in RECORDINGS:
        for venue, records in connections(shared_data, rel).values():
            for r in records:
                if r.message.startswith(b'{"lastUpdateId"'):
                    out.append((venue, symbol, r.message))
                elif b"@depthSnapshot" in r.message[:64]:
                    msg = json.loads(r.message)
                    body = json.dumps(msg["data"], separators=(",", ":")).encode()
                    out.append((venue, msg["stream"].split("@")[0].upper(), body))
    return out


def test_rest_snapshots_equal_normalize_snapshot(shared_data) -> None:
    bodies = rest_bodies(shared_data)
    assert len(bodies) >= 5
    for venue, symbol, body in bodies:
        registry = SymbolRegistry()
        norm = normalizer_for(venue, registry)
        expected = norm.normalize_snapshot(body, 7, symbol).copy()
        parser = NativeParser(venue, registry, symbols=[symbol])
        events, info = parser.parse_snapshot(body, 7, symbol)
        assert len(expected) > 2 and events.tobytes() == expected.tobytes()
        assert all(getattr(info, f) == getattr(norm.last, f) for f in INFO_FIELDS)
        # the same body of a symbol the parser does not know: refused, not registered
        events, info = parser.parse_snapshot(body, 7, "NOSUCH")
        assert len(events) == 0 and info.channel == "unknown_symbol"
        assert parser.stats()["malformed"] == {"unknown_symbol": 1}


def test_venue_keys_and_symbols() -> None:
    registry = SymbolRegistry()
    for key in VENUE_CODES:
        parser = NativeParser(key, registry, symbols=["btc-usd"])
        assert registry.lookup(key, "BTC-USD") == parser.add_symbol("BTC-USD")
    with pytest.raises(ConfigError):
        NativeParser("tardis", registry)
    with pytest.raises(ConfigError):
        NativeParser("bybit", registry, default_symbol="BTCUSDT")
    with pytest.raises(ConfigError):
        NativeParser("binance", registry).add_symbol("")
    parser = NativeParser("binance", registry)
    events, info = parser.parse(b'{"stream":"x@trade","data":{"e":"trade","E":1,"T":1,'
                                b'"s":"XYZ","t":1,"p":"1","q":"1","m":true}}', 5)
    assert len(events) == 0 and info.channel == "unknown_symbol"
    parser.add_symbol("xyz")
    events, info = parser.parse(b'{"stream":"x@trade","data":{"e":"trade","E":1,"T":1,'
                                b'"s":"XYZ","t":1,"p":"1","q":"1","m":true}}', 5)
    assert events["price"].tolist() == [1.0] and events["seq"].tolist() == [2]
    assert info.symbol_id == registry.lookup("binance", "XYZ") and info.last_id == 1
