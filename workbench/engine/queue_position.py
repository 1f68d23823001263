"""Queue position of the PaperBroker's resting limit orders: the tick backtester's risk-averse
model, applied to the rows of each batch.

The formulas are the tick backtester's own compiled functions (`workbench.engine.queue_models`:
`on_depth`, `on_trade`, `executable`, from hftbacktest's `RiskAdverseQueueModel`,
nkaz001/hftbacktest, hftbacktest/src/backtest/models/queue.rs), called here; the rules around
them are the tick kernel's partial-fill exchange (`workbench.backtest.tick.kernel._exch_row`
with `partial=1`), for one resting order at price P (a buy; a sell mirrors it):

- it joins the back of its level: front = the visible quantity at P on its own side when it
  starts resting (`L2Book.level_qty`, anywhere in the book), cum = 0;
- a bid row at P (a depth change of its level) to qty: front = min(front, qty);
- an ask row priced at or below P with a non-empty quantity (round(qty / lot) != 0): the ask
  side crossed it, it fills whole (maker, at P). In the kernel this is "the best ask fell to or
  below P"; while the buy rests P is below the best ask, so any such row lowers the best ask;
- a sell trade priced below P: it fills min(leaves, trade qty) at P;
- a sell trade at P of qty: front -= qty; once `executable(front, lot)` > 0, front = 0 and it
  fills min(leaves, executable) at P.

Prices are compared as equal within PRICE_RTOL (far below any tick): the engine's prices are
the venue's decimals, the kernel's are ticks.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.engine import queue_models as qm
from workbench.events import K_ASK, K_BID, K_TRADE, S_BUY

PRICE_RTOL = 1e-9


def same_price(a: float, b: float) -> bool:
    """Whether two prices are the same level (relative difference below PRICE_RTOL)."""
    return abs(a - b) <= PRICE_RTOL * abs(b)


class QueueState:
    """One resting order's queue: front (qty ahead of it, base units), cum (traded at its
    price since the last depth change there)."""

    __slots__ = ("cum", "front")

    def __init__(self, front: float) -> None:
        self.front = float(front)
        self.cum = 0.0


def row_fill(state: QueueState, buy: bool, price: float, leaves: float, kind: int, side: int,
             row_price: float, row_qty: float, lot: float) -> float:
    """Apply one batch row (kind, aggressor side, price, qty: EVENT_DTYPE fields) to a resting
    order's queue `state` (buy or sell at `price`, `leaves` left, lot > 0); returns the
    quantity it fills at this row (0.0: none), per the module docstring's rules."""
    if kind in (K_BID, K_ASK):
        own = (kind == K_BID) == buy
        if own:
            if same_price(row_price, price):
                state.front, state.cum = qm.on_depth(int(qm.QueueModel.RISK_AVERSE), 0.0,
                                                     state.front, state.cum, math.nan, row_qty)
            return 0.0
        crossed = row_price <= price if buy else row_price >= price
        if (crossed or same_price(row_price, price)) and np.round(row_qty / lot) != 0:
            return leaves
        return 0.0
    if kind != K_TRADE or (side == S_BUY) == buy:  # a buy trade fills resting sells only
        return 0.0
    if same_price(row_price, price):
        state.front, state.cum = qm.on_trade(state.front, state.cum, row_qty)
        ex = qm.executable(state.front, lot)
        if ex > 0.0:
            state.front = 0.0
            return min(leaves, ex)
        return 0.0
    through = row_price < price if buy else row_price > price
    return min(leaves, row_qty) if through else 0.0
