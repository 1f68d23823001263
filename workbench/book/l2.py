"""L2Book: one symbol's price-level book on a tick-indexed ladder, updated by numba kernels.

Layout (the choice and its limits). A price maps to an integer tick index t = round(price /
tick). Each side keeps a ladder: `window` quantity slots over a range of ticks, indexed by t
minus the side's base (asks by -t, so on both sides a higher slot is a better level), and the
slot of its best level. An update inside the window is one store with no load of the slot
(a load of a cold deep slot and branches on it cost ~2x on real feeds); a delete of the best
level walks down to the next occupied slot (levels near the top are dense). Levels worse than
the window live in an overflow open-addressing hash table (Binance futures `depth@0ms` touches
levels far from the mid: on the USD-M dump 4.6% of updates fall below the default window,
24576 ticks under the best, 3.8% even below 8% from the mid, mostly at round prices such as
1000 and 5000; 9.7% would at 8192 ticks). The table: linear probing,
float64 keys: +price for bids, -price for asks; tombstones on delete; the table doubles at 60%
load). Invariants: each side's levels at or above its base are in its ladder, those below in
the table, and a side's ladder is empty only when the side is. So the best level is always the
ladder's best: O(1) reads, exact `depth(n)` (the ladder walked from the best, then the table's
levels sorted), and one level's quantity at any depth in O(1) (`level_qty`: its tick's slot,
or one table probe). `n_bids`/`n_asks` count the ladder on demand (O(window)).
Re-centring (a rebuild of both sides from all their levels, O(window + levels), rare): when a
level arrives above a side's window (the market moved up past it), when a level goes to the
table while the best sits in the lowest eighth of the window (the market moved down), when a
side's ladder empties while the table still holds levels of it, and at the end of every
snapshot. A rebuild puts each side's best `window // 4` slots below the window's top.

Tick size: given (`tick_size`, from the venue's symbol metadata) or inferred at the end of the
snapshot from all its prices: the fewest decimals d that write every price, then the gcd of
the prices in units of 10^-d (so a 0.5-tick book gets 0.5, not 0.1). A price fits the grid
(tick = g / 10^d) when it equals (t * g) / 10^d exactly for t = round(price / tick): one
double per tick, the one a decimal string parses to, so the ladder keeps quantities only and
rebuilds prices exactly. A price that does not fit (a finer increment appears) re-derives the
grid from every level and that price (the new tick divides the old one) and rebuilds. Prices
must be decimals with at most 15 decimals and below 2**53 units of 10^-d (any venue's parsed
decimal strings): others raise BookError. Kernels use numba's numpy error model (no
division-by-zero checks in the loops; every division is by a grid's nonzero scale).

Snapshots: SNAPSHOT_BEGIN clears the book; levels until SNAPSHOT_END go to the hash table only
(a repeated price: the last one wins; qty 0 is dropped); SNAPSHOT_END infers the tick size if
needed and builds the ladders. Level events with qty 0 delete the level (a no-op if absent).
BBO, TRADE and HEARTBEAT events and events of other symbols are ignored. Prices must be
positive and finite (normalizers reject others; the book raises BookError). Kernels are
compiled with `cache=True`, warmed on import.

Two ways in: `apply(batch)` per message (one compiled call each, ~1-2 µs of Python and
dispatch overhead on top of the levels), and `apply_messages(events, ends)` for many messages
in one compiled call, still applied one at a time, returning the top of book after each
message (replay, inspection, backtests: no per-message dispatch). The kernels leave the top of
book in the state array, so best bid/ask reads are O(1) from Python. Measured on the USD-M dump
(6.5k depth messages, 445k level updates, a 2-core machine shared with other jobs):
apply_messages ~7-8 ns a level (~120-135M/s unloaded, 80-100M/s under load), the window size
between 16k and 128k ticks within noise; apply per message plus a best bid/ask read ~2.8 µs a
message (68 levels); the previous hash-table + sorted-cache book ~45 ns a level.

Microprice (Stoikov, "The micro-price: a high-frequency estimator of future prices", 2018,
weighted mid-price): (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from workbench.errors import BookError
from workbench.events import EVENT_DTYPE, F_SNAPSHOT, K_ASK, K_BID, K_SNAP_BEGIN, K_SNAP_END

WINDOW = 32768  # ladder slots per side (ticks): 256 KiB of quantities a side
MIN_WINDOW = 16
MAX_WINDOW = 1 << 22
MAX_LOAD = 0.6
MAX_TABLE = 1 << 26
MAX_DECIMALS = 15
MAX_UNITS = float(2**53)  # prices in units of 10^-d must be exact integers in float64
_TOMB = 1  # key bits of a deleted slot (the denormal 5e-324: never a price); 0 = empty
_SIGN = np.int64(-(2**63))
_NONE = -(2**62)  # "no level" for a side's best tick

# state slots (int64; S_INV, S_UNITS_F, S_SCALE and S_BAD hold float64 through a view)
S_SYMBOL, S_IN_SNAPSHOT, S_UPDATES, S_SNAPSHOTS, S_USED, S_LIMIT, S_REBUILDS = range(7)
S_NEED, S_MSG, S_ERROR, S_HAS_GRID, S_DECIMALS, S_TICK_UNITS, S_INV = range(7, 14)
S_UNITS_F, S_SCALE, S_BAD = range(14, 17)
S_BASE, S_BEST, S_NOVER = 17, 19, 21  # two slots each: bid, ask
S_TOP = 23  # four float64 slots: best bid, bid qty, best ask, ask qty (NaN: empty side)
STATE_SIZE = 27
# S_ERROR codes
E_NONE, E_PRICE, E_GRID = 0, 1, 2


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
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


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tick(price, inv, units, scale):
    """The tick index of `price` on the grid (units / scale, inv = scale / units) as a float,
    or NaN when the price is not exactly (t * units) / scale."""
    t = np.floor(price * inv + 0.5)
    return t if t * units / scale == price and abs(t) * units < MAX_UNITS else np.nan


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _price(state, side, j):
    """The price of slot j of a side's ladder."""
    f = state.view(np.float64)
    k = j + state[S_BASE + side]
    return np.float64(k if side == 0 else -k) * f[S_UNITS_F] / f[S_SCALE]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _table_set(table, state, side, key, qty):
    """Set (qty > 0) or delete one level in the hash table; key: the bits of the float64
    +price (bid) or -price (ask). Returns 1 when the table needs room first (state[S_NEED] =
    1, nothing done), else 0."""
    tbits = table[0].view(np.int64)
    found, slot = _slot(tbits, key)
    if qty > 0.0:
        if found < 0:
            if tbits[slot] == 0:
                if state[S_USED] >= state[S_LIMIT]:
                    state[S_NEED] = 1
                    return 1
                state[S_USED] += 1
            tbits[slot] = key
            state[S_NOVER + side] += 1
        table[1, slot] = qty
    elif found >= 0:
        tbits[found] = _TOMB
        state[S_NOVER + side] -= 1
    return 0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _decimals(p, start=0):
    """The fewest decimals d (start..MAX_DECIMALS) with p == round(p * 10^d) / 10^d, -1 if
    none (a price written with fewer decimals also fits with more)."""
    scale = 10.0**start
    for d in range(start, MAX_DECIMALS + 1):
        n = np.floor(p * scale + 0.5)
        if n >= MAX_UNITS:
            return -1
        if n / scale == p:
            return d
        scale *= 10.0
    return -1


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _set_grid(state, d, units):
    f = state.view(np.float64)
    state[S_DECIMALS] = d
    state[S_TICK_UNITS] = units
    f[S_SCALE] = 10.0**d
    f[S_UNITS_F] = np.float64(units)
    f[S_INV] = 10.0**d / units
    state[S_HAS_GRID] = 1


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _derive_grid(prices, n, state):
    """Set the tick grid to the coarsest decimal grid every price fits that divides the
    current grid (if any): d = the most decimals any price needs, units = the gcd of the
    prices in units of 10^-d. Returns False when a price has no such grid."""
    has = state[S_HAS_GRID] != 0
    d = state[S_DECIMALS] if has else 0
    for i in range(n):  # one division a price once d is reached
        d = _decimals(prices[i], d)
        if d < 0:
            state.view(np.float64)[S_BAD] = prices[i]
            return False
    scale = 10.0**d
    g = state[S_TICK_UNITS] * 10 ** (d - state[S_DECIMALS]) if has else 0
    for i in range(n):
        if g == 1:  # the finest grid of d decimals: no price changes it
            break
        a = np.int64(np.floor(prices[i] * scale + 0.5))
        while a:
            g, a = a, g % a
    if g <= 0 or (not has and n < 2):
        g = 1  # one price tells no tick: the finest step of its decimals
    _set_grid(state, d, g)
    return True


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _zero_ladder(ladder, state):
    """Empty both ladders (the slots from each best down)."""
    for side in range(2):
        for j in range(state[S_BEST + side] + 1):
            ladder[side, j] = 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _rebuild(ladder, table, state, extra_side, extra_price, extra_qty):
    """Re-derive the grid if a price does not fit it and rebuild both sides from all their
    levels (plus one new level when extra_side >= 0, a price in neither the ladder nor the
    table): each side's best `window // 4` slots below the top of its window, worse levels in
    the table. Returns 0, 1 when the table needs room first (state[S_NEED]), 2 on a grid error
    (state[S_ERROR]); nothing changes unless 0."""
    width = ladder.shape[1]
    f = state.view(np.float64)
    n = state[S_NOVER] + state[S_NOVER + 1] + (1 if extra_side >= 0 else 0)
    for side in range(2):
        for j in range(state[S_BEST + side] + 1):
            n += ladder[side, j] != 0.0
    sides = np.empty(n, dtype=np.int64)
    prices = np.empty(n, dtype=np.float64)
    qtys = np.empty(n, dtype=np.float64)
    m = 0
    for side in range(2):
        for j in range(state[S_BEST + side], -1, -1):
            if ladder[side, j] != 0.0:
                sides[m] = side
                prices[m] = _price(state, side, j)
                qtys[m] = ladder[side, j]
                m += 1
    tkeys = table[0]
    tbits = tkeys.view(np.int64)
    for i in range(tkeys.shape[0]):
        b = tbits[i]
        if b != 0 and b != _TOMB:
            k = tkeys[i]
            sides[m] = 0 if k > 0.0 else 1
            prices[m] = abs(k)
            qtys[m] = table[1, i]
            m += 1
    if extra_side >= 0:
        sides[m] = extra_side
        prices[m] = extra_price
        qtys[m] = extra_qty
        m += 1
    saved = (state[S_HAS_GRID], state[S_DECIMALS], state[S_TICK_UNITS])
    keys = np.empty(m, dtype=np.int64)
    fits = saved[0] != 0
    for i in range(m):
        tf = _tick(prices[i], f[S_INV], f[S_UNITS_F], f[S_SCALE]) if fits else np.nan
        if np.isnan(tf):
            fits = False
            break
        keys[i] = np.int64(tf)
    if not fits:
        if not _derive_grid(prices, m, state):  # S_BAD: the price
            state[S_ERROR] = E_GRID
            return 2
        for i in range(m):  # every price fits the derived grid
            keys[i] = np.int64(np.floor(prices[i] * f[S_INV] + 0.5))
    best = np.full(2, _NONE, dtype=np.int64)
    for i in range(m):
        keys[i] = keys[i] if sides[i] == 0 else -keys[i]
        best[sides[i]] = max(best[sides[i]], keys[i])
    base = np.empty(2, dtype=np.int64)
    for side in range(2):
        base[side] = best[side] - (width - width // 4) if best[side] != _NONE \
            else state[S_BASE + side]
    over = 0
    for i in range(m):
        over += keys[i] < base[sides[i]]
    if over > state[S_LIMIT]:
        if saved[0]:
            _set_grid(state, saved[1], saved[2])
        else:
            state[S_HAS_GRID] = 0
        state[S_NEED] = over
        return 1
    _zero_ladder(ladder, state)
    tbits[:] = 0
    state[S_USED] = 0
    state[S_NOVER] = 0
    state[S_NOVER + 1] = 0
    scratch = np.empty(1, dtype=np.float64)
    sbits = scratch.view(np.int64)
    for i in range(m):
        side = sides[i]
        j = keys[i] - base[side]
        if j >= 0:
            ladder[side, j] = qtys[i]
        else:
            scratch[0] = prices[i] if side == 0 else -prices[i]
            _table_set(table, state, side, sbits[0], qtys[i])
    for side in range(2):
        state[S_BASE + side] = base[side]
        state[S_BEST + side] = best[side] - base[side] if best[side] != _NONE else -1
    state[S_REBUILDS] += 1
    return 0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _set_level(ladder, table, state, side, price, key, qty):
    """One level update outside the fast path (any case, exactly); key: the table key bits
    (see `_table_set`). Returns 0, 1 when the table needs room first, 2 on an error
    (state[S_ERROR]); when not 0 the caller applies the event again after fixing that (every
    step before is idempotent: setting a level)."""
    f = state.view(np.float64)
    if not (price > 0.0 and price < np.inf):
        state[S_ERROR] = E_PRICE
        f[S_BAD] = price
        return 2
    if state[S_IN_SNAPSHOT]:
        return _table_set(table, state, side, key, qty)
    tf = _tick(price, f[S_INV], f[S_UNITS_F], f[S_SCALE]) if state[S_HAS_GRID] else np.nan
    if np.isnan(tf):
        # a price off the grid is never in the book: a delete is a no-op
        return _rebuild(ladder, table, state, side, price, qty) if qty > 0.0 else 0
    t = np.int64(tf)
    j = (t if side == 0 else -t) - state[S_BASE + side]
    width = ladder.shape[1]
    best = state[S_BEST + side]
    if j >= width:  # above the window: a new best (no level lives above the window)
        return _rebuild(ladder, table, state, side, price, qty) if qty > 0.0 else 0
    if j < 0:  # below the window: the table (then the window comes down if the best is low)
        code = _table_set(table, state, side, key, qty)
        if code == 0 and qty > 0.0 and best < (width >> 3):
            code = _rebuild(ladder, table, state, -1, 0.0, 0.0)
        return code
    ladder[side, j] = qty
    if qty > 0.0:
        state[S_BEST + side] = max(best, j)
    elif j == best:
        best -= 1
        while best >= 0 and ladder[side, best] == 0.0:
            best -= 1
        state[S_BEST + side] = best
    if state[S_BEST + side] < 0 and state[S_NOVER + side] > 0:
        # the ladder emptied (here or in the fast path) and the table holds levels: bring them
        return _rebuild(ladder, table, state, -1, 0.0, 0.0)
    return 0


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _load(state):
    """The state the event loop keeps in locals."""
    f = state.view(np.float64)
    snap = state[S_IN_SNAPSHOT]
    return (snap, state[S_HAS_GRID] != 0 and snap == 0, f[S_INV], f[S_UNITS_F], f[S_SCALE],
            state[S_BASE], state[S_BASE + 1], state[S_BEST], state[S_BEST + 1],
            state[S_NOVER], state[S_NOVER + 1], state[S_USED])


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _save(state, best_b, best_a, no_b, no_a, used):
    """Write the event loop's locals back (bases and the grid change only in callees)."""
    state[S_BEST] = best_b
    state[S_BEST + 1] = best_a
    state[S_NOVER] = no_b
    state[S_NOVER + 1] = no_a
    state[S_USED] = used


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ladder_set(lad, j, qty, best, n_over):
    """Set slot j of one side's ladder: (done, new best). Not done when the delete of the
    best emptied the ladder while the table holds levels (a rebuild follows)."""
    lad[np.uint64(j)] = qty  # 0 <= j < window: unsigned, no wraparound code
    if qty == 0.0 and j == best:  # the next occupied slot down
        best -= 1
        while best >= 0 and lad[best] == 0.0:
            best -= 1
        return best >= 0 or n_over == 0, best
    return True, max(best, j if qty > 0.0 else best)  # selects, no branch on the level kind


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _apply(words, ladder, table, state, ends, first, start, tops):
    """Apply messages first.. of symbol state[S_SYMBOL] one at a time (message m = events
    ends[m-1]:ends[m], message `first` from event `start` on) and write the top of book
    after each into tops[m] (best bid, bid qty, best ask, ask qty; NaN for an empty side).
    An empty `ends` is one message: every event from `start`, no top written.

    words: the batch viewed as int64, shape (8 * n,): EVENT_DTYPE is 8 words, word 5 packs
    symbol_id | kind << 32 | side << 40 | flags << 48, words 6 and 7 hold price and qty.
    ladder: float64 (2, window) quantities. table: float64 (2, 2**k) keys and qtys. state:
    int64 S_*. Returns -1 when done, or the index of an event to apply again (its message in
    state[S_MSG]) after the caller grew the table (state[S_NEED] slots) or raised the error
    in state[S_ERROR].

    The loop handles the common cases with the state in locals across messages: a price on
    the grid inside the window, a delete below it, a level going to the table while the
    window is well placed, a snapshot's levels. Everything else goes through `_set_level`.
    """
    sid = state[S_SYMBOL]
    floats = words.view(np.float64)
    width = ladder.shape[1]
    low = width >> 3
    lb = ladder[0]
    la = ladder[1]
    tbits = table[0].view(np.int64)
    tqty = table[1]
    limit = state[S_LIMIT]
    snap, fast, inv, units, scale, base_b, base_a, best_b, best_a, no_b, no_a, used = \
        _load(state)
    updates = 0
    result = -1
    n_msgs = ends.shape[0]
    m = first
    while m < max(n_msgs, 1):
        lo = (ends[m - 1] if m > 0 else 0) if n_msgs else 0
        stop = ends[m] if n_msgs else words.shape[0] >> 3
        for i in range(max(lo, start) if m == first else lo, stop):
            row = np.uint64(i) << np.uint64(3)  # unsigned: no negative-index wraparound code
            w = words[row + np.uint64(5)]
            if (w & 0xFFFFFFFF) != sid:
                continue
            kind = (w >> 32) & 0xFF
            if kind in (K_BID, K_ASK):
                price = floats[row + np.uint64(6)]
                qty = floats[row + np.uint64(7)]
                bid = kind == K_BID
                updates += 1 - snap
                to_table = False
                if fast:
                    tf = np.floor(price * inv + 0.5)
                    # on the grid, and positive and finite (a tick in 1..2**53)
                    if tf * units / scale == price and 0.0 < tf < MAX_UNITS:
                        t = np.int64(tf)
                        if bid:
                            j = t - base_b
                            if 0 <= j < width:
                                done, best_b = _ladder_set(lb, j, qty, best_b, no_b)
                                if done:
                                    continue
                            elif j < 0:
                                to_table = qty == 0.0 or (best_b >= low and used < limit)
                            elif qty == 0.0:
                                continue  # no level lives above the window
                        else:
                            j = -t - base_a
                            if 0 <= j < width:
                                done, best_a = _ladder_set(la, j, qty, best_a, no_a)
                                if done:
                                    continue
                            elif j < 0:
                                to_table = qty == 0.0 or (best_a >= low and used < limit)
                            elif qty == 0.0:
                                continue
                elif snap:
                    to_table = used < limit and 0.0 < price < np.inf
                bits = words[8 * i + 6] if bid else words[8 * i + 6] ^ _SIGN
                if to_table:
                    found, slot = _slot(tbits, bits)
                    if qty > 0.0:
                        if found < 0:
                            if tbits[slot] == 0:
                                used += 1
                            tbits[slot] = bits
                            if bid:
                                no_b += 1
                            else:
                                no_a += 1
                        tqty[slot] = qty
                    elif found >= 0:
                        tbits[found] = _TOMB
                        if bid:
                            no_b -= 1
                        else:
                            no_a -= 1
                    continue
                # any other case: the general path, the state written back and reloaded
                _save(state, best_b, best_a, no_b, no_a, used)
                if _set_level(ladder, table, state, 0 if bid else 1, price, bits, qty) != 0:
                    updates -= 1 - snap
                    result = i
                    break
            elif kind == K_SNAP_BEGIN or (kind == K_SNAP_END and snap):
                _save(state, best_b, best_a, no_b, no_a, used)
                if kind == K_SNAP_BEGIN:
                    _clear(ladder, table, state)
                    state[S_IN_SNAPSHOT] = 1
                else:
                    state[S_IN_SNAPSHOT] = 0
                    if _rebuild(ladder, table, state, -1, 0.0, 0.0) != 0:
                        state[S_IN_SNAPSHOT] = 1
                        result = i
                        break
                    state[S_SNAPSHOTS] += 1
            else:
                continue
            snap, fast, inv, units, scale, base_b, base_a, best_b, best_a, no_b, no_a, used = \
                _load(state)
        if result >= 0:
            break
        if n_msgs:
            if best_b >= 0:
                tops[m, 0] = np.float64(best_b + base_b) * units / scale
                tops[m, 1] = lb[best_b]
            else:
                tops[m, 0] = np.nan
                tops[m, 1] = np.nan
            if best_a >= 0:
                tops[m, 2] = -np.float64(best_a + base_a) * units / scale
                tops[m, 3] = la[best_a]
            else:
                tops[m, 2] = np.nan
                tops[m, 3] = np.nan
        m += 1
    if result < 0:
        _save(state, best_b, best_a, no_b, no_a, used)
    state[S_MSG] = m
    _write_top(ladder, state)
    state[S_UPDATES] += updates
    return result


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _write_top(ladder, state):
    """The top of book into state[S_TOP:S_TOP + 4] (float64), for O(1) reads from Python."""
    f = state.view(np.float64)
    for side in range(2):
        j = state[S_BEST + side]
        f[S_TOP + 2 * side] = _price(state, side, j) if j >= 0 else np.nan
        f[S_TOP + 2 * side + 1] = ladder[side, j] if j >= 0 else np.nan


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _clear(ladder, table, state):
    """Empty both sides (the grid and the windows' bases stay)."""
    _zero_ladder(ladder, state)
    table[0].view(np.int64)[:] = 0
    for s in (S_USED, S_IN_SNAPSHOT, S_NOVER, S_NOVER + 1):
        state[s] = 0
    state[S_BEST] = -1
    state[S_BEST + 1] = -1
    _write_top(ladder, state)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def apply_events(words, ladder, table, state, start):
    """Apply events[start:] as one message (see `_apply`): -1 when done, else the event
    index to resume at after the caller grew the table (or raised state[S_ERROR])."""
    return _apply(words, ladder, table, state, np.empty(0, dtype=np.int64), 0, start,
                  np.empty((0, 4), dtype=np.float64))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def apply_messages_kernel(words, ends, ladder, table, state, first, start, tops):
    """Apply messages first.. one at a time and write the top of book after each into
    tops[m] (see `_apply`). Returns -1 when done, or the event index to resume at (its
    message in state[S_MSG]) after the caller grew the table or raised state[S_ERROR]."""
    return _apply(words, ladder, table, state, ends, first, start, tops)


@nb.njit(cache=True, nogil=True, error_model="numpy")
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


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _table_levels(table, side):
    """The table's levels of one side, best first: (prices, qtys)."""
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


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _depth(ladder, table, state, side, n):
    """The best min(n, levels) levels of one side: the ladder from its best down, then the
    table's levels sorted. Returns (prices, qtys), float64."""
    prices = np.empty(n, dtype=np.float64)
    qtys = np.empty(n, dtype=np.float64)
    c = 0
    j = state[S_BEST + side]
    while c < n and j >= 0:
        if ladder[side, j] != 0.0:
            prices[c] = _price(state, side, j)
            qtys[c] = ladder[side, j]
            c += 1
        j -= 1
    if c < n and state[S_NOVER + side] > 0:
        tp, tq = _table_levels(table, side)
        for i in range(min(n - c, tp.shape[0])):
            prices[c] = tp[i]
            qtys[c] = tq[i]
            c += 1
    return prices[:c], qtys[:c]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _level_qty(ladder, table, state, side, price, rtol):
    """The quantity of one side's level at `price` (the grid price within rtol of it once the
    grid is known), 0.0 when that side has no level there: the ladder slot of its tick, or the
    table (below the window, and during a snapshot)."""
    f = state.view(np.float64)
    if state[S_HAS_GRID] and not state[S_IN_SNAPSHOT]:
        t = np.floor(price * f[S_INV] + 0.5)
        if not abs(t) * f[S_UNITS_F] < MAX_UNITS:  # also NaN
            return 0.0
        grid = t * f[S_UNITS_F] / f[S_SCALE]
        if not abs(grid - price) <= rtol * abs(grid):
            return 0.0
        j = np.int64(t if side == 0 else -t) - state[S_BASE + side]
        if j >= ladder.shape[1]:
            return 0.0
        if j >= 0:
            return ladder[side, j]
        price = grid
    key = np.empty(1, dtype=np.float64)
    key[0] = price if side == 0 else -price
    found, _ = _slot(table[0].view(np.int64), key.view(np.int64)[0])
    return table[1, found] if found >= 0 else 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _count(ladder, state, side):
    """Levels of one side: the ladder's occupied slots plus the table's."""
    n = state[S_NOVER + side]
    for j in range(state[S_BEST + side] + 1):
        n += ladder[side, j] != 0.0
    return n


def _grid_of(tick_size: float) -> tuple[int, int]:
    """(decimals d, units g) with tick_size == g / 10**d, for a decimal tick size."""
    if not (math.isfinite(tick_size) and tick_size > 0):
        raise BookError(f"tick_size must be a positive finite price step, got {tick_size}")
    d = int(_decimals(tick_size))
    if d < 0:
        raise BookError(f"tick_size must be a decimal step with at most {MAX_DECIMALS} "
                        f"decimals, got {tick_size!r}")
    return d, round(tick_size * 10**d)


class L2Book:
    """Price-level book of one symbol (see the module docstring for the layout).

    symbol_id: the events' symbol_id this book follows. capacity: levels the overflow table
    holds before its first growth. tick_size: the venue's price step when known (symbol
    metadata), else None: inferred from the first snapshot (and refined when a finer price
    appears). window: ladder slots (ticks) per side. `valid` is False until a snapshot
    completed; BookSync clears it on a sequence gap. Prices and quantities are float64 in venue
    units; an empty side reads as NaN. Raises BookError for bad arguments.
    """

    def __init__(self, symbol_id: int, capacity: int = 1024, tick_size: float | None = None,
                 window: int = WINDOW):
        if not 0 < symbol_id < 2**32:
            raise BookError(f"symbol_id must be in 1..2**32-1, got {symbol_id}")
        if not 8 <= capacity <= MAX_TABLE // 2:
            raise BookError(f"capacity must be in 8..{MAX_TABLE // 2} levels, got {capacity}")
        if not MIN_WINDOW <= window <= MAX_WINDOW:
            raise BookError(f"window must be in {MIN_WINDOW}..{MAX_WINDOW} ticks, got {window}")
        self.symbol_id = symbol_id
        self.valid = False
        self._ladder = np.zeros((2, window), dtype=np.float64)
        self._state = np.zeros(STATE_SIZE, dtype=np.int64)
        self._state[S_SYMBOL] = symbol_id
        self._state[S_BEST] = self._state[S_BEST + 1] = -1
        self._fstate = self._state.view(np.float64)
        self._fstate[S_TOP:S_TOP + 4] = np.nan
        if tick_size is not None:
            _set_grid(self._state, *_grid_of(tick_size))
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
        snapshot brackets. Other events are ignored. Sets `valid` after a snapshot. Raises
        BookError for a price that is not positive and finite or on no decimal grid (the
        events before it are applied)."""
        if not events.flags.c_contiguous:
            events = np.ascontiguousarray(events)
        # frombuffer, not .view(): numba's dispatcher types an int64 view whose base is a
        # structured array ~5x slower (measured 5.3 vs 1.2 µs per call)
        words = np.frombuffer(events, dtype=np.int64)
        state = self._state
        snapshots = state[S_SNAPSHOTS]
        try:
            stop = apply_events(words, self._ladder, self._table, state, 0)
            while stop >= 0:
                self._resolve()
                stop = apply_events(words, self._ladder, self._table, state, stop)
        finally:
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
        Raises ValueError for ends that do not partition events, BookError as `apply`.
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
        try:
            stop = apply_messages_kernel(words, ends, self._ladder, self._table, state, 0, 0,
                                         tops)
            while stop >= 0:
                self._resolve()
                stop = apply_messages_kernel(words, ends, self._ladder, self._table, state,
                                             state[S_MSG], stop, tops)
        finally:
            if state[S_SNAPSHOTS] != snapshots:
                self.valid = True
        return tops

    def _resolve(self) -> None:
        """A kernel stopped: raise its error, or grow the table for the room it needs."""
        state = self._state
        error = int(state[S_ERROR])
        if error != E_NONE:
            state[S_ERROR] = E_NONE
            bad = float(state.view(np.float64)[S_BAD])
            if error == E_PRICE:
                raise BookError(f"symbol {self.symbol_id}: expected a positive finite price, "
                                f"got {bad}")
            raise BookError(f"symbol {self.symbol_id}: expected prices that are decimals with "
                            f"at most {MAX_DECIMALS} decimals (a tick grid), got {bad!r}")
        self._grow(int(state[S_NEED]))

    def _grow(self, need: int = 0) -> None:
        """Rehash into a table with room for `need` more levels (doubled when half full)."""
        old = self._table
        state = self._state
        live = int(state[S_NOVER] + state[S_NOVER + 1])
        size = old.shape[1] * (2 if live >= old.shape[1] * MAX_LOAD / 2 else 1)
        while live + need > size * MAX_LOAD:
            size *= 2
        if size > MAX_TABLE:
            raise BookError(f"book of symbol {self.symbol_id} exceeds {MAX_TABLE} slots")
        self._new_table(size)
        _rehash(old, self._table, state)

    def clear(self) -> None:
        """Empty both sides and mark the book invalid."""
        _clear(self._ladder, self._table, self._state)
        self.valid = False

    # ---- reads -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Levels the overflow table holds before it grows."""
        return int(self._state[S_LIMIT])

    @property
    def window(self) -> int:
        """Ladder slots (ticks) per side."""
        return int(self._ladder.shape[1])

    @property
    def tick_size(self) -> float:
        """The price step of the ladder (given, inferred or refined); NaN before any."""
        state = self._state
        if not state[S_HAS_GRID]:
            return math.nan
        return int(state[S_TICK_UNITS]) / 10.0 ** int(state[S_DECIMALS])

    @property
    def rebuilds(self) -> int:
        """Ladder rebuilds (snapshots, re-centring, tick refinement) since construction."""
        return int(self._state[S_REBUILDS])

    @property
    def n_bids(self) -> int:
        """Bid levels (counted: O(window))."""
        return int(_count(self._ladder, self._state, 0))

    @property
    def n_asks(self) -> int:
        """Ask levels (counted: O(window))."""
        return int(_count(self._ladder, self._state, 1))

    @property
    def updates(self) -> int:
        """Level updates applied outside snapshots since construction."""
        return int(self._state[S_UPDATES])

    # the kernels leave the top of book in state[S_TOP:S_TOP + 4] (float64)
    @property
    def best_bid(self) -> float:
        return float(self._fstate[S_TOP])

    @property
    def best_ask(self) -> float:
        return float(self._fstate[S_TOP + 2])

    @property
    def best_bid_qty(self) -> float:
        return float(self._fstate[S_TOP + 1])

    @property
    def best_ask_qty(self) -> float:
        return float(self._fstate[S_TOP + 3])

    def top(self) -> tuple[float, float, float, float]:
        """(best bid, bid qty, best ask, ask qty); NaN for an empty side."""
        bid, bid_qty, ask, ask_qty = self._fstate[S_TOP:S_TOP + 4].tolist()
        return bid, bid_qty, ask, ask_qty

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
        ask_qtys), each float64 of shape (min(n, levels on that side),); new arrays. The
        ladder is walked from the best; past it, the overflow's levels are sorted."""
        if n < 0:
            raise ValueError(f"depth needs n >= 0, got {n}")
        bp, bq = _depth(self._ladder, self._table, self._state, 0, n)
        ap, aq = _depth(self._ladder, self._table, self._state, 1, n)
        return bp, bq, ap, aq

    def level_qty(self, bid: bool, price: float, rtol: float = 0.0) -> float:
        """The quantity (venue units) of the bid (bid=True) or ask level at `price`, anywhere
        in the book (ladder or overflow table, O(1)); 0.0 when that side has no level there.
        rtol (>= 0): once the tick size is known, a price within rtol (relative) of a grid
        price reads that level (an order price computed in floating point, 0.1 + 0.2)."""
        return float(_level_qty(self._ladder, self._table, self._state, 0 if bid else 1,
                                float(price), float(rtol)))

    def __repr__(self) -> str:
        return (f"L2Book(symbol_id={self.symbol_id}, bids={self.n_bids}, asks={self.n_asks}, "
                f"best={self.best_bid}/{self.best_ask}, tick={self.tick_size}, "
                f"valid={self.valid})")


def _warm() -> None:
    """Compile (or load from the numba cache) the kernels on import: snapshot, deltas in and
    below the window, a re-centre, a finer tick, a table growth, depth past the ladder, a
    level's quantity."""
    ev = np.zeros(10, dtype=EVENT_DTYPE)
    ev["symbol_id"] = 1
    ev["kind"] = [K_SNAP_BEGIN, K_BID, K_ASK, K_SNAP_END, K_BID, K_ASK, K_BID, K_ASK, K_BID, K_ASK]
    ev["flags"] = [F_SNAPSHOT, F_SNAPSHOT, F_SNAPSHOT, F_SNAPSHOT, 0, 0, 0, 0, 0, 0]
    ev["price"] = [0.0, 10.0, 11.0, 0.0, 9.0, 40.0, 10.5, 11.0, 90.0, 2.0]
    ev["qty"] = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    book = L2Book(1, capacity=8, window=MIN_WINDOW)
    book.apply(ev)
    book._grow(64)
    book.depth(200)
    book.level_qty(True, 9.0, 1e-9)
    L2Book(1, tick_size=0.5).apply_messages(ev, np.array([4, 10], dtype=np.int64))


_warm()
