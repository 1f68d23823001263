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
    PARSE_ERRORS,
    Normalizer,
    begin_message,
)
from workbench.feed.venues.record import Dialect, SimSession, Venue, string_after

CATEGORIES = {"linear": "bybit", "spot": "bybit-spot", "inverse": "bybit-inverse"}
DEFAULT_CHANNELS = ("orderbook.50", "publicTrade", "tickers")
MAX_ARGS_PER_SUBSCRIBE = 10  # the spot endpoint's limit; linear allows more
MS = 1_000_000
pack_into = EVENT_STRUCT.pack_into


class _Trade(msgspec.Struct):
    T: int
    s: str
    S: str
    v: float
    p: float


class _Trades(msgspec.Struct):
    data: list[_Trade]
    ts: int = 0


class _TickerData(msgspec.Struct):
    symbol: str
    bid1Price: float | None = None
    bid1Size: float | None = None
    ask1Price: float | None = None
    ask1Size: float | None = None


class _Ticker(msgspec.Struct):
    data: _TickerData
    ts: int = 0


class _Topic(msgspec.Struct):
    topic: str = ""
    op: str = ""


_TRADES = msgspec.json.Decoder(_Trades, strict=False)
_TICKER = msgspec.json.Decoder(_Ticker, strict=False)
_TOPIC = msgspec.json.Decoder(_Topic)
_OTHER_TOPICS = ("kline", "allLiquidation", "liquidation", "lt", "insurance", "adlAlert",
                 "priceLimit")


class BybitNormalizer(Normalizer):
    """Bybit v5 messages -> events. category: 'linear' (default), 'spot' or 'inverse'."""

    def __init__(self, registry: SymbolRegistry = SYMBOLS, category: str = "linear",
                 capacity: int = DEFAULT_CAPACITY):
        if category not in CATEGORIES:
            raise ConfigError(f"category must be one of {sorted(CATEGORIES)}, got "
                              f"{category!r}")
        self.venue = CATEGORIES[category]
        self.category = category
        self._bbo: dict[int, list[float]] = {}
        super().__init__(registry, capacity)

    def normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        if type(message) is not bytes:
            message = message.encode() if isinstance(message, str) else bytes(message)
        head = message[:40]
        start = self.stats.messages
        try:
            if b'"orderbook.' in head:
                return self._book(message, recv_ns)
            if b'"publicTrade.' in head:
                return self._trades(_TRADES.decode(message), recv_ns, message)
            if b'"tickers.' in head:
                return self._ticker(_TICKER.decode(message), recv_ns, message)
            top = _TOPIC.decode(message)
        except PARSE_ERRORS as exc:
            return self._failed(exc, message, start)
        if top.op or b'"success"' in message:
            begin_message(self, "response")
            return self._head[0]
        channel = top.topic.split(".", 1)[0]
        begin_message(self, channel or "?")
        if channel not in _OTHER_TOPICS:
            return self._bad("unknown_type", message, channel)
        return self._head[0]

    def _book(self, message: bytes, recv_ns: int) -> np.ndarray:
        k = self._parse_book(message)
        info = begin_message(self, "orderbook")
        if k < 0:
            return self._level_error(k, message)
        ids = self._ids
        s0, t0 = ids[_levels.H_S_START], ids[_levels.H_TYPE_START]
        u = int(ids[_levels.H_u])
        if s0 < 0 or t0 < 0 or u < 0:
            return self._bad("schema", message, "orderbook message without s/type/u")
        kind = message[t0:ids[_levels.H_TYPE_END]]
        if kind != b"snapshot" and kind != b"delta":
            return self._bad("unknown_type", message, kind.decode(errors="replace"))
        snapshot = kind == b"snapshot" or u == 1
        sid = self.symbol_id(message[s0:ids[_levels.H_S_END]].decode())
        ts = max(int(ids[_levels.H_ts]), 0) * MS
        info.kind = M_SNAPSHOT if snapshot else M_DELTA
        info.symbol_id = sid
        info.first_id = info.last_id = u
        info.seq = int(ids[_levels.H_seq])
        info.ts_event_ns = ts
        return self._book_events(k, snapshot, ts, recv_ns, u, sid)

    def _trades(self, msg: _Trades, recv_ns: int, message: bytes) -> np.ndarray:
        info = begin_message(self, "publicTrade")
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
        d = msg.data
        sid = self.symbol_id(d.symbol)
        info.symbol_id = sid
        new = (d.bid1Price, d.bid1Size, d.ask1Price, d.ask1Size)
        if all(v is None for v in new):
            return self._head[0]  # spot tickers: no best bid/offer
        for i, v in enumerate(new):
            if v is not None and not (0.0 < v < INF if i % 2 == 0 else 0.0 <= v < INF):
                return self._bad("bad_price" if i % 2 == 0 else "bad_qty", message)
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
               ws_path="/v5/public/linear", dialect=DIALECT, simulator="bybit")
SPOT = Venue("bybit-spot", partial(BybitNormalizer, category="spot"), subscribe, BYBIT,
             ws_path="/v5/public/spot", dialect=DIALECT)
INVERSE = Venue("bybit-inverse", partial(BybitNormalizer, category="inverse"), subscribe,
                BYBIT, ws_path="/v5/public/inverse", dialect=DIALECT)
RECORDS = (LINEAR, SPOT, INVERSE)
