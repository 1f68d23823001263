"""L2Book: one symbol's price-level book, updated from event batches by a numba kernel.

Layout (the choice and its limits): each side is a sorted array of (key, qty) with the best
level at the END, key = price for bids and -price for asks, so both sides sort ascending and the
best level of either side is `keys[n-1]`: top of book is O(1). Updating a level is a binary
search (O(log n)) plus, when a level appears or disappears, a shift of the levels between it and
the top, which is short for the updates near the top that dominate real feeds (a deep insert
far from the top moves up to n entries: ~1 µs for 1,000 levels). Capacity starts at
`capacity` levels per side and doubles when full (no fixed depth limit; memory is 32 bytes per
level slot). Prices are compared exactly as float64: every venue sends decimal strings parsed
once to the same double, so a level's price is identical across messages.

Snapshots: SNAPSHOT_BEGIN clears both sides; level events until SNAPSHOT_END are appended and
sorted once at SNAPSHOT_END (O(n log n) instead of n inserts), zero quantities dropped and for a
repeated price the last one kept. Level events with qty 0 delete the level; deleting a level
that is not in the book is a no-op. BBO, TRADE and HEARTBEAT events, and events of other
symbols, are ignored. The kernel is compiled with `cache=True` and warmed on import.

Microprice (Stoikov, "The micro-price: a high-frequency estimator of future prices", 2018,
weighted mid-price): (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from workbench.errors import BookError
from workbench.events import EVENT_DTYPE, EventFlag, EventKind

_BID = int(EventKind.BID_LEVEL)
_ASK = int(EventKind.ASK_LEVEL)
_BEGIN = int(EventKind.SNAPSHOT_BEGIN)
_END = int(EventKind.SNAPSHOT_END)
_SNAP = int(EventFlag.SNAPSHOT)

# state slots (int64)
S_SYMBOL, S_NBID, S_NASK, S_IN_SNAPSHOT, S_UPDATES, S_SNAPSHOTS = range(6)
STATE_SIZE = 8
# rows of the levels array (float64, shape (4, capacity))
R_BID_KEY, R_BID_QTY, R_ASK_KEY, R_ASK_QTY = range(4)
MAX_CAPACITY = 1 << 22


@nb.njit(cache=True, nogil=True)
def _search(keys, n, key):
    """First index in keys[:n] (ascending) whose value is >= key."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, nogil=True)
def _finish_snapshot(levels, state):
    """Sort the appended snapshot levels of both sides; drop qty 0, keep the last of repeats."""
    for side in range(2):
        kr = 2 * side
        n = state[S_NBID + side]
        keys = levels[kr, :n].copy()
        qtys = levels[kr + 1, :n].copy()
        order = np.argsort(keys, kind="mergesort")
        m = 0
        for j in range(n):
            o = order[j]
            k = keys[o]
            q = qtys[o]
            if m > 0 and levels[kr, m - 1] == k:
                m -= 1  # a repeated price: the later one wins
            if q > 0.0:
                levels[kr, m] = k
                levels[kr + 1, m] = q
                m += 1
        state[S_NBID + side] = m


@nb.njit(cache=True, nogil=True)
def apply_events(events, levels, state, start):
    """Apply events[start:] of symbol state[S_SYMBOL] to the book arrays.

    Returns -1 when done, or the index of the event that did not fit (the caller grows the
    arrays and calls again from that index; that event was not applied).
    """
    sid = state[S_SYMBOL]
    cap = levels.shape[1]
    for i in range(start, events.shape[0]):
        ev = events[i]
        if ev.symbol_id != sid:
            continue
        kind = ev.kind
        if kind in (_BID, _ASK):
            side = 0 if kind == _BID else 1
            kr = 2 * side
            key = ev.price if side == 0 else -ev.price
            qty = ev.qty
            n = state[S_NBID + side]
            if state[S_IN_SNAPSHOT]:
                if n >= cap:
                    return i
                levels[kr, n] = key
                levels[kr + 1, n] = qty
                state[S_NBID + side] = n + 1
                continue
            state[S_UPDATES] += 1
            # fast path: the top level itself
            if n > 0 and levels[kr, n - 1] == key:
                if qty > 0.0:
                    levels[kr + 1, n - 1] = qty
                else:
                    state[S_NBID + side] = n - 1
                continue
            p = _search(levels[kr], n, key)
            if p < n and levels[kr, p] == key:
                if qty > 0.0:
                    levels[kr + 1, p] = qty
                else:
                    for j in range(p, n - 1):
                        levels[kr, j] = levels[kr, j + 1]
                        levels[kr + 1, j] = levels[kr + 1, j + 1]
                    state[S_NBID + side] = n - 1
            elif qty > 0.0:
                if n >= cap:
                    state[S_UPDATES] -= 1
                    return i
                for j in range(n, p, -1):
                    levels[kr, j] = levels[kr, j - 1]
                    levels[kr + 1, j] = levels[kr + 1, j - 1]
                levels[kr, p] = key
                levels[kr + 1, p] = qty
                state[S_NBID + side] = n + 1
        elif kind == _BEGIN:
            state[S_NBID] = 0
            state[S_NASK] = 0
            state[S_IN_SNAPSHOT] = 1
        elif kind == _END and state[S_IN_SNAPSHOT]:
            _finish_snapshot(levels, state)
            state[S_IN_SNAPSHOT] = 0
            state[S_SNAPSHOTS] += 1
    return -1


class L2Book:
    """Price-level book of one symbol (see the module docstring for the layout).

    symbol_id: the events' symbol_id this book follows. capacity: initial levels per side.
    `valid` is False until a snapshot completed; BookSync clears it on a sequence gap.
    Prices and quantities are float64 in venue units; empty sides read as NaN.
    """

    def __init__(self, symbol_id: int, capacity: int = 1024):
        if not 0 < symbol_id < 2**32:
            raise BookError(f"symbol_id must be in 1..2**32-1, got {symbol_id}")
        if not 8 <= capacity <= MAX_CAPACITY:
            raise BookError(f"capacity must be in 8..{MAX_CAPACITY} levels, got {capacity}")
        self.symbol_id = symbol_id
        self.valid = False
        self._levels = np.zeros((4, capacity), dtype=np.float64)
        self._state = np.zeros(STATE_SIZE, dtype=np.int64)
        self._state[S_SYMBOL] = symbol_id

    # ---- updates -----------------------------------------------------------------------
    def apply(self, events: np.ndarray) -> None:
        """Apply a batch (EVENT_DTYPE, shape (n,)) to the book: level events of this symbol,
        snapshot brackets. Other events are ignored. Sets `valid` after a snapshot."""
        snapshots = self._state[S_SNAPSHOTS]
        stop = apply_events(events, self._levels, self._state, 0)
        while stop >= 0:
            self._grow()
            stop = apply_events(events, self._levels, self._state, stop)
        if self._state[S_SNAPSHOTS] != snapshots:
            self.valid = True

    def _grow(self) -> None:
        cap = self._levels.shape[1]
        if cap * 2 > MAX_CAPACITY:
            raise BookError(f"book of symbol {self.symbol_id} exceeds {MAX_CAPACITY} levels")
        bigger = np.zeros((4, cap * 2), dtype=np.float64)
        bigger[:, :cap] = self._levels
        self._levels = bigger

    def clear(self) -> None:
        """Empty both sides and mark the book invalid."""
        self._state[S_NBID] = self._state[S_NASK] = self._state[S_IN_SNAPSHOT] = 0
        self.valid = False

    # ---- reads -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._levels.shape[1]

    @property
    def n_bids(self) -> int:
        return int(self._state[S_NBID])

    @property
    def n_asks(self) -> int:
        return int(self._state[S_NASK])

    @property
    def updates(self) -> int:
        """Level updates applied outside snapshots since construction."""
        return int(self._state[S_UPDATES])

    @property
    def best_bid(self) -> float:
        n = self._state[S_NBID]
        return float(self._levels[R_BID_KEY, n - 1]) if n else np.nan

    @property
    def best_ask(self) -> float:
        n = self._state[S_NASK]
        return float(-self._levels[R_ASK_KEY, n - 1]) if n else np.nan

    @property
    def best_bid_qty(self) -> float:
        n = self._state[S_NBID]
        return float(self._levels[R_BID_QTY, n - 1]) if n else np.nan

    @property
    def best_ask_qty(self) -> float:
        n = self._state[S_NASK]
        return float(self._levels[R_ASK_QTY, n - 1]) if n else np.nan

    def top(self) -> tuple[float, float, float, float]:
        """(best bid, bid qty, best ask, ask qty); NaN for an empty side."""
        nb_, na = self._state[S_NBID], self._state[S_NASK]
        lv = self._levels
        if nb_ and na:
            return (float(lv[0, nb_ - 1]), float(lv[1, nb_ - 1]), float(-lv[2, na - 1]),
                    float(lv[3, na - 1]))
        return self.best_bid, self.best_bid_qty, self.best_ask, self.best_ask_qty

    @property
    def mid(self) -> float:
        """(best bid + best ask) / 2; NaN if a side is empty."""
        return (self.best_bid + self.best_ask) / 2.0

    @property
    def spread(self) -> float:
        """best ask - best bid (negative when crossed); NaN if a side is empty."""
        return self.best_ask - self.best_bid

    @property
    def microprice(self) -> float:
        """(bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty) (Stoikov 2018)."""
        bid, bq, ask, aq = self.top()
        return (bid * aq + ask * bq) / (bq + aq)

    @property
    def crossed(self) -> bool:
        """True when both sides exist and best bid >= best ask (a book out of sync)."""
        bid, ask = self.best_bid, self.best_ask
        return bool(bid >= ask)  # NaN compares False

    def depth(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The top `n` levels per side, best first: (bid_prices, bid_qtys, ask_prices,
        ask_qtys), each float64 of shape (min(n, levels on that side),); copies."""
        if n < 0:
            raise ValueError(f"depth needs n >= 0, got {n}")
        nb_ = int(self._state[S_NBID])
        na = int(self._state[S_NASK])
        kb = min(n, nb_)
        ka = min(n, na)
        lv = self._levels
        bids = lv[R_BID_KEY, nb_ - kb:nb_][::-1].copy()
        bqty = lv[R_BID_QTY, nb_ - kb:nb_][::-1].copy()
        asks = -lv[R_ASK_KEY, na - ka:na][::-1]
        aqty = lv[R_ASK_QTY, na - ka:na][::-1].copy()
        return bids, bqty, asks, aqty

    def __repr__(self) -> str:
        return (f"L2Book(symbol_id={self.symbol_id}, bids={self.n_bids}, asks={self.n_asks}, "
                f"best={self.best_bid}/{self.best_ask}, valid={self.valid})")


def _warm() -> None:
    """Compile (or load from the numba cache) the kernel on import."""
    ev = np.zeros(4, dtype=EVENT_DTYPE)
    ev["symbol_id"] = 1
    ev["kind"] = [_BEGIN, _BID, _ASK, _END]
    ev["flags"] = _SNAP
    ev["price"] = [0.0, 1.0, 2.0, 0.0]
    ev["qty"] = [0.0, 1.0, 1.0, 0.0]
    book = L2Book(1, capacity=8)
    book.apply(ev)
    book.apply(ev[1:3])


_warm()
