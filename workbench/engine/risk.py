"""RiskLimits: pre-trade checks and the conditions that halt trading.

- max_position: an order is rejected if filling it entirely could take |position + open
  exposure| above max_position (orders that reduce the position always pass).
- max_orders_per_s: at most that many orders in any 1 s window of market time (sliding);
  reducing orders are never throttled.
- invalid_book_streak: that many consecutive batches with an invalid book (NaN mid, crossed,
  or out of sync) halt trading.
- kill switch: `kill(reason)` halts at once. A halted engine only sends reducing orders
  (flatten).
"""

from __future__ import annotations

from collections import deque

from workbench.engine.strategy import OrderRequest
from workbench.events import Side

SECOND_NS = 1_000_000_000


class RiskLimits:
    """Pre-trade risk. `check(request, position_qty, pending_qty, now_ns)` -> None if the order
    may go, else the reason (str). Halting is sticky until `reset()`."""

    def __init__(self, max_position: float, max_orders_per_s: float,
                 invalid_book_streak: int = 100) -> None:
        self.max_position = max_position
        self.max_orders_per_s = max_orders_per_s
        self.invalid_book_streak = invalid_book_streak
        self._sent: deque[int] = deque()
        self.bad_books = 0  # consecutive invalid books so far
        self.halted = False
        self.halt_reason = ""
        self.rejects: dict[str, int] = {}

    def check(self, request: OrderRequest, position_qty: float, pending_qty: float,
              now_ns: int) -> str | None:
        """Whether `request` may go. pending_qty: signed quantity of orders not yet filled."""
        signed = request.qty if request.side == Side.BUY else -request.qty
        exposure = position_qty + pending_qty
        after = abs(exposure + signed)
        reducing = after < abs(exposure) - 1e-12
        reason = None
        if self.halted and not reducing:
            reason = "halted"
        elif after > self.max_position + 1e-12 and after > abs(exposure):
            reason = "max_position"
        elif not reducing:
            sent = self._sent
            while sent and sent[0] <= now_ns - SECOND_NS:
                sent.popleft()
            if len(sent) >= self.max_orders_per_s:
                reason = "max_orders_per_s"
        if reason is not None:
            self.rejects[reason] = self.rejects.get(reason, 0) + 1
            return reason
        self._sent.append(now_ns)
        return None

    def on_book(self, valid: bool) -> bool:
        """Count a batch's book state; returns True when this batch started a halt."""
        if valid:
            self.bad_books = 0
            return False
        self.bad_books += 1
        if self.bad_books >= self.invalid_book_streak and not self.halted:
            self.kill(f"{self.bad_books} consecutive invalid books")
            return True
        return False

    def kill(self, reason: str = "kill switch") -> None:
        """Halt trading now (only reducing orders pass afterwards)."""
        self.halted = True
        self.halt_reason = reason

    def reset(self) -> None:
        """Lift a halt."""
        self.halted = False
        self.halt_reason = ""
        self.bad_books = 0
