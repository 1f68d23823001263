"""Tardis.dev CSV rows -> events, through the JSON message form `workbench.feed.replay` makes.

Forms (see replay.py): `{"tardis":"book","exchange","symbol","timestamp","local_timestamp",
"is_snapshot","bids":[[price,amount],..],"asks":[..]}`, `{"tardis":"trade",..,"side","price",
"amount","id"}` and `{"tardis":"quote",..,"bid_price","bid_amount","ask_price","ask_amount"}`.
Tardis CSV semantics (Tardis.dev docs, "Downloadable CSV files"): incremental_book_L2 rows
carry the new amount at a price level (0 deletes it) and `is_snapshot` rows a full book that
replaces the local one; the trades `side` is the liquidity taker's side ('unknown' -> NONE).
`timestamp` (exchange) and `local_timestamp` are µs since epoch; `ts_event_ns` is timestamp
x 1000. Symbols are registered as `<exchange>:<symbol>` (venue 'tardis') since one CSV
collection spans exchanges. A msgspec tagged union (tag `tardis`) decodes the forms strictly:
numbers must be JSON numbers, times positive µs.

Record (`RECORDS`): TARDIS ('tardis'): replayed, never subscribed to or served by SimExchange;
the rows carry no update ids, so its books are UNSEQUENCED.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np

from workbench.book.sequencing import UNSEQUENCED
from workbench.events import (
    F_SNAPSHOT,
    K_ASK,
    K_BBO,
    K_BID,
    K_SNAP_BEGIN,
    K_SNAP_END,
    K_TRADE,
    M_BBO,
    M_DELTA,
    M_SNAPSHOT,
    M_TRADE,
    S_BUY,
    S_SELL,
)
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues.base import DEFAULT_CAPACITY, INT64_MAX, Normalizer, begin_message
from workbench.feed.venues.record import Venue

# Tardis times: µs since the epoch, > 0 and within int64 ns
Micros = Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX // 1000)]
Level = tuple[float, float]


class _Row(msgspec.Struct, tag_field="tardis", gc=False):
    exchange: str
    symbol: str
    timestamp: Micros
    local_timestamp: Micros


class _Book(_Row, tag="book"):
    is_snapshot: bool
    bids: list[Level]
    asks: list[Level]


class _Trade(_Row, tag="trade"):
    side: str
    price: float
    amount: float
    id: str = ""


class _Quote(_Row, tag="quote"):
    bid_price: float | None = None
    bid_amount: float | None = None
    ask_price: float | None = None
    ask_amount: float | None = None


class _Kind(msgspec.Struct):
    tardis: str = ""


# strict: numbers must be JSON numbers (no strings, no booleans); msgspec refuses non-finite
_ROW = msgspec.json.Decoder(_Book | _Trade | _Quote)
_KIND = msgspec.json.Decoder(_Kind)
_SIDES = {"buy": S_BUY, "sell": S_SELL, "unknown": 0}
_KINDS = ("book", "trade", "quote")


def _bad_level(levels: list[Level]) -> str:
    """'' if every (price, qty) is valid (price > 0, qty >= 0), else the malformed kind."""
    for price, qty in levels:
        if not price > 0.0:
            return "bad_price"
        if not qty >= 0.0:
            return "bad_qty"
    return ""


class TardisNormalizer(Normalizer):
    """Tardis CSV-derived messages -> events (venue 'tardis'). Every key of the forms is
    required except a trade's id and a quote's prices and amounts; times > 0 (`Micros`)."""

    venue = "tardis"

    def __init__(self, registry: SymbolRegistry = SYMBOLS, capacity: int = DEFAULT_CAPACITY):
        super().__init__(registry, capacity)

    def _normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        try:
            row = _ROW.decode(message)
        except msgspec.ValidationError:
            kind = _KIND.decode(message).tardis
            if kind in _KINDS:
                raise
            begin_message(self, kind or "?")
            return self._bad("unknown_type", message, kind)
        info = begin_message(self, type(row).__struct_config__.tag)
        sid = self.symbol_id(f"{row.exchange}:{row.symbol}")
        ts = row.timestamp * 1000
        info.symbol_id = sid
        info.ts_event_ns = ts
        if isinstance(row, _Book):
            return self._book(row, sid, ts, recv_ns, message)
        if isinstance(row, _Trade):
            return self._trade(row, sid, ts, recv_ns, message)
        return self._quote(row, sid, ts, recv_ns, message)

    def _book(self, row: _Book, sid: int, ts: int, recv_ns: int, message: bytes
              ) -> np.ndarray:
        problem = _bad_level(row.bids) or _bad_level(row.asks)
        if problem:
            return self._bad(problem, message)
        snap = row.is_snapshot
        self._reserve(len(row.bids) + len(row.asks) + 2)
        i = 0
        flags = F_SNAPSHOT if snap else 0
        if snap:
            self._put(0, ts, recv_ns, 0, sid, K_SNAP_BEGIN, 0, F_SNAPSHOT, 0.0, 0.0)
            i = 1
        for levels, kind, side in ((row.bids, K_BID, S_BUY), (row.asks, K_ASK, S_SELL)):
            for price, qty in levels:
                self._put(i, ts, recv_ns, 0, sid, kind, side, flags, price, qty)
                i += 1
        if snap:
            self._put(i, ts, recv_ns, 0, sid, K_SNAP_END, 0, F_SNAPSHOT, 0.0, 0.0)
            i += 1
        self.last.kind = M_SNAPSHOT if snap else M_DELTA
        return self._finish(i)

    def _trade(self, row: _Trade, sid: int, ts: int, recv_ns: int, message: bytes
               ) -> np.ndarray:
        problem = _bad_level([(row.price, row.amount)])
        if problem:
            return self._bad(problem, message)
        trade_id = int(row.id) if row.id.isascii() and row.id.isdigit() else 0
        if trade_id >= 2**64:
            trade_id = 0
        self._put(0, ts, recv_ns, trade_id, sid, K_TRADE, _SIDES.get(row.side, 0), 0,
                  row.price, row.amount)
        self.last.kind = M_TRADE
        return self._finish(1)

    def _quote(self, row: _Quote, sid: int, ts: int, recv_ns: int, message: bytes
               ) -> np.ndarray:
        bid, bid_qty, ask, ask_qty = row.bid_price, row.bid_amount, row.ask_price, row.ask_amount
        if bid is None or bid_qty is None or ask is None or ask_qty is None:
            return self._head[0]  # a side missing: nothing to quote
        problem = _bad_level([(bid, bid_qty), (ask, ask_qty)])
        if problem:
            return self._bad(problem, message)
        self._put(0, ts, recv_ns, 0, sid, K_BBO, S_BUY, 0, bid, bid_qty)
        self._put(1, ts, recv_ns, 0, sid, K_BBO, S_SELL, 0, ask, ask_qty)
        self.last.kind = M_BBO
        return self._finish(2)


def subscribe(symbols: Sequence[str], channels: tuple[str, ...] | None = None) -> list[bytes]:
    """Tardis CSV files are replayed, not subscribed to: always []."""
    return []


TARDIS = Venue("tardis", TardisNormalizer, subscribe, UNSEQUENCED)
RECORDS = (TARDIS,)
