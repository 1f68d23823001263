"""Queue-position models for resting limit orders (compiled; called by the tick kernel).

Every model keeps, per order, `front`: the quantity estimated ahead of it at its price, set to
the level's visible quantity when the order reaches the exchange (it joins the back), and
`cum`: the traded quantity at its price since the last depth change there. The order fills
once the quantity traded through it exceeds half a lot: exec = round(-front / lot_size) > 0.

Models (`QueueModel` values; formulas from hftbacktest, nkaz001/hftbacktest,
hftbacktest/src/backtest/models/queue.rs, `RiskAdverseQueueModel` and `ProbQueueModel` with
its `Probability` functions; docs "Queue Models"; after Rigtorp, "Estimating order queue
position", 2013, and quant.stackexchange question 3782):

- RISK_AVERSE: a trade of q at our price: front -= q; a depth change at our price to new_qty:
  front = min(front, new_qty) (our queue only shrinks when the level drops below it).
- probabilistic (POWER, LOG, POWER2, LOG2, POWER3): a trade as above (and cum += q); a depth
  change prev_qty -> new_qty: chg = prev_qty - new_qty - cum (cum reset to 0: the trades
  already moved us); chg < 0 (an increase): front = min(front, new_qty); else, with
  back = prev_qty - front and p = f(front, back) the probability that the decrease is behind us,
      front = min(front - (1 - p) chg + min(back - p chg, 0), new_qty)
  p: POWER f(back)/(f(back)+f(front)) with f(x)=x**n; LOG the same with f(x)=log(1+x); POWER2
  f(back)/f(back+front) (x**n); LOG2 f(back)/f(back+front) (log(1+x)); POWER3
  1 - f(front/(front+back)) (x**n). An infinite p counts as 1; an undefined one (0/0: nothing
  ahead nor behind) leaves front = new_qty (hftbacktest computes NaN there and Rust's
  `f64::min(NaN, new_qty)` is new_qty).
"""

from __future__ import annotations

from enum import IntEnum

import numba as nb
import numpy as np


class QueueModel(IntEnum):
    """The queue models (module docstring)."""

    RISK_AVERSE = 0
    POWER = 1
    LOG = 2
    POWER2 = 3
    LOG2 = 4
    POWER3 = 5


@nb.njit(cache=True, inline="always")
def _ratio(a, b):  # pragma: no cover - compiled
    """a / b, NaN for 0 / 0 and +-inf for x / 0 (IEEE, whatever the caller's error model)."""
    if b == 0.0:
        return np.nan if a == 0.0 else np.inf * np.sign(a)
    return a / b


@nb.njit(cache=True, inline="always")
def prob(model, n, front, back):  # pragma: no cover - compiled
    """p = the probability that a decrease is behind the order (module docstring)."""
    if model == 1:
        fb = back ** n
        p = _ratio(fb, fb + front ** n)
    elif model == 2:
        fb = np.log1p(back)
        p = _ratio(fb, fb + np.log1p(front))
    elif model == 3:
        p = _ratio(back ** n, (back + front) ** n)
    elif model == 4:
        p = _ratio(np.log1p(back), np.log1p(back + front))
    else:
        p = 1.0 - _ratio(front, front + back) ** n
    if np.isinf(p):
        p = 1.0
    return p


@nb.njit(cache=True, inline="always")
def on_trade(front, cum, qty):  # pragma: no cover - compiled
    """A trade of `qty` at the order's price: (front, cum) after it (both models)."""
    return front - qty, cum + qty


@nb.njit(cache=True, inline="always")
def on_depth(model, n, front, cum, prev_qty, new_qty):  # pragma: no cover - compiled
    """The level at the order's price changed prev_qty -> new_qty: (front, cum) after it."""
    if model == 0:
        return min(front, new_qty), cum
    chg = prev_qty - new_qty - cum
    if chg < 0.0:
        return min(front, new_qty), 0.0
    back = prev_qty - front
    p = prob(model, n, front, back)
    est = front - (1.0 - p) * chg + min(back - p * chg, 0.0)
    if est != est:  # 0/0 (nothing ahead or behind): Rust's f64::min keeps the number
        return new_qty, 0.0
    return min(est, new_qty), 0.0


@nb.njit(cache=True, inline="always")
def executable(front, lot):  # pragma: no cover - compiled
    """Quantity traded through the order: round(-front / lot) lots (0 when none)."""
    k = np.round(-front / lot)
    return k * lot if k > 0 else 0.0
