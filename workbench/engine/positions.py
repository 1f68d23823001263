"""Positions: quantity, average price, realized and unrealized PnL per symbol.

Formulas (average-cost method, prices and quantities in quote/base units, fees in quote):
- A fill of signed quantity q (buy > 0, sell < 0) at price p on a position Q with average
  price A:
  - opening or adding (Q == 0 or sign(q) == sign(Q)): A' = (A*|Q| + p*|q|) / (|Q| + |q|),
    Q' = Q + q.
  - reducing (opposite signs): the closed quantity c = min(|q|, |Q|) realizes
    c * (p - A) * sign(Q); Q' = Q + q. A is unchanged while the position stays on the same
    side, becomes p for what remains after a flip (|q| > |Q|), and 0 when flat.
- realized_pnl sums those realizations (before fees); fees sums the fees paid (a maker
  rebate is a negative fee).
- unrealized_pnl = Q * (mark - A), with mark the book mid (NaN mark: 0).
- net_pnl = realized_pnl + unrealized_pnl - fees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Position:
    """One symbol's position: qty (signed, base units), avg_price, realized_pnl, fees, mark."""

    symbol_id: int
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    mark: float = math.nan
    fills: int = 0

    @property
    def unrealized_pnl(self) -> float:
        """qty * (mark - avg_price); 0 when flat or the mark is unknown."""
        if self.qty == 0.0 or math.isnan(self.mark):
            return 0.0
        return self.qty * (self.mark - self.avg_price)

    @property
    def net_pnl(self) -> float:
        """realized + unrealized - fees (quote units)."""
        return self.realized_pnl + self.unrealized_pnl - self.fees

    def apply(self, signed_qty: float, price: float, fee: float = 0.0) -> float:
        """Book a fill (signed_qty > 0 buys). Returns the PnL it realized (before fees)."""
        q, pos = signed_qty, self.qty
        realized = 0.0
        if pos == 0.0 or (q > 0) == (pos > 0):
            new = pos + q
            self.avg_price = (self.avg_price * abs(pos) + price * abs(q)) / abs(new)
            self.qty = new
        else:
            closed = min(abs(q), abs(pos))
            realized = closed * (price - self.avg_price) * (1.0 if pos > 0 else -1.0)
            new = pos + q
            if abs(new) < 1e-12:
                new = 0.0
                self.avg_price = 0.0
            elif (new > 0) != (pos > 0):
                self.avg_price = price
            self.qty = new
        self.realized_pnl += realized
        self.fees += fee
        self.fills += 1
        return realized


class Positions:
    """Positions by symbol_id (created on first use)."""

    def __init__(self) -> None:
        self._by_symbol: dict[int, Position] = {}

    def get(self, symbol_id: int) -> Position:
        """The Position of `symbol_id` (a flat one if new)."""
        pos = self._by_symbol.get(symbol_id)
        if pos is None:
            pos = self._by_symbol[symbol_id] = Position(symbol_id)
        return pos

    def qty(self, symbol_id: int) -> float:
        """Signed quantity held (0.0 if none)."""
        pos = self._by_symbol.get(symbol_id)
        return pos.qty if pos is not None else 0.0

    def apply_fill(self, symbol_id: int, signed_qty: float, price: float, fee: float) -> float:
        """Book a fill on `symbol_id`; returns the realized PnL of that fill (before fees)."""
        return self.get(symbol_id).apply(signed_qty, price, fee)

    def mark(self, symbol_id: int, price: float) -> None:
        """Set the mark price (mid) used for unrealized PnL."""
        self.get(symbol_id).mark = price

    def all(self) -> list[Position]:
        """Every position, by symbol_id."""
        return [self._by_symbol[k] for k in sorted(self._by_symbol)]

    def totals(self) -> dict[str, float]:
        """Sum over symbols: realized_pnl, unrealized_pnl, fees, net_pnl."""
        out = {"realized_pnl": 0.0, "unrealized_pnl": 0.0, "fees": 0.0, "net_pnl": 0.0}
        for p in self._by_symbol.values():
            out["realized_pnl"] += p.realized_pnl
            out["unrealized_pnl"] += p.unrealized_pnl
            out["fees"] += p.fees
            out["net_pnl"] += p.net_pnl
        return out
