"""Tardis.dev CSV rows -> events, through the JSON message form `workbench.feed.replay` makes.

Forms (see replay.py): `{"tardis":"book","exchange","symbol","timestamp","local_timestamp",
"is_snapshot","bids":[[price,amount],..],"asks":[..]}`, `{"tardis":"trade",..,"side","price",
"amount","id"}` and `{"tardis":"quote",..,"bid_price","bid_amount","ask_price","ask_amount"}`.
Tardis CSV semantics (Tardis.dev docs, "Downloadable CSV files"): incremental_book_L2 rows
carry the new amount at a price level (0 deletes it) and `is_snapshot` rows a full book that
replaces the local one; the trades `side` is the liquidity taker's side ('unknown' -> NONE).
`timestamp` (exchange) and `local_timestamp` are µs since epoch; `ts_event_ns` is timestamp
x 1000. Symbols are registered as `<exchange>:<symbol>` (venue 'tardis') since one CSV
collection spans exchanges. Volumes are small (samples), so plain orjson does the parsing.

Record (`RECORDS`): TARDIS ('tardis'): replayed, never subscribed to or served by SimExchange;
the rows carry no update ids, so its books are UNSEQUENCED.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

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
from workbench.feed.venues.base import (
    DEFAULT_CAPACITY,
    PARSE_ERRORS,
    Normalizer,
    begin_message,
)
from workbench.feed.venues.record import Venue

_SIDES = {"buy": S_BUY, "sell": S_SELL, "unknown": 0}


class TardisNormalizer(Normalizer):
    """Tardis CSV-derived messages -> events (venue 'tardis')."""

    venue = "tardis"

    def __init__(self, registry: SymbolRegistry = SYMBOLS, capacity: int = DEFAULT_CAPACITY):
        super().__init__(registry, capacity)

    def normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        try:
            msg = orjson.loads(message)
            kind = msg["tardis"]
            sid = self.symbol_id(f"{msg['exchange']}:{msg['symbol']}")
            ts = int(msg["timestamp"]) * 1000
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            begin_message(self, "?")
            return self._bad("json" if isinstance(exc, orjson.JSONDecodeError) else "schema",
                             message, repr(exc))
        info = begin_message(self, kind)
        info.symbol_id = sid
        info.ts_event_ns = ts
        try:
            if kind == "book":
                return self._book(msg, sid, ts, recv_ns, message)
            if kind == "trade":
                return self._trade(msg, sid, ts, recv_ns, message)
            if kind == "quote":
                return self._quote(msg, sid, ts, recv_ns, message)
        except PARSE_ERRORS as exc:
            return self._bad("schema", message, repr(exc))
        return self._bad("unknown_type", message, str(kind))

    def _book(self, msg: dict, sid: int, ts: int, recv_ns: int, message: bytes) -> np.ndarray:
        levels = np.array(msg["bids"] + msg["asks"], dtype=np.float64).reshape(-1, 2)
        problem = self.levels_ok(levels)
        if problem:
            return self._bad(problem, message)
        snap = bool(msg["is_snapshot"])
        n_bids = len(msg["bids"])
        self._reserve(len(levels) + 2)
        i = 0
        flags = F_SNAPSHOT if snap else 0
        if snap:
            self._put(0, ts, recv_ns, 0, sid, K_SNAP_BEGIN, 0, F_SNAPSHOT, 0.0, 0.0)
            i = 1
        for j, (price, qty) in enumerate(levels):
            bid = j < n_bids
            self._put(i, ts, recv_ns, 0, sid, K_BID if bid else K_ASK, S_BUY if bid else S_SELL,
                      flags, float(price), float(qty))
            i += 1
        if snap:
            self._put(i, ts, recv_ns, 0, sid, K_SNAP_END, 0, F_SNAPSHOT, 0.0, 0.0)
            i += 1
        self.last.kind = M_SNAPSHOT if snap else M_DELTA
        return self._finish(i)

    def _trade(self, msg: dict, sid: int, ts: int, recv_ns: int, message: bytes) -> np.ndarray:
        price, qty = float(msg["price"]), float(msg["amount"])
        if not 0.0 < price < float("inf"):
            return self._bad("bad_price", message)
        if not 0.0 <= qty < float("inf"):
            return self._bad("bad_qty", message)
        trade_id = int(msg["id"]) if str(msg.get("id", "")).isdigit() else 0
        self._put(0, ts, recv_ns, trade_id, sid, K_TRADE, _SIDES.get(msg["side"], 0), 0, price,
                  qty)
        self.last.kind = M_TRADE
        return self._finish(1)

    def _quote(self, msg: dict, sid: int, ts: int, recv_ns: int, message: bytes) -> np.ndarray:
        values = [msg.get(k) for k in ("bid_price", "bid_amount", "ask_price", "ask_amount")]
        if any(v is None or v == "" for v in values):
            return self._head[0]  # a side missing: nothing to quote
        levels = np.array(values, dtype=np.float64).reshape(2, 2)
        problem = self.levels_ok(levels)
        if problem:
            return self._bad(problem, message)
        self._put(0, ts, recv_ns, 0, sid, K_BBO, S_BUY, 0, levels[0, 0], levels[0, 1])
        self._put(1, ts, recv_ns, 0, sid, K_BBO, S_SELL, 0, levels[1, 0], levels[1, 1])
        self.last.kind = M_BBO
        return self._finish(2)


def subscribe(symbols: Sequence[str], channels: tuple[str, ...] | None = None) -> list[bytes]:
    """Tardis CSV files are replayed, not subscribed to: always []."""
    return []


TARDIS = Venue("tardis", TardisNormalizer, subscribe, UNSEQUENCED)
RECORDS = (TARDIS,)
