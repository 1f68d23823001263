"""An independent reference book: plain dicts rebuilt from the raw JSON with json.loads.

It shares nothing with workbench.feed.venues or workbench.book: it reads each venue's messages
itself and applies the simplest correct rule for a gap-free recording (snapshot replaces,
deltas set absolute quantities, 0 deletes; Binance deltas buffered before the snapshot are kept
when they end at or after it, and any delta older than the snapshot is ignored).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RefBook:
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    synced: bool = False

    def set(self, side: str, price: float, qty: float) -> None:
        book = self.bids if side == "bid" else self.asks
        if qty == 0:
            book.pop(price, None)
        else:
            book[price] = qty

    def replace(self, bids: list, asks: list) -> None:
        self.bids = {}
        self.asks = {}
        for p, q in bids:
            self.set("bid", float(p), float(q))
        for p, q in asks:
            self.set("ask", float(p), float(q))
        self.synced = True

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = [(p, self.bids[p]) for p in heapq.nlargest(n, self.bids)]
        asks = [(p, self.asks[p]) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks

    def snapshot_lists(self) -> tuple[list[list[str]], list[list[str]]]:
        """The book as venue-style [[price, qty], ...] string lists, best first."""
        bids, asks = self.top(max(len(self.bids), len(self.asks)))
        return ([[repr(p), repr(q)] for p, q in bids], [[repr(p), repr(q)] for p, q in asks])


class RefFeed:
    """Reference books of one connection: feed(raw message) -> the symbol it changed."""

    def __init__(self, venue: str):
        self.venue = venue
        self.books: dict[str, RefBook] = {}
        self.pending: dict[str, list[tuple[int, dict]]] = {}
        self.snapshot_id: dict[str, int] = {}

    def book(self, symbol: str) -> RefBook:
        return self.books.setdefault(symbol, RefBook())

    def feed(self, message: bytes) -> str | None:
        if self.venue.startswith("binance"):
            return self._binance(message)
        msg = json.loads(message)
        if self.venue.startswith("bybit"):
            topic = str(msg.get("topic", ""))
            if not topic.startswith("orderbook."):
                return None
            data = msg["data"]
            book = self.book(data["s"])
            if msg["type"] == "snapshot" or data["u"] == 1:
                book.replace(data["b"], data["a"])
            elif book.synced:
                for side, key in (("bid", "b"), ("ask", "a")):
                    for p, q in data[key]:
                        book.set(side, float(p), float(q))
            return data["s"]
        if self.venue == "coinbase":
            if msg.get("channel") != "l2_data":
                return None
            for ev in msg["events"]:
                book = self.book(ev["product_id"])
                levels = [(u["side"], float(u["price_level"]), float(u["new_quantity"]))
                          for u in ev["updates"]]
                if ev["type"] == "snapshot":
                    book.replace([], [])
                for side, p, q in levels:
                    book.set("bid" if side == "bid" else "ask", p, q)
                return ev["product_id"]
        if self.venue == "tardis" and msg.get("tardis") == "book":
            book = self.book(f"{msg['exchange']}:{msg['symbol']}")
            if msg["is_snapshot"]:
                book.replace(msg["bids"], msg["asks"])
            else:
                for p, q in msg["bids"]:
                    book.set("bid", float(p), float(q))
                for p, q in msg["asks"]:
                    book.set("ask", float(p), float(q))
            return f"{msg['exchange']}:{msg['symbol']}"
        return None

    def _binance(self, message: bytes) -> str | None:
        head = message[:60]
        if b"depth" not in head and b"lastUpdateId" not in head:
            return None
        msg = json.loads(message)
        stream = msg.get("stream", "")
        data = msg.get("data", msg)
        if "lastUpdateId" in data:
            symbol = stream.split("@")[0].upper() if stream else next(iter(self.pending))
            book = self.book(symbol)
            book.replace(data["bids"], data["asks"])
            self.snapshot_id[symbol] = data["lastUpdateId"]
            for u, delta in self.pending.pop(symbol, []):
                if self._newer(u, symbol):
                    self._apply(book, delta)
            return symbol
        symbol = data["s"]
        book = self.book(symbol)
        if book.synced:
            if self._newer(data["u"], symbol):  # a delta can arrive after a newer snapshot
                self._apply(book, data)
        else:
            self.pending.setdefault(symbol, []).append((data["u"], data))
        return symbol

    def _newer(self, u: int, symbol: str) -> bool:
        """Not covered by the snapshot: u > lastUpdateId (spot), u >= it (futures)."""
        last = self.snapshot_id[symbol]
        return u > last or (self.venue != "binance" and u == last)

    @staticmethod
    def _apply(book: RefBook, data: dict) -> None:
        for p, q in data["b"]:
            book.set("bid", float(p), float(q))
        for p, q in data["a"]:
            book.set("ask", float(p), float(q))


def assert_same_top(book, ref: RefBook, n: int, where: object) -> None:
    """L2Book.depth(n) equals the reference top n, level by level, exactly."""
    bp, bq, ap, aq = book.depth(n)
    rb, ra = ref.top(n)
    got_b = list(zip(bp.tolist(), bq.tolist(), strict=True))
    got_a = list(zip(ap.tolist(), aq.tolist(), strict=True))
    assert got_b == rb, (where, "bids", got_b[:3], rb[:3])
    assert got_a == ra, (where, "asks", got_a[:3], ra[:3])


def assert_same_book(book, ref: RefBook, where: object) -> None:
    """Every level of both sides equals the reference, read in order (`depth`) and one at a
    time (`level_qty`: each reference level, and 0 on a side for the other side's prices)."""
    n = max(book.n_bids, book.n_asks, len(ref.bids), len(ref.asks))
    assert (book.n_bids, book.n_asks) == (len(ref.bids), len(ref.asks)), where
    assert_same_top(book, ref, n, where)
    assert not np.isnan(book.best_bid) or not ref.bids
    for bid, side, other in ((True, ref.bids, ref.asks), (False, ref.asks, ref.bids)):
        for price, qty in side.items():
            assert book.level_qty(bid, price) == qty, (where, bid, price)
        for price in other.keys() - side.keys():
            assert book.level_qty(bid, price) == 0.0, (where, bid, price)
