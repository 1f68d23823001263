"""L2Book: one symbol's price-level book, updated from event batches by a numba kernel.

Layout (the choice and its limits). Real feeds update levels anywhere in a book of thousands
(Binance futures `depth@0ms` touches levels 5% away from the mid in most messages), so one sorted
array per side costs a shift of O(n) per deep insert or delete: measured on the USD-M dump that
made a numba sorted-array book only ~1.3x a dict + heapq book. Here:
- every level of both sides lives in one open-addressing hash table (linear probing, float64
  keys: +price for bids, -price for asks, so a key also names its side; tombstones on delete;
  the table doubles at 60% load): any update is O(1);
- a sorted cache of the best `TOP` (128) levels per side serves the top of book in O(1) and
  `depth(n)` for n <= 128 without sorting. It sits in a row of 2 * TOP slots, best first, with
  free room on both ends, so an insert or delete at rank r shifts min(r, n - r) slots (the
  better levels or the worse ones, whichever are fewer); real updates cluster near the top.
  An update better than the cache's worst level goes into the cache (past TOP the worst cached
  level leaves it); worse ones touch only the table. When deletes leave fewer than `REFILL`
  (8) cached levels while the table has more, the cache is rebuilt from the table (O(levels)
  selection: rare, amortized; measured ~31 rebuilds in the 6.5k depth messages of the USD-M
  dump).
There is no depth limit (the table grows); memory is 16 bytes per table slot. Prices are
compared exactly as float64: venues send decimal strings parsed once to the same double.

Snapshots: SNAPSHOT_BEGIN clears the book; levels until SNAPSHOT_END go to the table only (a
repeated price: the last one wins; qty 0 is dropped); SNAPSHOT_END builds the caches. Level
events with qty 0 delete the level (a no-op if absent). BBO, TRADE and HEARTBEAT events and
events of other symbols are ignored. Kernels are compiled with `cache=True`, warmed on import.

Two ways in: `apply(batch)` per message (one compiled call each, ~1-2 µs of Python and
dispatch overhead on top of the levels), and `apply_messages(events, ends)` for many messages
in one compiled call, still applied one message at a time, returning the top of book after
each message (replay, inspection, backtests: no per-message dispatch). Measured on the USD-M
dump (6.5k depth messages, ~68 levels each): apply_messages ~17-23M level updates/s (~45 ns a
level: ~19 ns hash probe and loop, the rest top-cache upkeep and data-dependent branches);
apply per message plus a best bid/ask read ~9M/s (~3 µs of Python and dispatch a message).

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

TOP = 128  # cached best levels per side
CACHE_SLOTS = 2 * TOP  # row length of the cache: TOP levels plus room to shift either way
REFILL = 8  # rebuild the cache from the table below this many cached levels
MAX_LOAD = 0.6
MAX_TABLE = 1 << 26
_TOMB = 1  # key bits of a deleted slot (the denormal 5e-324: never a price); 0 = empty
_SIGN = np.int64(-(2**63))

# state slots (int64)
S_SYMBOL, S_NBID, S_NASK, S_IN_SNAPSHOT, S_UPDATES, S_SNAPSHOTS = range(6)
S_TOTAL_BID, S_TOTAL_ASK, S_USED, S_LIMIT, S_REFILLS, S_LO_BID, S_LO_ASK = range(6, 13)
STATE_SIZE = 13
# rows of the cache array (float64, shape (4, CACHE_SLOTS)): per side, sort keys (-price for
# bids, +price for asks: ascending = best first) in [lo, lo + n) and their quantities
R_BID_KEY, R_BID_QTY, R_ASK_KEY, R_ASK_QTY = range(4)


@nb.njit(cache=True, nogil=True, inline="always")
def _slot(tbits, bits):
    """(index of `bits` or -1, the slot an insert would use) in the table."""
    mask = tbits.shape[0] - 1
    # splitmix64 finalizer: round prices (61800.0, 61800.5) have all-zero low mantissa bits,
    # so the index must come from well-mixed bits
    h = np.uint64(bits)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    i = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(mask))
    free = -1
    while True:
        b = tbits[i]
        if b == 0:
            return -1, (free if free >= 0 else i)
        if b == _TOMB:
            if free < 0:
                free = i
        elif b == bits:
            return i, i
        i = (i + 1) & mask


@nb.njit(cache=True, nogil=True, inline="always")
def _search(keys, lo, hi, ck):
    """First index in keys[lo:hi] (ascending) whose value is >= ck (hi if none); branch-free
    halving (the comparison picks the base by a conditional move, no mispredictions)."""
    n = hi - lo
    if n == 0:
        return lo
    base = lo
    while n > 1:
        half = n >> 1
        base = base + half if keys[base + half] < ck else base
        n -= half
    return base + (1 if keys[base] < ck else 0)


@nb.njit(cache=True, nogil=True)
def _refill(table, cache, state, side):
    """Rebuild one side's cache with the best TOP levels of the table, centred in its row:
    one pass over the table keeping the TOP largest keys in a min-heap (O(slots + TOP log TOP
    * log(levels / TOP)) expected for levels in hash order), then one sort of those TOP."""
    keys = table[0]
    qtys = table[1]
    tbits = keys.view(np.int64)
    heap_k = np.empty(TOP, dtype=np.float64)
    heap_q = np.empty(TOP, dtype=np.float64)
    size = 0
    bid = side == 0
    least = -np.inf  # a key must beat this to enter the heap (its minimum once full)
    for i in range(keys.shape[0]):
        b = tbits[i]
        k = keys[i]
        # one branch, taken rarely once the heap is full (non-short-circuit &: no branches
        # on the random empty/tombstone/side pattern of the slots)
        if not ((b != 0) & (b != _TOMB) & ((k > 0.0) == bid) & (k > least)):
            continue
        if size < TOP:  # sift up
            c = size
            size += 1
            while c > 0:
                parent = (c - 1) >> 1
                if heap_k[parent] <= k:
                    break
                heap_k[c] = heap_k[parent]
                heap_q[c] = heap_q[parent]
                c = parent
            heap_k[c] = k
            heap_q[c] = qtys[i]
            if size == TOP:
                least = heap_k[0]
        else:  # replace the smallest kept key, sift down
            c = 0
            while True:
                child = 2 * c + 1
                if child >= TOP:
                    break
                if child + 1 < TOP and heap_k[child + 1] < heap_k[child]:
                    child += 1
                if heap_k[child] >= k:
                    break
                heap_k[c] = heap_k[child]
                heap_q[c] = heap_q[child]
                c = child
            heap_k[c] = k
            heap_q[c] = qtys[i]
            least = heap_k[0]
    order = np.argsort(heap_k[:size])
    ckeys = cache[2 * side]
    cqty = cache[2 * side + 1]
    lo = (CACHE_SLOTS - size) >> 1
    for c in range(size):
        o = order[size - 1 - c]  # best (largest table key) first
        ckeys[lo + c] = -heap_k[o]
        cqty[lo + c] = heap_q[o]
    state[S_NBID + side] = size
    state[S_LO_BID + side] = lo
    state[S_REFILLS] += 1


@nb.njit(cache=True, nogil=True)
def _apply_range(words, table, cache, state, start, stop):
    """Apply events[start:stop] of symbol state[S_SYMBOL] (see the module docstring).

    words: the batch viewed as int64, shape (8 * n,): EVENT_DTYPE is 8 words, word 5 packs
    symbol_id | kind << 32 | side << 40 | flags << 48, words 6 and 7 hold price and qty.
    table: float64 (2, 2**k) keys and qtys. cache: float64 (4, CACHE_SLOTS). state: int64 S_*.
    Returns -1 when done, or the index of an event that needs a bigger table first (not yet
    applied; the caller rehashes and calls again from there).
    """
    sid = state[S_SYMBOL]
    floats = words.view(np.float64)
    tkeys = table[0]
    tqty = table[1]
    tbits = tkeys.view(np.int64)
    for i in range(start, stop):
        w = words[8 * i + 5]
        if (w & 0xFFFFFFFF) != sid:
            continue
        kind = (w >> 32) & 0xFF
        if kind in (_BID, _ASK):
            if state[S_USED] >= state[S_LIMIT]:
                return i
            side = 0 if kind == _BID else 1
            bits = words[8 * i + 6]
            if side == 1:
                bits = bits ^ _SIGN
            price = floats[8 * i + 6]
            qty = floats[8 * i + 7]
            found, slot = _slot(tbits, bits)
            if state[S_IN_SNAPSHOT]:
                if qty > 0.0:
                    if found < 0:
                        if tbits[slot] == 0:
                            state[S_USED] += 1
                        tbits[slot] = bits
                        state[S_TOTAL_BID + side] += 1
                    tqty[slot] = qty
                elif found >= 0:
                    tbits[found] = _TOMB
                    state[S_TOTAL_BID + side] -= 1
                continue
            state[S_UPDATES] += 1
            ck = -price if side == 0 else price  # cache order: ascending, best first
            ckeys = cache[2 * side]
            cqty = cache[2 * side + 1]
            n = state[S_NBID + side]
            lo = state[S_LO_BID + side]
            if qty > 0.0:
                if found >= 0:  # a new quantity at an existing level
                    tqty[found] = qty
                    if n > 0 and ck <= ckeys[lo + n - 1]:
                        p = lo if ckeys[lo] == ck else _search(ckeys, lo, lo + n, ck)
                        cqty[p] = qty
                    continue
                if tbits[slot] == 0:
                    state[S_USED] += 1
                tbits[slot] = bits
                tqty[slot] = qty
                total = state[S_TOTAL_BID + side] + 1
                state[S_TOTAL_BID + side] = total
                # cached when better than the worst cached level, or the cache holds the side
                if (n > 0 and ck < ckeys[lo + n - 1]) or (n == total - 1 and n < TOP):
                    r = _search(ckeys, lo, lo + n, ck) - lo
                    # shift the shorter part: the r better levels left, or the worse ones right
                    if lo > 0 and (r <= n - r or lo + n == CACHE_SLOTS):
                        for j in range(lo - 1, lo + r - 1):
                            ckeys[j] = ckeys[j + 1]
                            cqty[j] = cqty[j + 1]
                        lo -= 1
                        state[S_LO_BID + side] = lo
                    else:
                        for j in range(lo + n, lo + r, -1):
                            ckeys[j] = ckeys[j - 1]
                            cqty[j] = cqty[j - 1]
                    ckeys[lo + r] = ck
                    cqty[lo + r] = qty
                    # more than TOP: the worst cached level leaves (it stays in the table)
                    state[S_NBID + side] = min(n + 1, TOP)
            elif found >= 0:  # delete
                tbits[found] = _TOMB
                total = state[S_TOTAL_BID + side] - 1
                state[S_TOTAL_BID + side] = total
                if n > 0 and ck <= ckeys[lo + n - 1]:
                    p = lo if ckeys[lo] == ck else _search(ckeys, lo, lo + n, ck)
                    if p - lo <= lo + n - 1 - p:  # shift the better levels right
                        for j in range(p, lo, -1):
                            ckeys[j] = ckeys[j - 1]
                            cqty[j] = cqty[j - 1]
                        state[S_LO_BID + side] = lo + 1
                    else:
                        for j in range(p, lo + n - 1):
                            ckeys[j] = ckeys[j + 1]
                            cqty[j] = cqty[j + 1]
                    n -= 1
                    state[S_NBID + side] = n
                    if n < REFILL and total > n:
                        _refill(table, cache, state, side)
        elif kind == _BEGIN:
            tbits[:] = 0
            for s in (S_NBID, S_NASK, S_TOTAL_BID, S_TOTAL_ASK, S_USED):
                state[s] = 0
            state[S_IN_SNAPSHOT] = 1
        elif kind == _END and state[S_IN_SNAPSHOT]:
            _refill(table, cache, state, 0)
            _refill(table, cache, state, 1)
            state[S_IN_SNAPSHOT] = 0
            state[S_SNAPSHOTS] += 1
    return -1


@nb.njit(cache=True, nogil=True)
def apply_events(words, table, cache, state, start):
    """Apply events[start:] (see `_apply_range`): -1 when done, else the event index that
    needs a bigger table first."""
    return _apply_range(words, table, cache, state, start, words.shape[0] >> 3)


@nb.njit(cache=True, nogil=True)
def _read_top(cache, state, tops, m):
    """tops[m] = (best bid, bid qty, best ask, ask qty), NaN for an empty side."""
    for side in range(2):
        n = state[S_NBID + side]
        lo = state[S_LO_BID + side]
        if n > 0:
            k = cache[2 * side, lo]
            tops[m, 2 * side] = -k if side == 0 else k
            tops[m, 2 * side + 1] = cache[2 * side + 1, lo]
        else:
            tops[m, 2 * side] = np.nan
            tops[m, 2 * side + 1] = np.nan


@nb.njit(cache=True, nogil=True)
def apply_messages_kernel(words, ends, table, cache, state, first, tops):
    """Apply messages first.. one at a time (message m = events ends[m-1]:ends[m]) and write
    the top of book after each into tops[m]. Returns -1 when done, or the index of a message
    whose levels may not fit the table (not applied; the caller grows it and resumes)."""
    for m in range(first, ends.shape[0]):
        lo = ends[m - 1] if m > 0 else 0
        hi = ends[m]
        if state[S_USED] + (hi - lo) > state[S_LIMIT]:
            return m
        _apply_range(words, table, cache, state, lo, hi)
        _read_top(cache, state, tops, m)
    return -1


@nb.njit(cache=True, nogil=True)
def _rehash(old, new, state):
    """Move the live entries of table `old` into the empty table `new`."""
    obits = old[0].view(np.int64)
    nbits = new[0].view(np.int64)
    used = 0
    for i in range(obits.shape[0]):
        b = obits[i]
        if b == 0 or b == _TOMB:
            continue
        _, slot = _slot(nbits, b)
        nbits[slot] = b
        new[1, slot] = old[1, i]
        used += 1
    state[S_USED] = used


@nb.njit(cache=True, nogil=True)
def _side_levels(table, side):
    """All levels of one side, best first: (prices, qtys)."""
    keys = table[0]
    tbits = keys.view(np.int64)
    n = 0
    for i in range(keys.shape[0]):
        b = tbits[i]
        if b != 0 and b != _TOMB and (keys[i] > 0.0) == (side == 0):
            n += 1
    k = np.empty(n, dtype=np.float64)
    q = np.empty(n, dtype=np.float64)
    j = 0
    for i in range(keys.shape[0]):
        b = tbits[i]
        if b != 0 and b != _TOMB and (keys[i] > 0.0) == (side == 0):
            k[j] = keys[i]
            q[j] = table[1, i]
            j += 1
    order = np.argsort(k)[::-1]
    prices = k[order] if side == 0 else -k[order]
    return prices, q[order]


class L2Book:
    """Price-level book of one symbol (see the module docstring for the layout).

    symbol_id: the events' symbol_id this book follows. capacity: levels (both sides) the
    table holds before its first growth. `valid` is False until a snapshot completed;
    BookSync clears it on a sequence gap. Prices and quantities are float64 in venue units;
    an empty side reads as NaN.
    """

    def __init__(self, symbol_id: int, capacity: int = 1024):
        if not 0 < symbol_id < 2**32:
            raise BookError(f"symbol_id must be in 1..2**32-1, got {symbol_id}")
        if not 8 <= capacity <= MAX_TABLE // 2:
            raise BookError(f"capacity must be in 8..{MAX_TABLE // 2} levels, got {capacity}")
        self.symbol_id = symbol_id
        self.valid = False
        self._cache = np.zeros((4, CACHE_SLOTS), dtype=np.float64)
        self._state = np.zeros(STATE_SIZE, dtype=np.int64)
        self._state[S_SYMBOL] = symbol_id
        size = 16
        while size * MAX_LOAD < capacity:
            size *= 2
        self._new_table(size)

    def _new_table(self, size: int) -> None:
        self._table = np.zeros((2, size), dtype=np.float64)
        self._state[S_LIMIT] = int(size * MAX_LOAD)

    # ---- updates -----------------------------------------------------------------------
    def apply(self, events: np.ndarray) -> None:
        """Apply a batch (EVENT_DTYPE, shape (n,)) to the book: level events of this symbol,
        snapshot brackets. Other events are ignored. Sets `valid` after a snapshot."""
        if not events.flags.c_contiguous:
            events = np.ascontiguousarray(events)
        # frombuffer, not .view(): numba's dispatcher types an int64 view whose base is a
        # structured array ~5x slower (measured 5.3 vs 1.2 µs per call)
        words = np.frombuffer(events, dtype=np.int64)
        state = self._state
        snapshots = state[S_SNAPSHOTS]
        stop = apply_events(words, self._table, self._cache, state, 0)
        while stop >= 0:
            self._grow()
            stop = apply_events(words, self._table, self._cache, state, stop)
        if state[S_SNAPSHOTS] != snapshots:
            self.valid = True

    def apply_messages(self, events: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Apply many messages in one compiled call, one message at a time, recording the top
        of book after each (for replay, inspection and backtests).

        events: EVENT_DTYPE, shape (n,), the messages' events back to back (e.g.
        `np.concatenate` of per-message batches). ends: int64, shape (m,), non-decreasing:
        message k is events[ends[k-1]:ends[k]] (ends[-1] == n). Returns float64 (m, 4):
        (best bid, bid qty, best ask, ask qty) after each message, NaN for an empty side; the
        book ends as `apply` of each message in turn would leave it (`valid` included).
        Raises ValueError for ends that do not partition events.
        """
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        if ends.ndim != 1 or (len(ends) and (ends[-1] != len(events) or ends[0] < 0
                                              or (np.diff(ends) < 0).any())):
            raise ValueError(f"ends must be non-decreasing int64 ending at {len(events)} "
                             f"events, got {ends[-3:] if ends.ndim == 1 else ends.shape}")
        if not events.flags.c_contiguous:
            events = np.ascontiguousarray(events)
        words = np.frombuffer(events, dtype=np.int64)
        tops = np.empty((len(ends), 4), dtype=np.float64)
        state = self._state
        snapshots = state[S_SNAPSHOTS]
        stop = apply_messages_kernel(words, ends, self._table, self._cache, state, 0, tops)
        while stop >= 0:
            self._grow(int(ends[stop] - (ends[stop - 1] if stop else 0)))
            stop = apply_messages_kernel(words, ends, self._table, self._cache, state, stop,
                                         tops)
        if state[S_SNAPSHOTS] != snapshots:
            self.valid = True
        return tops

    def _grow(self, need: int = 0) -> None:
        """Rehash into a table with room for `need` more levels (doubled when half full)."""
        old = self._table
        live = int(self._state[S_TOTAL_BID] + self._state[S_TOTAL_ASK])
        size = old.shape[1] * (2 if live >= old.shape[1] * MAX_LOAD / 2 else 1)
        while live + need > size * MAX_LOAD:
            size *= 2
        if size > MAX_TABLE:
            raise BookError(f"book of symbol {self.symbol_id} exceeds {MAX_TABLE} slots")
        self._new_table(size)
        _rehash(old, self._table, self._state)

    def clear(self) -> None:
        """Empty both sides and mark the book invalid."""
        self._table[0].view(np.int64)[:] = 0
        for slot in (S_NBID, S_NASK, S_TOTAL_BID, S_TOTAL_ASK, S_USED, S_IN_SNAPSHOT):
            self._state[slot] = 0
        self.valid = False

    # ---- reads -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Levels the table holds before it grows."""
        return int(self._state[S_LIMIT])

    @property
    def n_bids(self) -> int:
        return int(self._state[S_TOTAL_BID])

    @property
    def n_asks(self) -> int:
        return int(self._state[S_TOTAL_ASK])

    @property
    def updates(self) -> int:
        """Level updates applied outside snapshots since construction."""
        return int(self._state[S_UPDATES])

    @property
    def best_bid(self) -> float:
        state = self._state
        return float(-self._cache[R_BID_KEY, state[S_LO_BID]]) if state[S_NBID] else np.nan

    @property
    def best_ask(self) -> float:
        state = self._state
        return float(self._cache[R_ASK_KEY, state[S_LO_ASK]]) if state[S_NASK] else np.nan

    @property
    def best_bid_qty(self) -> float:
        state = self._state
        return float(self._cache[R_BID_QTY, state[S_LO_BID]]) if state[S_NBID] else np.nan

    @property
    def best_ask_qty(self) -> float:
        state = self._state
        return float(self._cache[R_ASK_QTY, state[S_LO_ASK]]) if state[S_NASK] else np.nan

    def top(self) -> tuple[float, float, float, float]:
        """(best bid, bid qty, best ask, ask qty); NaN for an empty side."""
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
        return bool(self.best_bid >= self.best_ask)  # NaN compares False

    def depth(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The top `n` levels per side, best first: (bid_prices, bid_qtys, ask_prices,
        ask_qtys), each float64 of shape (min(n, levels on that side),); copies. Served from
        the cache for n <= 128, else sorted from the table."""
        if n < 0:
            raise ValueError(f"depth needs n >= 0, got {n}")
        out = []
        for side in (0, 1):
            cached = int(self._state[S_NBID + side])
            total = int(self._state[S_TOTAL_BID + side])
            if n <= cached or cached == total:
                lo = int(self._state[S_LO_BID + side])
                hi = lo + min(n, cached)
                keys = self._cache[2 * side, lo:hi]
                out += [-keys if side == 0 else keys.copy(),
                        self._cache[2 * side + 1, lo:hi].copy()]
            else:
                prices, qtys = _side_levels(self._table, side)
                out += [prices[:n], qtys[:n]]
        return out[0], out[1], out[2], out[3]

    def __repr__(self) -> str:
        return (f"L2Book(symbol_id={self.symbol_id}, bids={self.n_bids}, asks={self.n_asks}, "
                f"best={self.best_bid}/{self.best_ask}, valid={self.valid})")


def _warm() -> None:
    """Compile (or load from the numba cache) the kernels on import."""
    ev = np.zeros(6, dtype=EVENT_DTYPE)
    ev["symbol_id"] = 1
    ev["kind"] = [_BEGIN, _BID, _ASK, _END, _BID, _ASK]
    ev["flags"] = [_SNAP, _SNAP, _SNAP, _SNAP, 0, 0]
    ev["price"] = [0.0, 1.0, 2.0, 0.0, 1.5, 2.0]
    ev["qty"] = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    book = L2Book(1, capacity=8)
    book.apply(ev)
    book._grow()
    book.depth(200)
    book.apply_messages(ev, np.array([4, 6], dtype=np.int64))


_warm()
