"""L3 (market-by-order) book with FIFO price levels, holding the feed's orders and our own.

Each price level is a FIFO of (key, qty) (an insertion-ordered dict): feed orders are keyed by
their positive exchange order id, our own orders by a negative key (-own_id). The L2 view
(`depth`, `best_bid`, `best_ask`, `mid`) aggregates feed orders only: it is the public book as
the recording shows it, our orders are not in it (as in hftbacktest, whose market depth never
holds backtest orders). Prices are float64 as sent (no tick grid: Bitfinex R0 prices such as
60940.35136398 are off any tick), quantities float64 base units.

Priority rules (price-time FIFO; hftbacktest, nkaz001/hftbacktest,
hftbacktest/src/backtest/models/queue.rs, `L3FIFOQueueModel`, semantics only):
- a new order (feed or own) joins the back of its level;
- a change of an order that lowers its quantity at the same price keeps its place (Bitfinex R0
  sends a partly filled order's remaining amount this way, and that order is at the front);
- a change that raises the quantity or moves the price loses priority: the order goes to the
  back of its (new) level (`modify_market_feed_order`: price change or leaves_qty < new qty);
- a removal takes the order out of its level.
The quantity ahead of an own order (`queue_ahead`) is exactly the sum of the feed orders'
quantities before it in its level's FIFO, so it shrinks exactly when one of those is removed or
reduced, and orders added later (behind it) never count.

Errors: KeyError for an unknown order id or own key, ValueError for a side other than +1/-1.
"""

from __future__ import annotations

import math

BID, ASK = 1, -1


def _index(side: int) -> int:
    if side == BID:
        return 0
    if side == ASK:
        return 1
    raise ValueError(f"side must be +1 (bid) or -1 (ask), got {side}")


class L3Book:
    """FIFO price levels of feed and own orders (module docstring)."""

    def __init__(self) -> None:
        self._levels: tuple[dict[float, dict[int, float]], ...] = ({}, {})
        self._feed_count: tuple[dict[float, int], ...] = ({}, {})
        self._orders: dict[int, tuple[int, float, float]] = {}  # key -> (side, price, qty)

    # feed orders -------------------------------------------------------------------------
    def add(self, order_id: int, side: int, price: float, qty: float) -> None:
        """A new feed order at the back of its level. ValueError if the id is live."""
        if order_id in self._orders:
            raise ValueError(f"order {order_id} is already in the book")
        self._insert(order_id, side, price, qty)

    def modify(self, order_id: int, side: int, price: float, qty: float) -> None:
        """A feed order's new side, price and quantity (priority rules in the module docstring;
        a side change, never seen on Bitfinex, is a move to the back of the other side)."""
        old_side, old_price, old_qty = self._orders[order_id]
        if side == old_side and price == old_price and qty <= old_qty:
            self._levels[_index(side)][price][order_id] = qty
            self._orders[order_id] = (side, price, qty)
        else:
            self._remove(order_id)
            self._insert(order_id, side, price, qty)

    def delete(self, order_id: int) -> None:
        """Remove a feed order."""
        self._remove(order_id)

    def clear_feed(self) -> None:
        """Remove every feed order (own orders stay)."""
        for key in [k for k in self._orders if k > 0]:
            self._remove(key)

    # own orders --------------------------------------------------------------------------
    def add_own(self, own_id: int, side: int, price: float, qty: float) -> float:
        """Our order (own_id > 0) at the back of its level; returns the quantity ahead of it."""
        self._insert(-own_id, side, price, qty)
        return self.queue_ahead(own_id)

    def remove_own(self, own_id: int) -> None:
        self._remove(-own_id)

    def own_ids(self) -> list[int]:
        return [-k for k in self._orders if k < 0]

    def own(self, own_id: int) -> tuple[int, float, float]:
        """(side, price, qty) of our order."""
        return self._orders[-own_id]

    def queue_ahead(self, own_id: int) -> float:
        """Sum of the feed orders' quantities ahead of our order in its level's FIFO."""
        side, price, _ = self._orders[-own_id]
        ahead = []
        for key, qty in self._levels[_index(side)][price].items():
            if key == -own_id:
                return math.fsum(ahead)
            if key > 0:
                ahead.append(qty)
        raise KeyError(own_id)

    def own_ahead_of(self, order_id: int) -> list[int]:
        """Our orders ahead of feed order `order_id` in its level, provided no feed order is
        ahead of it (a trade at that level could have reached it); else []."""
        side, price, _ = self._orders[order_id]
        ours = []
        for key in self._levels[_index(side)][price]:
            if key == order_id:
                return ours
            if key > 0:
                return []
            ours.append(-key)
        return ours

    # L2 view (feed orders only) ----------------------------------------------------------
    def order(self, order_id: int) -> tuple[int, float, float]:
        """(side, price, qty) of a live feed order; KeyError if not live."""
        if order_id <= 0:
            raise KeyError(order_id)
        return self._orders[order_id]

    def __contains__(self, order_id: int) -> bool:
        return order_id > 0 and order_id in self._orders

    def best_bid(self) -> float:
        """Highest bid price holding a feed order (NaN when none)."""
        counts = self._feed_count[0]
        return max(counts) if counts else math.nan

    def best_ask(self) -> float:
        counts = self._feed_count[1]
        return min(counts) if counts else math.nan

    def mid(self) -> float:
        return (self.best_bid() + self.best_ask()) / 2.0

    def depth(self, side: int) -> list[tuple[float, float]]:
        """[(price, qty)] of the feed orders aggregated per level, best first."""
        i = _index(side)
        prices = sorted(self._feed_count[i], reverse=side == BID)
        return [(p, math.fsum(q for k, q in self._levels[i][p].items() if k > 0))
                for p in prices]

    def level_orders(self, side: int, price: float) -> list[tuple[int, float]]:
        """The FIFO at `price`, front first: (order_id, qty) for feed, (-own_id, qty) own."""
        return list(self._levels[_index(side)].get(price, {}).items())

    # internals ---------------------------------------------------------------------------
    def _insert(self, key: int, side: int, price: float, qty: float) -> None:
        i = _index(side)
        self._levels[i].setdefault(price, {})[key] = qty
        self._orders[key] = (side, price, qty)
        if key > 0:
            counts = self._feed_count[i]
            counts[price] = counts.get(price, 0) + 1

    def _remove(self, key: int) -> None:
        side, price, _ = self._orders.pop(key)
        i = _index(side)
        level = self._levels[i][price]
        del level[key]
        if not level:
            del self._levels[i][price]
        if key > 0:
            counts = self._feed_count[i]
            counts[price] -= 1
            if counts[price] == 0:
                del counts[price]
