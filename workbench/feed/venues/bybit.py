"""Bybit v5 public market data -> events.

Protocol (Bybit V5 API docs, "WebSocket Stream > Public"):
- `orderbook.{depth}.{symbol}`: `{"topic","type":"snapshot"|"delta","ts",
  "data":{"s","b":[[price,size],..],"a":[..],"u","seq"},"cts"}`. A snapshot replaces the book;
  size "0" deletes a level; `u` is the update id (each delta's u = previous u + 1); "u" = 1
  means the service restarted and the message must be treated as a snapshot (docs: "Occasionally,
  you'll receive "u"=1, which is a snapshot data due to the restart of the service").
- `publicTrade.{symbol}`: `data` is a list of `{"T","s","S":"Buy"|"Sell","v","p","i",..}`;
  `S` is the taker (aggressor) side.
- `tickers.{symbol}`: linear/inverse carry `bid1Price`/`bid1Size`/`ask1Price`/`ask1Size`, and
  deltas carry only the fields that changed, so the normalizer keeps the last best bid/offer
  per symbol and emits both BBO events whenever one of them changes. Spot tickers have no
  best bid/offer and yield no events.
- control frames (`{"success":true,"op":"subscribe",..}`, pong) and other topics (kline,
  liquidation) are counted as OTHER.
Keys may come in any order: the topic is found by a byte search in the first 40 bytes when it
comes first (the venue's order), else by a full decode.
`category` picks the venue key: linear -> 'bybit', spot -> 'bybit-spot', inverse ->
'bybit-inverse' (the same symbol string names different instruments there).

Records (`RECORDS`): LINEAR ('bybit'), SPOT ('bybit-spot'), INVERSE ('bybit-inverse'), at
`/v5/public/{linear,spot,inverse}`; no REST snapshots (a resync resubscribes: the venue sends
a fresh snapshot). The SimExchange dialect (`BybitDialect`) answers `{"op":"subscribe"|
"unsubscribe","args":[topics],"req_id":..}` with `{"success":true,"ret_msg":"","conn_id":..,
"req_id":..,"op":..}` (with the simulator, followed by the subscribed orderbook's snapshot, as
Bybit does) and `{"op":"ping"}` with `"ret_msg":"pong"` (V5 docs, "WebSocket Connect"); the
built-in simulator writes linear messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec
import numpy as np
import orjson

from workbench.book.sequencing import BYBIT
from workbench.errors import ConfigError, FeedError
from workbench.events import (
    F_LAST,
    K_BBO,
    K_TRADE,
    M_BBO,
    M_DELTA,
    M_SNAPSHOT,
    M_TRADE,
    S_BUY,
    S_SELL,
)
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues import _levels
from workbench.feed.venues.base import (
    DEFAULT_CAPACITY,
    EVENT_STRUCT,
    INF,
    MAX_TIME_MS,
    Normalizer,
    Symbol,
    TimeMs,
    begin_message,
)
from workbench.feed.venues.record import Dialect, SimSession, Venue, string_after

CATEGORIES = {"linear": "bybit", "spot": "bybit-spot", "inverse": "bybit-inverse"}
DEFAULT_CHANNELS = ("orderbook.50", "publicTrade", "tickers")
MAX_ARGS_PER_SUBSCRIBE = 10  # the spot endpoint's limit; linear allows more
MS = 1_000_000
pack_into = EVENT_STRUCT.pack_into


class _Trade(msgspec.Struct, gc=False):
    T: TimeMs
    s: Symbol
    S: str
    v: float
    p: float


class _Trades(msgspec.Struct, gc=False):
    topic: str
    data: list[_Trade]
    ts: TimeMs = 0


class _TickerData(msgspec.Struct, gc=False):
    symbol: Symbol
    bid1Price: float | None = None
    bid1Size: float | None = None
    ask1Price: float | None = None
    ask1Size: float | None = None


class _Ticker(msgspec.Struct, gc=False):
    topic: str
    data: _TickerData
    ts: TimeMs = 0


class _Topic(msgspec.Struct, gc=False):
    topic: str = ""
    op: str = ""
    success: bool | None = None


_TRADES = msgspec.json.Decoder(_Trades, strict=False)
_TICKER = msgspec.json.Decoder(_Ticker, strict=False)
_TOPIC = msgspec.json.Decoder(_Topic)
_OTHER_TOPICS = ("kline", "allLiquidation", "liquidation", "lt", "insurance", "adlAlert",
                 "priceLimit")
HEAD_BYTES = 40  # where a byte search finds the topic when it comes first


class BybitNormalizer(Normalizer):
    """Bybit v5 messages -> events. category: 'linear' (default), 'spot' or 'inverse'.

    Required keys: orderbook topic, type, ts, data.s, data.b, data.a, data.u; publicTrade
    topic, data[T, s, S, v, p]; tickers topic, data.symbol. Times must be > 0 and ids
    non-negative, both within int64; keys may come in any order.
    """

    def __init__(self, registry: SymbolRegistry = SYMBOLS, category: str = "linear",
                 capacity: int = DEFAULT_CAPACITY):
        if category not in CATEGORIES:
            raise ConfigError(f"category must be one of {sorted(CATEGORIES)}, got "
                              f"{category!r}")
        self.venue = CATEGORIES[category]
        self.category = category
        self._bbo: dict[int, list[float]] = {}
        super().__init__(registry, capacity)

    def _normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        head = message[:HEAD_BYTES]  # `topic` comes first in the venue's order
        if b'"orderbook.' in head:
            channel = "orderbook"
        elif b'"publicTrade.' in head:
            channel = "publicTrade"
        elif b'"tickers.' in head:
            channel = "tickers"
        else:  # topic not first, or not a data topic: a full decode
            top = _TOPIC.decode(message)
            channel = top.topic.split(".", 1)[0]
            if channel not in ("orderbook", "publicTrade", "tickers"):
                return self._other(top, channel, message)
        if channel == "orderbook":
            return self._book(message, recv_ns)
        if channel == "publicTrade":
            return self._trades(_TRADES.decode(message), recv_ns, message)
        return self._ticker(_TICKER.decode(message), recv_ns, message)

    def _other(self, top: _Topic, channel: str, message: bytes) -> np.ndarray:
        if top.op or top.success is not None:
            begin_message(self, "response")
            return self._head[0]
        begin_message(self, channel or "?")
        if channel not in _OTHER_TOPICS:
            return self._bad("unknown_type", message, channel)
        return self._head[0]

    def _book(self, message: bytes, recv_ns: int) -> np.ndarray:
        """An orderbook message, read and validated by `_levels.parse_book`."""
        k = self._parse_book(message, True, True)
        ids = self._ids.tolist()  # order = _levels.H_*
        info = begin_message(self, "orderbook")
        if k < 0:
            return self._level_error(k, message)
        u, ts_ms, cts = ids[_levels.H_u], ids[_levels.H_ts], ids[_levels.H_cts]
        s0, s1 = ids[_levels.H_s], ids[_levels.H_s + 1]
        t0, t1 = ids[_levels.H_TYPE], ids[_levels.H_TYPE + 1]
        topic = message[ids[_levels.H_TOPIC]:ids[_levels.H_TOPIC + 1]]
        if not (topic.startswith(b"orderbook.") and s1 > s0 and t0 >= 0 and u >= 0
                and 0 < ts_ms <= MAX_TIME_MS and cts != 0 and cts <= MAX_TIME_MS
                and ids[_levels.H_SIDES] == _levels.SIDE_B | _levels.SIDE_A):
            return self._bad("schema", message, "orderbook needs topic, type, ts, data.s, "
                             "data.u, data.b and data.a")
        kind = message[t0:t1]
        if kind != b"snapshot" and kind != b"delta":
            return self._bad("unknown_type", message, kind.decode(errors="replace"))
        snapshot = kind == b"snapshot" or u == 1
        sid = self.symbol_id(message[s0:s1].decode())
        ts = ts_ms * MS
        info.kind = M_SNAPSHOT if snapshot else M_DELTA
        info.symbol_id = sid
        info.first_id = info.last_id = u
        info.seq = ids[_levels.H_seq]
        info.ts_event_ns = ts
        return self._book_events(k, snapshot, ts, recv_ns, u, sid)

    def _trades(self, msg: _Trades, recv_ns: int, message: bytes) -> np.ndarray:
        info = begin_message(self, "publicTrade")
        if not msg.topic.startswith("publicTrade."):
            return self._bad("schema", message, f"publicTrade message of topic {msg.topic!r}")
        trades = msg.data
        for t in trades:
            if not 0.0 < t.p < INF:
                return self._bad("bad_price", message)
            if not 0.0 <= t.v < INF or t.S not in ("Buy", "Sell"):
                return self._bad("bad_qty" if t.S in ("Buy", "Sell") else "schema", message)
        n = len(trades)
        if not n:
            return self._head[0]
        self._reserve(n)
        seq = self.stats.messages
        buf = self._buf
        for i, t in enumerate(trades):
            pack_into(buf, i << 6, t.T * MS, recv_ns, 0, seq, 0, self.symbol_id(t.s), K_TRADE,
                      S_BUY if t.S == "Buy" else S_SELL, F_LAST if i == n - 1 else 0, t.p, t.v)
        info.kind = M_TRADE
        info.symbol_id = self.symbol_id(trades[-1].s)
        info.ts_event_ns = msg.ts * MS
        self.stats.events += n
        return self._batch[:n]

    def _ticker(self, msg: _Ticker, recv_ns: int, message: bytes) -> np.ndarray:
        info = begin_message(self, "tickers")
        if not msg.topic.startswith("tickers."):
            return self._bad("schema", message, f"tickers message of topic {msg.topic!r}")
        d = msg.data
        new = (d.bid1Price, d.bid1Size, d.ask1Price, d.ask1Size)
        if all(v is None for v in new):
            return self._head[0]  # spot tickers: no best bid/offer
        for i, v in enumerate(new):
            if v is not None and not (0.0 < v < INF if i % 2 == 0 else 0.0 <= v < INF):
                return self._bad("bad_price" if i % 2 == 0 else "bad_qty", message)
        sid = self.symbol_id(d.symbol)
        info.symbol_id = sid
        bbo = self._bbo.setdefault(sid, [0.0, 0.0, 0.0, 0.0])
        for i, v in enumerate(new):
            if v is not None:
                bbo[i] = v
        if not (bbo[0] > 0.0 and bbo[2] > 0.0):
            return self._head[0]  # one side not known yet
        ts = msg.ts * MS
        info.kind = M_BBO
        info.ts_event_ns = ts
        seq = self.stats.messages
        pack_into(self._buf, 0, ts, recv_ns, 0, seq, 0, sid, K_BBO, S_BUY, 0, bbo[0], bbo[1])
        pack_into(self._buf, 64, ts, recv_ns, 0, seq, 0, sid, K_BBO, S_SELL, F_LAST, bbo[2], bbo[3])
        self.stats.events += 2
        return self._head[2]


def subscribe(symbols: Sequence[str], channels: tuple[str, ...] | None = None) -> list[bytes]:
    """`{"op":"subscribe","args":["orderbook.50.BTCUSDT",...]}` frames, at most 10 args
    each (V5 "How to Subscribe to Topics"). channels default to orderbook.50, publicTrade and
    tickers."""
    args = [f"{c}.{s.upper()}" for s in symbols for c in (channels or DEFAULT_CHANNELS)]
    step = MAX_ARGS_PER_SUBSCRIBE
    return [msgspec.json.encode({"op": "subscribe", "args": args[i:i + step]})
            for i in range(0, len(args), step)]


# ---- SimExchange dialect --------------------------------------------------------------------
def topic_key(topic: bytes) -> bytes:
    """Subscription key of a topic: the depth of `orderbook.N.SYMBOL` removed
    (`orderbook.50.X` and `orderbook.200.X` are one topic)."""
    parts = topic.split(b".")
    if parts[0] == b"orderbook" and len(parts) == 3:
        return b"orderbook." + parts[2]
    return topic


class BybitDialect(Dialect):
    """SimExchange speaking Bybit v5 public streams (see the module docstring)."""

    family = "bybit"
    bad_request = b'{"success":false,"ret_msg":"invalid request","op":""}'

    def subscription_key(self, name: str) -> bytes:
        return topic_key(name.encode())

    def message_key(self, message: bytes) -> bytes:
        return topic_key(string_after(message[:96], b'"topic":"'))

    def is_delta(self, message: bytes) -> bool:
        head = message[:160]
        return head.startswith(b'{"topic":"orderbook') and b'"type":"delta"' in head

    def answer(self, request: dict[str, Any], session: SimSession) -> list[bytes]:
        op = request["op"]
        reply = {"success": True, "ret_msg": "", "conn_id": f"simex-{id(session):x}", "op": op}
        if "req_id" in request:
            reply["req_id"] = request["req_id"]
        if op == "subscribe":
            topics = list(request["args"])
            session.add(topics)
            books = [m for topic in topics if topic.startswith("orderbook.")
                     for m in session.simulated_book(topic.rsplit(".", 1)[-1])]
            return [orjson.dumps(reply), *books]
        if op == "unsubscribe":
            session.remove(list(request["args"]))
        elif op == "ping":
            reply["ret_msg"] = "pong"
        else:
            raise FeedError(f"unknown request op {op!r}")
        return [orjson.dumps(reply)]


DIALECT = BybitDialect()
LINEAR = Venue("bybit", partial(BybitNormalizer, category="linear"), subscribe, BYBIT,
               ws_path="/v5/public/linear", dialect=DIALECT,
               ws_url="wss://stream.bybit.com/v5/public/linear", simulator="bybit")
SPOT = Venue("bybit-spot", partial(BybitNormalizer, category="spot"), subscribe, BYBIT,
             ws_path="/v5/public/spot", dialect=DIALECT,
             ws_url="wss://stream.bybit.com/v5/public/spot")
INVERSE = Venue("bybit-inverse", partial(BybitNormalizer, category="inverse"), subscribe,
                BYBIT, ws_path="/v5/public/inverse", dialect=DIALECT,
                ws_url="wss://stream.bybit.com/v5/public/inverse")
RECORDS = (LINEAR, SPOT, INVERSE)
