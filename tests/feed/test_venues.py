"""Venue normalizers: events written per message type, sequence info, bad input, subscribe."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil

import numpy as np
import pytest

import workbench.feed.venues as venues_package
from workbench.book.sequencing import (
    BINANCE_FUTURES,
    BINANCE_SPOT,
    BYBIT,
    COINBASE,
    UNSEQUENCED,
)
from workbench.errors import ConfigError
from workbench.events import EVENT_DTYPE, EventFlag, EventKind, MessageKind, Side
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import VENUES, all_venues, get_venue, normalizer_for, simulated_venue
from workbench.feed.venues.binance import BinanceNormalizer
from workbench.feed.venues.bybit import BybitNormalizer

BINANCE_DEPTH = (
    b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,'
    b'"T":1723161256298,"s":"BTCUSDT","U":100,"u":105,"pu":99,'
    b'"b":[["61800.20","2.507"],["61799.00","0.000"]],"a":[["61800.30","3.330"]]}}'
)


@pytest.fixture
def registry() -> SymbolRegistry:
    return SymbolRegistry()


def rows(events: np.ndarray) -> list[tuple]:
    return [(int(e["kind"]), int(e["side"]), float(e["price"]), float(e["qty"]), int(e["flags"]))
            for e in events]


def test_symbol_registry_round_trip(registry: SymbolRegistry) -> None:
    a = registry.id("binance", "btcusdt")
    b = registry.id("binance-usdm", "BTCUSDT")
    assert a != b and a >= 1 and b >= 1
    assert registry.id("binance", "BTCUSDT") == a
    assert registry.name(b) == ("binance-usdm", "BTCUSDT")
    assert registry.lookup("coinbase", "BTC-USD") is None
    with pytest.raises(KeyError):
        registry.name(99)


def test_binance_depth_delta(registry: SymbolRegistry) -> None:
    norm = normalizer_for("binance-usdm", registry)
    ev = norm.normalize(BINANCE_DEPTH, 123)
    assert ev.dtype == EVENT_DTYPE
    assert rows(ev) == [
        (EventKind.BID_LEVEL, Side.BUY, 61800.2, 2.507, 0),
        (EventKind.BID_LEVEL, Side.BUY, 61799.0, 0.0, 0),
        (EventKind.ASK_LEVEL, Side.SELL, 61800.3, 3.33, EventFlag.LAST_IN_MSG),
    ]
    assert set(ev["ts_recv_ns"]) == {123}
    assert set(ev["ts_event_ns"]) == {1723161256299 * 1_000_000}
    assert set(ev["venue_seq"]) == {105}
    assert set(ev["symbol_id"]) == {registry.lookup("binance-usdm", "BTCUSDT")}
    info = norm.last
    assert (info.kind, info.first_id, info.last_id, info.prev_id) == (MessageKind.DELTA, 100,
                                                                      105, 99)
    assert norm.stats.messages == 1 and norm.stats.events == 3


def test_binance_snapshot_ticker_trade(registry: SymbolRegistry) -> None:
    norm = normalizer_for("binance", registry)
    norm.normalize(BINANCE_DEPTH.replace(b',"pu":99', b""), 1)  # learns the symbol
    snap = (b'{"lastUpdateId":104,"bids":[["61800.20","1.5"],["61799.90","2"]],'
            b'"asks":[["61800.30","4"]]}')
    ev = norm.normalize(snap, 2)
    assert [int(k) for k in ev["kind"]] == [EventKind.SNAPSHOT_BEGIN, EventKind.BID_LEVEL,
                                            EventKind.BID_LEVEL, EventKind.ASK_LEVEL,
                                            EventKind.SNAPSHOT_END]
    assert all(int(f) & EventFlag.SNAPSHOT for f in ev["flags"])
    assert int(ev["flags"][-1]) & EventFlag.LAST_IN_MSG
    assert (norm.last.kind, norm.last.last_id) == (MessageKind.SNAPSHOT, 104)
    same = norm.normalize_snapshot(snap, 2, "btcusdt").copy()
    assert np.array_equal(same[["kind", "price", "qty", "symbol_id"]],
                          ev[["kind", "price", "qty", "symbol_id"]])

    ticker = (b'{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT",'
              b'"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}')
    ev = norm.normalize(ticker, 3)
    assert rows(ev) == [(EventKind.BBO, Side.BUY, 25.3519, 31.21, 0),
                        (EventKind.BBO, Side.SELL, 25.3652, 40.66, EventFlag.LAST_IN_MSG)]
    assert int(ev["ts_event_ns"][0]) == 0  # spot bookTicker has no event time

    trade = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"T":2,"s":"BTCUSDT",'
             b'"t":12345,"p":"0.001","q":"100","m":true}}')
    ev = norm.normalize(trade, 4)
    assert rows(ev) == [(EventKind.TRADE, Side.SELL, 0.001, 100.0, EventFlag.LAST_IN_MSG)]
    assert int(ev["venue_seq"][0]) == 12345 and int(ev["ts_event_ns"][0]) == 2_000_000
    agg = trade.replace(b'"t":12345', b'"a":77').replace(b"@trade", b"@aggTrade").replace(
        b'"m":true', b'"m":false')
    ev = norm.normalize(agg, 5)
    assert int(ev["side"][0]) == Side.BUY and int(ev["venue_seq"][0]) == 77
    assert norm.stats.by_channel == {"depthUpdate": 1, "depthSnapshot": 2, "bookTicker": 1,
                                     "trade": 1, "aggTrade": 1}


def test_bare_frames_and_str_input(registry: SymbolRegistry) -> None:
    norm = normalizer_for("binance-usdm", registry)
    bare = json.dumps(json.loads(BINANCE_DEPTH)["data"])
    ev = norm.normalize(bare, 9)  # a str frame is accepted too
    assert len(ev) == 3 and norm.last.kind == MessageKind.DELTA
    assert len(norm.normalize(b'{"result":null,"id":1}', 10)) == 0
    assert norm.last.kind == MessageKind.OTHER and not norm.stats.malformed


def test_batch_grows_for_a_large_snapshot(registry: SymbolRegistry) -> None:
    norm = normalizer_for("binance", registry, default_symbol="XYZ", capacity=16)
    bids = [[f"{100 - i * 0.01:.2f}", "1"] for i in range(5000)]
    body = json.dumps({"lastUpdateId": 7, "bids": bids, "asks": [["101", "2"]]}).encode()
    ev = norm.normalize(body, 1)
    assert len(ev) == 5003
    assert np.allclose(ev["price"][1:5001], [float(p) for p, _ in bids])
    assert int(ev["kind"][-1]) == EventKind.SNAPSHOT_END


BAD_INPUTS = {
    "binance-usdm": [
        (b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate"', "json"),
        (BINANCE_DEPTH.replace(b'"61800.20"', b'"NaN"'), "bad_price"),
        (BINANCE_DEPTH.replace(b'"61800.20"', b'"0"'), "bad_price"),
        (BINANCE_DEPTH.replace(b'"61800.20"', b'"-5"'), "bad_price"),
        (BINANCE_DEPTH.replace(b'"2.507"', b'"-1"'), "bad_qty"),
        (b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"nan","B":"1",'
         b'"a":"2","A":"1"}}', "bad_price"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"10",'
         b'"q":"-0.5","m":true}}', "bad_qty"),
        (b'{"e":"mystery","E":1}', "unknown_type"),
        (b"not json at all", "json"),
        (b'{"lastUpdateId":5,"bids":[],"asks":[]}', "unknown_symbol"),
    ],
    "bybit": [
        (b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT",'
         b'"b":[["0","1"]],"a":[],"u":5,"seq":9}}', "bad_price"),
        (b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT",'
         b'"b":[["10","-1"]],"a":[],"u":5,"seq":9}}', "bad_qty"),
        (b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,'
         b'"s":"BTCUSDT","S":"Buy","v":"1","p":"NaN"}]}', "bad_price"),
        (b'{"topic":"weird.BTCUSDT","data":{}}', "unknown_type"),
        (b'{"topic":', "json"),
    ],
    "coinbase": [
        (b'{"channel":"l2_data","sequence_num":3,"events":[{"type":"update","product_id":'
         b'"BTC-USD","updates":[{"side":"bid","price_level":"-1","new_quantity":"1"}]}]}',
         "bad_price"),
        (b'{"channel":"l2_data","sequence_num":3,"events":[{"type":"update","product_id":'
         b'"BTC-USD","updates":[{"side":"bid","price_level":"1","new_quantity":"-2"}]}]}',
         "bad_qty"),
        (b'{"channel":"market_trades","sequence_num":4,"events":[{"type":"update","trades":'
         b'[{"product_id":"BTC-USD","price":"0","size":"1","side":"BUY"}]}]}', "bad_price"),
        (b'{"channel":"nonsense","sequence_num":5,"events":[]}', "unknown_type"),
        (b'{"channel":"l2_data"', "json"),
    ],
}


@pytest.mark.parametrize("venue", sorted(BAD_INPUTS))
def test_bad_input_is_counted_by_kind_and_skipped(venue: str, registry: SymbolRegistry,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    norm = normalizer_for(venue, registry)
    expected: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="workbench.feed.venues"):
        for message, kind in BAD_INPUTS[venue] * 2:  # twice: the log is once per kind
            ev = norm.normalize(message, 1)
            assert len(ev) == 0, (message, kind)
            assert norm.last.kind == MessageKind.MALFORMED and norm.last.seq == -1
            expected[kind] = expected.get(kind, 0) + 1
    assert dict(norm.stats.malformed) == expected
    logged = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(logged) == len(expected)  # once per kind within the interval
    assert norm.stats.messages == sum(expected.values())


def test_bybit_messages(registry: SymbolRegistry) -> None:
    norm = normalizer_for("bybit", registry)
    snap = (b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":'
            b'{"s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[["16611.00","0.029"]],"u":18521288,'
            b'"seq":7961638724},"cts":1672304484976}')
    ev = norm.normalize(snap, 5)
    assert [int(k) for k in ev["kind"]] == [EventKind.SNAPSHOT_BEGIN, EventKind.BID_LEVEL,
                                            EventKind.ASK_LEVEL, EventKind.SNAPSHOT_END]
    info = norm.last
    assert (info.kind, info.last_id, info.seq) == (MessageKind.SNAPSHOT, 18521288, 7961638724)
    restart = snap.replace(b'"type":"snapshot"', b'"type":"delta"').replace(b'"u":18521288',
                                                                            b'"u":1')
    norm.normalize(restart, 6)
    assert norm.last.kind == MessageKind.SNAPSHOT  # u == 1: the service restarted
    trades = (b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":['
              b'{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50",'
              b'"L":"PlusTick","i":"20f43950","BT":false},{"T":1672304486866,"s":"BTCUSDT",'
              b'"S":"Sell","v":"0.002","p":"16578.00","i":"x"}]}')
    assert rows(norm.normalize(trades, 7)) == [
        (EventKind.TRADE, Side.BUY, 16578.5, 0.001, 0),
        (EventKind.TRADE, Side.SELL, 16578.0, 0.002, EventFlag.LAST_IN_MSG)]
    t1 = (b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",'
          b'"bid1Price":"100.5","bid1Size":"2","ask1Price":"101","ask1Size":"3"},"ts":1}')
    assert rows(norm.normalize(t1, 8)) == [(EventKind.BBO, Side.BUY, 100.5, 2.0, 0),
                                           (EventKind.BBO, Side.SELL, 101.0, 3.0, 2)]
    t2 = (b'{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
          b'"ask1Size":"7"},"ts":2}')
    assert rows(norm.normalize(t2, 9))[1] == (EventKind.BBO, Side.SELL, 101.0, 7.0, 2)
    assert len(norm.normalize(b'{"success":true,"ret_msg":"","op":"subscribe"}', 10)) == 0
    assert not norm.stats.malformed


def test_coinbase_messages(registry: SymbolRegistry) -> None:
    norm = normalizer_for("coinbase", registry)
    l2 = (b'{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z",'
          b'"sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":['
          b'{"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.73",'
          b'"new_quantity":"0.06317902"},{"side":"offer","event_time":"1970-01-01T00:00:00Z",'
          b'"price_level":"21921.3","new_quantity":"0.02"}]}]}')
    ev = norm.normalize(l2, 1)
    assert rows(ev)[1:3] == [(EventKind.BID_LEVEL, Side.BUY, 21921.73, 0.06317902, 1),
                             (EventKind.ASK_LEVEL, Side.SELL, 21921.3, 0.02, 1)]
    assert int(ev["ts_event_ns"][0]) == 1675974770714964855
    assert (norm.last.kind, norm.last.seq) == (MessageKind.SNAPSHOT, 0)
    trades = (b'{"channel":"market_trades","timestamp":"2023-02-09T20:19:35.39625135Z",'
              b'"sequence_num":1,"events":[{"type":"update","trades":[{"trade_id":"000000000",'
              b'"product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY",'
              b'"time":"2019-08-14T20:42:27.265Z"}]}]}')
    ev = norm.normalize(trades, 2)
    assert rows(ev) == [(EventKind.TRADE, Side.SELL, 1260.01, 0.3, 2)]  # maker BUY -> sell
    hb = (b'{"channel":"heartbeats","timestamp":"2023-06-23T20:31:26.122969572Z",'
          b'"sequence_num":2,"events":[{"current_time":"x","heartbeat_counter":3}]}')
    assert [int(k) for k in norm.normalize(hb, 3)["kind"]] == [EventKind.HEARTBEAT]
    assert (norm.last.kind, norm.last.seq) == (MessageKind.HEARTBEAT, 2)
    sub = b'{"channel":"subscriptions","sequence_num":3,"events":[]}'
    assert len(norm.normalize(sub, 4)) == 0 and norm.last.seq == 3


def test_subscribe_frames() -> None:
    frames = get_venue("binance-usdm").subscribe(["BTCUSDT", "ethusdt"])
    assert [json.loads(f) for f in frames] == [{"method": "SUBSCRIBE", "id": 1, "params": [
        "btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade",
        "ethusdt@depth@100ms", "ethusdt@bookTicker", "ethusdt@trade"]}]
    frames = get_venue("bybit").subscribe(
        [f"S{i}USDT" for i in range(4)], channels=("orderbook.50", "publicTrade", "tickers"))
    decoded = [json.loads(f) for f in frames]
    assert [d["op"] for d in decoded] == ["subscribe", "subscribe"]
    args = [a for d in decoded for a in d["args"]]
    assert len(args) == 12 and args[0] == "orderbook.50.S0USDT" and max(
        len(d["args"]) for d in decoded) == 10
    frames = get_venue("coinbase").subscribe(["btc-usd"])
    assert [json.loads(f) for f in frames] == [
        {"type": "subscribe", "channel": "level2", "product_ids": ["BTC-USD"]},
        {"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD"]},
        {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]},
        {"type": "subscribe", "channel": "heartbeats"}]


    assert get_venue("tardis").subscribe(["X"]) == []


def test_unknown_venue_and_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="binance-usdm"):
        get_venue("kraken")
    with pytest.raises(ConfigError, match="binance-usdm"):
        normalizer_for("kraken")
    with pytest.raises(ConfigError, match="market"):
        BinanceNormalizer(market="options")
    with pytest.raises(ConfigError, match="category"):
        BybitNormalizer(category="option")
    with pytest.raises(ConfigError, match="capacity"):
        get_venue("coinbase").normalizer(capacity=8)
    assert {normalizer_for(v, SymbolRegistry()).venue for v in VENUES} == set(VENUES)


def test_venue_records() -> None:
    """One record per key, each venue module listing exactly its own; the facts the rest of
    the workbench looks up in them (SimExchange family and path, REST market, rule)."""
    records = all_venues()
    assert tuple(v.key for v in records) == VENUES
    listed = {}  # every module's RECORDS: each key once, all of them registered
    for info in pkgutil.iter_modules(venues_package.__path__):
        module = importlib.import_module(f"{venues_package.__name__}.{info.name}")
        for record in getattr(module, "RECORDS", ()):
            assert record.key not in listed
            listed[record.key] = record
    assert listed == {v.key: v for v in records}
    table = {v.key: (v.exchange, v.ws_path, v.sequencing, v.rest and v.rest.path, v.simulator)
             for v in records}
    assert table == {
        "binance": ("binance", "/stream", BINANCE_SPOT, "/api/v3/depth", None),
        "binance-usdm": ("binance", "/stream", BINANCE_FUTURES, "/fapi/v1/depth", "binance"),
        "binance-coinm": ("binance", "/stream", BINANCE_FUTURES, "/dapi/v1/depth", None),
        "bybit": ("bybit", "/v5/public/linear", BYBIT, None, "bybit"),
        "bybit-spot": ("bybit", "/v5/public/spot", BYBIT, None, None),
        "bybit-inverse": ("bybit", "/v5/public/inverse", BYBIT, None, None),
        "coinbase": ("coinbase", "", COINBASE, None, None),
        "tardis": (None, "", UNSEQUENCED, None, None),
    }
    assert simulated_venue("binance").key == "binance-usdm"
    assert simulated_venue("bybit").key == "bybit"
    with pytest.raises(ConfigError, match="simulator speaks binance and bybit"):
        simulated_venue("coinbase")


def test_binance_rest_markets_follow_the_docs() -> None:
    """Spot and futures differ (Binance docs, "Order Book"): limits, default, weights."""
    spot, usdm, coinm = (get_venue(k).rest for k in ("binance", "binance-usdm", "binance-coinm"))
    assert (spot.base_url, usdm.base_url, coinm.base_url) == (
        "https://api.binance.com", "https://fapi.binance.com", "https://dapi.binance.com")
    assert [spot.weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000)] == [
        5, 5, 25, 25, 50, 50, 250, 250]
    for futures in (usdm, coinm):
        assert [futures.weight(n) for n in futures.limits] == [2, 2, 2, 2, 5, 10, 20]
        assert tuple(futures.limits) == (5, 10, 20, 50, 100, 500, 1000)
        assert (futures.default_limit, futures.weight_limit_1m) == (500, 2400)
    assert 5000 in spot.limits and 7 in spot.limits and 5001 not in spot.limits
    assert (spot.default_limit, spot.weight_limit_1m) == (100, 6000)


REAL = [
    ("binance/hftbacktest/usdm/btcusdt_20240808.gz", 3000),
    ("binance/cryptofeed_v3/BINANCE.jsonl.zst", None),
    ("binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", None),
    ("bybit/BYBIT.jsonl.zst", None),
    ("coinbase/COINBASE.jsonl.zst", None),
    ("bybit/xrpusdt-ob500.data.zip", None),
    ("tardis_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv", None),
    ("binance/nautilus/tardis_trades.csv.gz", 2000),
]


@pytest.mark.parametrize(("rel", "limit"), REAL)
def test_real_messages_normalize_like_json(shared_data, rel: str, limit: int | None) -> None:
    """Every level and trade in real messages equals what json.loads + float() gives."""
    rec = open_recording(shared_data / rel)
    registry = SymbolRegistry()
    norms = {c: normalizer_for(v, registry) for c, v in rec.venues.items()}
    checked = 0
    for i, record in enumerate(rec.records()):
        if limit is not None and i >= limit:
            break
        norm = norms[record.conn]
        ev = norm.normalize(record.message, record.recv_ns)
        expected = _levels_and_trades(json.loads(record.message))
        got = [(int(e["kind"]), float(e["price"]), float(e["qty"])) for e in ev
               if e["kind"] in (EventKind.BID_LEVEL, EventKind.ASK_LEVEL, EventKind.TRADE)]
        assert got == expected, (rel, i)
        checked += len(got)
    assert checked > 0
    assert all(not n.stats.malformed for n in norms.values())


def _levels_and_trades(msg: object) -> list[tuple[int, float, float]]:
    """An independent reading of book levels and trades from a decoded message."""
    out: list[tuple[int, float, float]] = []
    if isinstance(msg, dict) and "stream" in msg:
        msg = msg["data"]
    if not isinstance(msg, dict):
        return out
    if msg.get("e") == "depthUpdate" or "lastUpdateId" in msg:
        for key, kind in (("b", 2), ("bids", 2), ("a", 3), ("asks", 3)):
            out += [(kind, float(p), float(q)) for p, q in msg.get(key, [])]
    elif msg.get("e") in ("trade", "aggTrade"):
        out.append((1, float(msg["p"]), float(msg["q"])))
    elif str(msg.get("topic", "")).startswith("orderbook."):
        for key, kind in (("b", 2), ("a", 3)):
            out += [(kind, float(p), float(q)) for p, q in msg["data"][key]]
    elif str(msg.get("topic", "")).startswith("publicTrade."):
        out += [(1, float(t["p"]), float(t["v"])) for t in msg["data"]]
    elif msg.get("channel") == "l2_data":
        for ev in msg["events"]:
            out += [(2 if u["side"] == "bid" else 3, float(u["price_level"]),
                     float(u["new_quantity"])) for u in ev["updates"]]
    elif msg.get("channel") == "market_trades":
        out += [(1, float(t["price"]), float(t["size"])) for ev in msg["events"]
                for t in ev["trades"]]
    elif msg.get("tardis") == "book":
        out += [(2, float(p), float(q)) for p, q in msg["bids"]]
        out += [(3, float(p), float(q)) for p, q in msg["asks"]]
    elif msg.get("tardis") == "trade":
        out.append((1, float(msg["price"]), float(msg["amount"])))
    return out


FUZZ_SOURCES = {
    "binance-usdm": "binance/hftbacktest/usdm/btcusdt_20240808.gz",
    "bybit": "bybit/BYBIT.jsonl.zst",
    "coinbase": "coinbase/COINBASE.jsonl.zst",
    "tardis": "tardis_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv",
}


@pytest.mark.parametrize("venue", sorted(FUZZ_SOURCES))
def test_mutated_real_messages_never_raise(shared_data, venue: str) -> None:
    """Seeded byte mutations of real messages (flips, cuts, inserted JSON tokens, NaN, huge
    numbers): every one is either normalized or counted as malformed, exactly once."""
    import random

    rng = random.Random(7)
    messages = [r.message for _, r in zip(range(400), open_recording(
        shared_data / FUZZ_SOURCES[venue]).records(), strict=False) if len(r.message) < 20_000]
    norm = normalizer_for(venue, SymbolRegistry())
    tokens = [b'"', b"[", b"]", b"{", b"}", b"-", b"NaN", b"1e400", b",", b'"s":', b"0",
              b"99999999999999999999999"]
    n = 1500
    ok = 0
    for _ in range(n):
        m = bytearray(rng.choice(messages))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(m))
            op = rng.random()
            if op < 0.4:
                m[pos] = rng.randrange(256)
            elif op < 0.7:
                del m[pos:pos + rng.randint(1, 20)]
            else:
                m[pos:pos] = rng.choice(tokens)
            m = m or bytearray(b"{")
        ev = norm.normalize(bytes(m), 1)
        ok += norm.last.kind != MessageKind.MALFORMED
        assert ev.dtype == EVENT_DTYPE
    assert norm.stats.messages == n
    assert ok + norm.stats.malformed_total == n and norm.stats.malformed_total > n // 4


# ---- issue 14: one small test per finding --------------------------------------------------
DEEP = b"[" * 1000 + b"]" * 1000  # ~2 KB of nesting


@pytest.mark.parametrize(("venue", "message"), [
    ("binance-usdm", b'{"stream":"btcusdt@depth@0ms","data":{"x":' + DEEP + b"}}"),
    ("binance-usdm", b'{"stream":"btcusdt@bookTicker","data":{"x":' + DEEP + b"}}"),
    ("binance", b'{"stream":"btcusdt@trade","data":{"x":' + DEEP + b"}}"),
    ("binance-coinm", b'{"e":"depthUpdate","x":' + DEEP + b"}"),
    ("bybit", b'{"topic":"orderbook.50.BTCUSDT","x":' + DEEP + b"}"),
    ("bybit-spot", b'{"topic":"publicTrade.BTCUSDT","x":' + DEEP + b"}"),
    ("bybit-inverse", b'{"x":' + DEEP + b"}"),
    ("coinbase", b'{"channel":"l2_data","x":' + DEEP + b"}"),
    ("tardis", b'{"tardis":"book","x":' + DEEP + b"}"),
])
def test_deep_nesting_is_counted_as_depth(venue: str, message: bytes,
                                          registry: SymbolRegistry) -> None:
    """A ~2 KB deeply nested message raised RecursionError out of every normalizer."""
    norm = normalizer_for(venue, registry)
    assert len(norm.normalize(message, 1)) == 0
    assert norm.last.kind == MessageKind.MALFORMED
    assert (norm.stats.messages, dict(norm.stats.malformed)) == (1, {"depth": 1})


class _Raising(BinanceNormalizer):
    """A normalizer whose venue code raises what it is given: the base's message boundary
    is what is under test."""

    def __init__(self, exc: BaseException):
        super().__init__(SymbolRegistry())
        self.exc = exc

    def _normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        raise self.exc


@pytest.mark.parametrize(("exc", "kind"), [
    (RecursionError("deep"), "depth"), (MemoryError(), "memory"),
    (ZeroDivisionError("a bug"), "internal"), (KeyError("x"), "schema"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "json")])
def test_the_base_counts_every_exception_by_kind(exc: BaseException, kind: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    norm = _Raising(exc)
    with caplog.at_level(logging.WARNING, logger="workbench.feed.venues"):
        for _ in range(3):
            assert len(norm.normalize(b'{"head of the message":1}', 1)) == 0
            assert norm.last.kind == MessageKind.MALFORMED
    assert (norm.stats.messages, dict(norm.stats.malformed)) == (3, {kind: 3})
    assert norm.stats.skipped == {("?", kind): 3}
    (logged,) = [r for r in caplog.records if "skipped" in r.getMessage()]  # once
    assert "head of the message" in logged.getMessage()
    assert (logged.exc_info is not None) == (kind == "internal")


def test_non_bytes_input_is_counted_not_raised(registry: SymbolRegistry) -> None:
    norm = normalizer_for("binance-usdm", registry)
    for bad in ("\ud800", None, 5):  # a lone surrogate cannot be UTF-8; not a buffer
        assert len(norm.normalize(bad, 1)) == 0  # type: ignore[arg-type]
    assert norm.stats.messages == 3 and dict(norm.stats.malformed) == {"json": 1, "schema": 2}
    assert len(norm.normalize(bytearray(BINANCE_DEPTH), 1)) == 3


def _depth(**data: object) -> bytes:
    base = json.loads(BINANCE_DEPTH)
    base["data"].update(data)
    return json.dumps({k: v for k, v in base["data"].items() if v is not None}).encode()


@pytest.mark.parametrize(("message", "kind"), [
    (BINANCE_DEPTH.replace(b'"61800.20"', b'"61800.20.5"'), "bad_price"),  # one number each
    (BINANCE_DEPTH.replace(b'"2.507"', b'"1e99999999999999999999"'), "bad_qty"),  # inf
    (BINANCE_DEPTH.replace(b'"61800.20"', b'"1e99999999999999999999"'), "bad_price"),
    (BINANCE_DEPTH.replace(b'"u":105', b'"u":99999999999999999999999'), "schema"),  # no wrap
    (BINANCE_DEPTH.replace(b'"u":105', b'"u":178631083|554'), "json"),  # strict JSON
    (BINANCE_DEPTH.replace(b',"b":[["61800.20","2.507"],["61799.00","0.000"]]', b""),
     "schema"),  # a depthUpdate without "b"
    (BINANCE_DEPTH.replace(b'"E":1723161256299', b'"E":-5'), "schema"),  # negative time
    (BINANCE_DEPTH.replace(b'"E":1723161256299', b'"E":0'), "schema"),
    (BINANCE_DEPTH.replace(b'"T":1723161256298', b'"T":9223372036855'), "schema"),  # > 2262
    (BINANCE_DEPTH.replace(b'"pu":99', b'"pu":-1'), "schema"),
    (BINANCE_DEPTH.replace(b'"U":100', b'"U":106'), "schema"),  # U > u
    (BINANCE_DEPTH.replace(b'"b":', b'"b":[],"b":'), "schema"),  # repeated key
    (BINANCE_DEPTH + b" x", "json"),  # trailing bytes
    (BINANCE_DEPTH.replace(b'"2.507"', b'"2.507\xff"'), "bad_qty"),  # not a number
    (b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2",'
     b'"A":"1","E":-1}}', "schema"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"T":-2,"s":"BTCUSDT","t":1,'
     b'"p":"1","q":"1","m":true}}', "schema"),
    (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","p":"1","q":"1",'
     b'"m":true}}', "schema"),  # no trade id
])
def test_binance_strict_values(message: bytes, kind: str, registry: SymbolRegistry) -> None:
    """The level scanner accepted these (issue 14): each is now skipped as `kind`."""
    norm = normalizer_for("binance-usdm", registry)
    assert len(norm.normalize(message, 1)) == 0
    assert dict(norm.stats.malformed) == {kind: 1}, message


def test_book_keys_only_at_their_documented_depth(registry: SymbolRegistry) -> None:
    """b/a/u nested elsewhere are ignored (they were read at any depth)."""
    norm = normalizer_for("binance-usdm", registry)
    plain = norm.normalize(BINANCE_DEPTH, 1).copy()
    nested = BINANCE_DEPTH.replace(
        b'"s":"BTCUSDT"', b'"s":"BTCUSDT","x":{"b":[["1.0","9"]],"u":7,"U":1},"y":[{"a":[]}]')
    top = BINANCE_DEPTH.replace(b'{"stream"', b'{"u":1,"b":[["5","5"]],"stream"')
    for message in (nested, top):
        ev = norm.normalize(message, 1)
        assert rows(ev) == rows(plain) and norm.last.last_id == 105


def test_bybit_top_level_u_does_not_make_a_snapshot(registry: SymbolRegistry) -> None:
    """An extra top-level "u" turned a delta into a snapshot that wiped the book."""
    norm = normalizer_for("bybit", registry)
    delta = (b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1672304484978,"u":1,'
             b'"data":{"s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[],"u":18521289,'
             b'"seq":7961638725},"cts":1672304484976}')
    ev = norm.normalize(delta, 1)
    assert norm.last.kind == MessageKind.DELTA and norm.last.last_id == 18521289
    assert rows(ev) == [(EventKind.BID_LEVEL, Side.BUY, 16493.5, 0.006, EventFlag.LAST_IN_MSG)]
    for bad, kind in ((delta.replace(b'"ts":1672304484978', b'"ts":-1'), "schema"),
                      (delta.replace(b',"a":[]', b""), "schema"),
                      (delta.replace(b'"u":18521289', b'"u":"18521289"'), "schema"),
                      (delta.replace(b'"delta"', b'"deltas"'), "unknown_type")):
        norm.normalize(bad, 1)
        assert norm.last.kind == MessageKind.MALFORMED and norm.stats.malformed[kind] >= 1


@pytest.mark.parametrize("drop", [b',"events":[{"type":"update","product_id":"BTC-USD",'
                                  b'"updates":[{"side":"bid","price_level":"1",'
                                  b'"new_quantity":"2"}]}]',
                                  b',"updates":[{"side":"bid","price_level":"1",'
                                  b'"new_quantity":"2"}]'])
def test_coinbase_l2_without_its_lists_is_malformed(drop: bytes,
                                                    registry: SymbolRegistry) -> None:
    """An l2_data whose events/updates key is missing gave 0 events and passed as valid."""
    l2 = (b'{"channel":"l2_data","timestamp":"2026-08-09T21:05:48Z","sequence_num":3,'
          b'"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid",'
          b'"price_level":"1","new_quantity":"2"}]}]}')
    norm = normalizer_for("coinbase", registry)
    assert len(norm.normalize(l2, 1)) == 1 and norm.last.seq == 3
    renamed = l2.replace(drop, drop.replace(b'"events"', b'"event"').replace(b'"updates"',
                                                                             b'"update"'))
    for message in (l2.replace(drop, b""), renamed):
        assert len(norm.normalize(message, 1)) == 0
        assert norm.last.kind == MessageKind.MALFORMED and norm.last.seq == -1
    assert dict(norm.stats.malformed) == {"schema": 2}


@pytest.mark.parametrize("stamp", ["1969-12-31T23:59:59Z", "9999-01-01T00:00:00Z",
                                   "2262-04-12T00:00:00Z", "2026-13-01T00:00:00Z",
                                   "2026-08-09T21:05:48"])
def test_coinbase_times_out_of_range(stamp: str, registry: SymbolRegistry) -> None:
    norm = normalizer_for("coinbase", registry)
    hb = (b'{"channel":"heartbeats","timestamp":"%s","sequence_num":2,"events":[]}'
          % stamp.encode())
    assert len(norm.normalize(hb, 1)) == 0 and dict(norm.stats.malformed) == {"schema": 1}


def test_valid_messages_in_another_key_order(registry: SymbolRegistry) -> None:
    """{"data":..,"stream":..} and a Bybit topic past the first 40 bytes were refused."""
    norm = normalizer_for("binance-usdm", registry)
    plain = norm.normalize(BINANCE_DEPTH, 1).copy()
    doc = json.loads(BINANCE_DEPTH)
    swapped = json.dumps({"data": doc["data"], "stream": doc["stream"]}).encode()
    assert rows(norm.normalize(swapped, 1)) == rows(plain)
    ticker = (b'{"data":{"u":400900217,"s":"BTCUSDT","b":"25.35190000","B":"31.21000000",'
              b'"a":"25.36520000","A":"40.66000000"},"stream":"btcusdt@bookTicker"}')
    assert [int(k) for k in norm.normalize(ticker, 1)["kind"]] == [EventKind.BBO] * 2
    bybit = normalizer_for("bybit", registry)
    late = (b'{"ts":1672304484978,"type":"snapshot","cts":1672304484976,"data":{"seq":1,'
            b'"u":5,"a":[["16611.00","0.029"]],"b":[["16493.50","0.006"]],"s":"BTCUSDT"},'
            b'"topic":"orderbook.50.BTCUSDT"}')
    ev = bybit.normalize(late, 1)
    assert [int(k) for k in ev["kind"]] == [EventKind.SNAPSHOT_BEGIN, EventKind.ASK_LEVEL,
                                            EventKind.BID_LEVEL, EventKind.SNAPSHOT_END]
    trades = (b'{"ts":1672304486868,"type":"snapshot","data":[{"T":1672304486865,'
              b'"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50"}],'
              b'"topic":"publicTrade.BTCUSDT"}')
    assert rows(bybit.normalize(trades, 2)) == [(EventKind.TRADE, Side.BUY, 16578.5, 0.001,
                                                 EventFlag.LAST_IN_MSG)]
    assert not norm.stats.malformed and not bybit.stats.malformed


def test_tardis_values_are_typed(registry: SymbolRegistry) -> None:
    norm = normalizer_for("tardis", registry)
    book = {"tardis": "book", "exchange": "deribit", "symbol": "BTC-PERPETUAL",
            "timestamp": 1585699200245000, "local_timestamp": 1585699200355684,
            "is_snapshot": False, "bids": [[6421.5, 10]], "asks": []}
    assert len(norm.normalize(json.dumps(book), 1)) == 1
    for change, kind in (({"bids": [[True, 10]]}, "schema"), ({"bids": [["6421.5", 10]]},
                         "schema"), ({"timestamp": -1}, "schema"), ({"bids": [[0, 1]]},
                         "bad_price"), ({"asks": [[1, -1]]}, "bad_qty"),
                         ({"tardis": "funding"}, "unknown_type")):
        norm.normalize(json.dumps({**book, **change}), 1)
        assert norm.last.kind == MessageKind.MALFORMED and norm.stats.malformed[kind] >= 1
    assert norm.stats.malformed_total == 6


def test_message_type_labels_from_hostile_input_stay_bounded(registry: SymbolRegistry) -> None:
    """Unknown types are counted malformed under their label, but only MAX_CHANNELS labels are
    kept apart: a stream of ever new type names cannot grow the counters without bound."""
    from workbench.feed.venues.base import MAX_CHANNELS, OTHER_CHANNEL

    norm = normalizer_for("binance-usdm", registry)
    for i in range(3 * MAX_CHANNELS):
        frame = b'{"stream":"x","data":{"e":"kind%d","E":1}}' % i
        assert len(norm.normalize(frame, 1)) == 0
    stats = norm.stats
    assert stats.messages == 3 * MAX_CHANNELS
    assert len(stats.by_channel) == MAX_CHANNELS + 1  # the first MAX_CHANNELS, then OTHER
    assert stats.by_channel[OTHER_CHANNEL] == 2 * MAX_CHANNELS
    assert sum(stats.by_channel.values()) == stats.messages
    assert stats.malformed["unknown_type"] == 3 * MAX_CHANNELS
    assert len(stats.skipped) == MAX_CHANNELS + 1
