"""Coinbase Advanced Trade market data -> events.

Protocol (Coinbase Advanced Trade API docs, "WebSocket Channels"): every message is
`{"channel","client_id","timestamp","sequence_num","events":[...]}`; `sequence_num` counts
every message on the connection (all channels), so a jump is a gap for every book of that
connection (BookSync's Coinbase rule).
- `l2_data` (subscribe channel `level2`): events `{"type":"snapshot"|"update","product_id",
  "updates":[{"side":"bid"|"offer","event_time","price_level","new_quantity"}]}`;
  new_quantity "0" deletes the level. One product per message.
- `market_trades`: events `{"type","trades":[{"trade_id","product_id","price","size","side",
  "time"}]}`. `side` is the maker's side (as NautilusTrader's Coinbase adapter documents:
  "Coinbase reports the maker side on public market trades"), so the aggressor is the opposite.
- `ticker` / `ticker_batch`: `tickers[{product_id, best_bid, best_bid_quantity, best_ask,
  best_ask_quantity, ..}]` -> BBO events.
- `heartbeats` -> one HEARTBEAT event; `subscriptions`, `candles`, `status` -> OTHER.
`ts_event_ns` is the message `timestamp` (ISO 8601 with ns) converted to int64 ns.
A message whose body cannot be read (an l2_data without `events`, an event without `updates`,
a bad value) is counted malformed as a whole, although its `sequence_num` advanced: BookSync's
Coinbase rule treats a malformed message as a connection gap (every book resyncs).

Record (`RECORDS`): COINBASE ('coinbase'); no REST snapshots (a resync resubscribes: the venue
sends a fresh snapshot). The SimExchange dialect (`CoinbaseDialect`) takes one
`{"type":"subscribe"|"unsubscribe","product_ids":[..],"channel":C}` per channel, answered by a
`subscriptions` message, and numbers its own frames per connection, rewriting `sequence_num`
("WebSocket Overview" and "Channels"); the built-in simulator does not write Coinbase.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import orjson
from msgspec import UNSET, UnsetType

from workbench.book.sequencing import COINBASE as COINBASE_SEQUENCING
from workbench.errors import FeedError
from workbench.events import (
    F_LAST,
    F_SNAPSHOT,
    K_ASK,
    K_BBO,
    K_BID,
    K_HEARTBEAT,
    K_SNAP_BEGIN,
    K_SNAP_END,
    K_TRADE,
    M_BBO,
    M_DELTA,
    M_HEARTBEAT,
    M_MALFORMED,
    M_SNAPSHOT,
    M_TRADE,
    S_BUY,
    S_SELL,
)
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues.base import (
    DEFAULT_CAPACITY,
    EVENT_STRUCT,
    INF,
    Id,
    Normalizer,
    Symbol,
    begin_message,
)
from workbench.feed.venues.record import Dialect, SimSession, Venue, string_after

DEFAULT_CHANNELS = ("level2", "market_trades", "ticker", "heartbeats")
pack_into = EVENT_STRUCT.pack_into


class _Update(msgspec.Struct, gc=False):
    side: str
    price_level: float
    new_quantity: float


class _Trade(msgspec.Struct, gc=False):
    product_id: Symbol
    price: float
    size: float
    side: str
    trade_id: str = ""


class _Tick(msgspec.Struct, gc=False):
    product_id: Symbol
    best_bid: float | None = None
    best_bid_quantity: float | None = None
    best_ask: float | None = None
    best_ask_quantity: float | None = None


class _Event(msgspec.Struct, gc=False):
    """One entry of `events`; the list a channel needs is required there (UNSET: absent)."""

    type: str = ""
    product_id: str = ""
    updates: list[_Update] | UnsetType = UNSET
    trades: list[_Trade] | UnsetType = UNSET
    tickers: list[_Tick] | UnsetType = UNSET


class _Message(msgspec.Struct, gc=False):
    channel: str
    sequence_num: Id
    timestamp: str = ""
    events: list[_Event] | UnsetType = UNSET


_MESSAGE = msgspec.json.Decoder(_Message, strict=False)
_OTHER_CHANNELS = frozenset({"subscriptions", "candles", "status", "user",
                             "futures_balance_summary"})
# channel -> the list each of its events must carry
_EVENT_LISTS = {"l2_data": "updates", "market_trades": "trades", "ticker": "tickers",
                "ticker_batch": "tickers"}
_ISO_UTC = re.compile(r"(\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\Z")
YEARS = range(1970, 2262)  # the years whose times fit int64 ns since the epoch
_SIDES = {"bid": K_BID, "offer": K_ASK, "ask": K_ASK}


def iso_ns(text: str) -> int:
    """ISO 8601 UTC time ('2026-08-09T21:05:48.228568804Z') -> int64 ns since epoch; 0 if
    empty, -1 if not UTC ('Z'), unreadable or outside 1970..2261."""
    if not text:
        return 0
    found = _ISO_UTC.match(text)
    if found is None or int(found.group(1)) not in YEARS:
        return -1
    try:
        ns = int(np.datetime64(text[:-1], "ns").astype(np.int64))
    except ValueError:
        return -1
    return ns if ns > 0 else -1


def _digits(text: str) -> int:
    """A trade id string as an int (0 if it is not ASCII digits that fit uint64)."""
    if text.isascii() and text.isdigit():
        value = int(text)
        if value < 2**64:
            return value
    return 0


class CoinbaseNormalizer(Normalizer):
    """Coinbase Advanced Trade messages -> events (venue 'coinbase').

    Required keys: channel and sequence_num (>= 0) on every message; events on l2_data,
    market_trades and ticker, each event with its list (updates / trades / tickers), an
    l2_data event also type and product_id. A timestamp, when present, must be a UTC time
    in 1970..2261.
    """

    venue = "coinbase"

    def __init__(self, registry: SymbolRegistry = SYMBOLS, capacity: int = DEFAULT_CAPACITY):
        super().__init__(registry, capacity)

    def _normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        msg = _MESSAGE.decode(message)
        channel = msg.channel
        info = begin_message(self, channel)
        listed = _EVENT_LISTS.get(channel)
        if listed is not None and (not msg.events or any(
                getattr(ev, listed) is UNSET for ev in msg.events)):
            return self._bad("schema", message, f"{channel} without events[].{listed}")
        if channel == "l2_data":
            out = self._l2(msg, recv_ns, message)
        elif channel == "market_trades":
            out = self._trades(msg, recv_ns, message)
        elif channel == "ticker" or channel == "ticker_batch":
            out = self._tickers(msg, recv_ns, message)
        elif channel == "heartbeats":
            ts = self._time(msg, message)
            if ts < 0:
                return self._head[0]
            info.kind = M_HEARTBEAT
            info.ts_event_ns = ts
            pack_into(self._buf, 0, ts, recv_ns, 0, self.stats.messages, msg.sequence_num, 0,
                      K_HEARTBEAT, 0, F_LAST, 0.0, 0.0)
            self.stats.events += 1
            out = self._head[1]
        elif channel in _OTHER_CHANNELS:
            out = self._head[0]
        else:
            return self._bad("unknown_type", message, channel)
        if info.kind != M_MALFORMED:  # counted in the connection sequence
            info.seq = info.first_id = info.last_id = msg.sequence_num
        return out

    def _time(self, msg: _Message, message: bytes) -> int:
        """The message time in ns (0 when absent); -1 after counting a bad one."""
        ts = iso_ns(msg.timestamp)
        if ts < 0:
            self._bad("schema", message, f"timestamp {msg.timestamp[:40]!r}")
        return ts

    def _l2(self, msg: _Message, recv_ns: int, message: bytes) -> np.ndarray:
        info = self.last
        events = msg.events
        total = 0
        for ev in events:
            if ev.type not in ("snapshot", "update") or not ev.product_id:
                return self._bad("unknown_type" if ev.product_id else "schema", message)
            for u in ev.updates:
                if not 0.0 < u.price_level < INF:
                    return self._bad("bad_price", message)
                if not 0.0 <= u.new_quantity < INF:
                    return self._bad("bad_qty", message)
                if u.side not in _SIDES:
                    return self._bad("schema", message, f"side {u.side!r}")
            total += len(ev.updates) + (2 if ev.type == "snapshot" else 0)
        ts = self._time(msg, message)
        if ts < 0:
            return self._head[0]
        self._reserve(total)
        seq = self.stats.messages
        vseq = msg.sequence_num
        buf = self._buf
        i = 0
        for ev in events:
            sid = self.symbol_id(ev.product_id)
            snap = ev.type == "snapshot"
            flags = F_SNAPSHOT if snap else 0
            if snap:
                pack_into(buf, i << 6, ts, recv_ns, 0, seq, vseq, sid, K_SNAP_BEGIN, 0, F_SNAPSHOT,
                          0.0, 0.0)
                i += 1
            for u in ev.updates:
                kind = _SIDES[u.side]
                pack_into(buf, i << 6, ts, recv_ns, 0, seq, vseq, sid, kind,
                          S_BUY if kind == K_BID else S_SELL, flags, u.price_level, u.new_quantity)
                i += 1
            if snap:
                pack_into(buf, i << 6, ts, recv_ns, 0, seq, vseq, sid, K_SNAP_END, 0, F_SNAPSHOT,
                          0.0, 0.0)
                i += 1
            info.kind = M_SNAPSHOT if snap else M_DELTA
            info.symbol_id = sid
        info.ts_event_ns = ts
        return self._finish(i)

    def _trades(self, msg: _Message, recv_ns: int, message: bytes) -> np.ndarray:
        trades = [t for ev in msg.events for t in ev.trades]
        for t in trades:
            if not 0.0 < t.price < INF:
                return self._bad("bad_price", message)
            if not 0.0 <= t.size < INF:
                return self._bad("bad_qty", message)
        ts = self._time(msg, message)
        if ts < 0 or not trades:
            return self._head[0]
        self._reserve(len(trades))
        seq = self.stats.messages
        for i, t in enumerate(trades):
            aggressor = S_SELL if t.side == "BUY" else S_BUY  # `side` is the maker's side
            pack_into(self._buf, i << 6, ts, recv_ns, 0, seq, _digits(t.trade_id),
                      self.symbol_id(t.product_id), K_TRADE, aggressor, 0, t.price, t.size)
        info = self.last
        info.kind = M_TRADE
        info.symbol_id = self.symbol_id(trades[-1].product_id)
        info.ts_event_ns = ts
        return self._finish(len(trades))

    def _tickers(self, msg: _Message, recv_ns: int, message: bytes) -> np.ndarray:
        ticks = [t for ev in msg.events for t in ev.tickers
                 if t.best_bid is not None and t.best_ask is not None]
        for t in ticks:
            if not (0.0 < t.best_bid < INF and 0.0 < t.best_ask < INF):
                return self._bad("bad_price", message)
            if not (0.0 <= (t.best_bid_quantity or 0.0) < INF
                    and 0.0 <= (t.best_ask_quantity or 0.0) < INF):
                return self._bad("bad_qty", message)
        ts = self._time(msg, message)
        if ts < 0 or not ticks:
            return self._head[0]
        self._reserve(2 * len(ticks))
        seq = self.stats.messages
        vseq = msg.sequence_num
        for i, t in enumerate(ticks):
            sid = self.symbol_id(t.product_id)
            pack_into(self._buf, (2 * i) << 6, ts, recv_ns, 0, seq, vseq, sid,
                      K_BBO, S_BUY, 0, t.best_bid, t.best_bid_quantity or 0.0)
            pack_into(self._buf, (2 * i + 1) << 6, ts, recv_ns, 0, seq, vseq, sid,
                      K_BBO, S_SELL, 0, t.best_ask, t.best_ask_quantity or 0.0)
        info = self.last
        info.kind = M_BBO
        info.symbol_id = self.symbol_id(ticks[-1].product_id)
        info.ts_event_ns = ts
        return self._finish(2 * len(ticks))


def subscribe(symbols: Sequence[str], channels: tuple[str, ...] | None = None) -> list[bytes]:
    """One `{"type":"subscribe","product_ids":[..],"channel":C}` frame per channel
    (Advanced Trade "Subscribe"; one channel per message). channels default to level2,
    market_trades, ticker and heartbeats (heartbeats keeps quiet connections alive)."""
    products = [s.upper() for s in symbols]
    out = []
    for channel in channels or DEFAULT_CHANNELS:
        frame: dict = {"type": "subscribe", "channel": channel}
        if channel != "heartbeats":
            frame["product_ids"] = products
        out.append(msgspec.json.encode(frame))
    return out


# ---- SimExchange dialect --------------------------------------------------------------------
# subscribe channel -> the `channel` of its messages
_MESSAGE_CHANNELS = {"level2": "l2_data", "market_trades": "market_trades", "ticker": "ticker",
                     "ticker_batch": "ticker_batch", "heartbeats": "heartbeats",
                     "candles": "candles", "status": "status"}
_SEQUENCE_NUM = re.compile(rb'"sequence_num":\d+')


class CoinbaseDialect(Dialect):
    """SimExchange speaking Coinbase Advanced Trade (see the module docstring). Keys are
    `channel|product_id`."""

    family = "coinbase"
    bad_request = b'{"type":"error","message":"invalid request"}'

    def subscription_key(self, name: str) -> bytes:
        channel, _, product = name.partition("|")
        return _MESSAGE_CHANNELS.get(channel, channel).encode() + b"|" + product.encode()

    def message_key(self, message: bytes) -> bytes:
        channel = string_after(message[:64], b'"channel":"')
        return channel + b"|" + string_after(message, b'"product_id":"') if channel else b""

    def is_delta(self, message: bytes) -> bool:
        return b'"l2_data"' in message[:160] and b'"type":"update"' in message[:400]

    def answer(self, request: dict[str, Any], session: SimSession) -> list[bytes]:
        kind, channel = request["type"], request["channel"]
        names = [f"{channel}|{p}" for p in request.get("product_ids") or [""]]
        if kind == "subscribe":
            session.add(names)
        elif kind == "unsubscribe":
            session.remove(names)
        else:
            raise FeedError(f"unknown request type {kind!r}")
        subs: dict[str, list[str]] = {}
        for name in session.sub_names:
            ch, _, product = name.partition("|")
            subs.setdefault(ch, []).append(product)
        session.seq += 1
        return [orjson.dumps({"channel": "subscriptions", "client_id": "",
                              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "sequence_num": session.seq - 1,
                              "events": [{"subscriptions": subs}]})]

    def framer(self, session: SimSession) -> Callable[[bytes], bytes] | None:
        def renumber(message: bytes) -> bytes:
            out = _SEQUENCE_NUM.sub(b'"sequence_num":%d' % session.seq, message, count=1)
            session.seq += 1
            return out

        return renumber


COINBASE = Venue("coinbase", CoinbaseNormalizer, subscribe, COINBASE_SEQUENCING,
                 dialect=CoinbaseDialect(), ws_url="wss://advanced-trade-ws.coinbase.com")
RECORDS = (COINBASE,)
