"""Strategy protocol, OrderRequest, and EmaCross (fast/slow EMA of mid, target position +-N).

A strategy sees every batch after the book has applied it: `on_events(book, batch)` returns
the orders it wants (usually none). It must be deterministic in what it is given: the same
batches give the same orders, whatever the dispatch mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workbench.errors import ConfigError
from workbench.events import Side


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a strategy asks for. side: Side.BUY or Side.SELL; qty > 0 (base units);
    order_type `market` or `limit`; price: limit price (NaN for market); post_only: reject
    instead of taking liquidity; tag: free text carried to the journal."""

    symbol_id: int
    side: Side
    qty: float
    order_type: str = "market"
    price: float = math.nan
    post_only: bool = False
    tag: str = ""


class Strategy(Protocol):
    """on_events(book, batch) -> orders. book: the symbol's L2Book, already updated with
    `batch` (a 1-D EVENT_DTYPE array of one message's events)."""

    def on_events(self, book, batch: np.ndarray) -> list[OrderRequest]: ...


class EmaCross:
    """Long `target_qty` while the fast EMA of mid is above the slow one, short below.

    EMA update per batch with a valid mid: ema += alpha * (mid - ema), alpha = 2 / (n + 1)
    (the usual N-period exponential moving average). Trading starts after `slow` updates;
    each change of sign sends the order that moves the intended position to the new target
    (first +-N, then +-2N). `order_type` limit orders are priced at the touch (bid for a buy,
    ask for a sell), post-only.
    """

    def __init__(self, fast: int = 20, slow: int = 100, target_qty: float = 0.01,
                 order_type: str = "market") -> None:
        if not 1 <= fast < slow:
            raise ConfigError(f"EmaCross: expected 1 <= fast < slow, got fast={fast} slow={slow}")
        self.alpha_fast = 2.0 / (fast + 1)
        self.alpha_slow = 2.0 / (slow + 1)
        self.slow = slow
        self.target_qty = target_qty
        self.order_type = order_type
        self._state: dict[int, list[float]] = {}  # symbol_id -> [fast, slow, updates, target]

    def on_events(self, book, batch: np.ndarray) -> list[OrderRequest]:
        mid = book.mid
        if mid != mid or len(batch) == 0:  # NaN mid: no signal
            return []
        sid = book.symbol_id
        state = self._state.get(sid)
        if state is None:
            self._state[sid] = [mid, mid, 1.0, 0.0]
            return []
        fast = state[0] + self.alpha_fast * (mid - state[0])
        slow = state[1] + self.alpha_slow * (mid - state[1])
        state[0], state[1] = fast, slow
        state[2] += 1.0
        if state[2] < self.slow or fast == slow:
            return []
        target = self.target_qty if fast > slow else -self.target_qty
        delta = target - state[3]
        if delta == 0.0:
            return []
        state[3] = target
        side = Side.BUY if delta > 0 else Side.SELL
        if self.order_type == "market":
            return [OrderRequest(sid, side, abs(delta), tag="ema_cross")]
        price = book.best_bid if side is Side.BUY else book.best_ask
        return [OrderRequest(sid, side, abs(delta), "limit", price, True, "ema_cross")]
