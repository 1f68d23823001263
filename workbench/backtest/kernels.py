"""Numba kernels of the backtester (all `cache=True`, warmed on import of this module).

`on_bar` and `on_break` hold the trading rules and the execution model for one symbol and one
bar (`hold_bar` is the held-position part of `on_bar`, `volume_confirmed` the volume test);
every phase applies them (phases 0-2 through `.py_func`, the same source run by the
interpreter), so the phases differ only in how they walk the bars, which is what they measure.

`run_symbol` (phase 3's walk of one symbol's row of the aligned arrays) is smarter than phases
0-2, with identical trades and PnL: a first pass computes the running volume sum (`volume_sums`,
O(1) per bar) and from it one flag per bar (has data, warmed up, volume confirmed); then the walk
visits only the bars where something can happen. Flat with nothing pending it jumps from flag to
flag (on any other flat bar `on_bar` changes nothing and asks no break test) and scans the N-bar
high and low only there; holding a position with nothing pending it runs `hold_bar` alone in a
tight loop until an exit is decided (that is all `on_bar` does on such a bar); every other bar
(a fill, a watched fakeout, the symbol's last bar) goes through `on_bar`. The walk writes every
element of its mtm row and prefetches nothing itself: the first pass prefetches the rows.
`run_serial` (phase 3) loops over symbols; symbols with data on every bar between their first
and last get their flags 4 at a time (`volume_flags4`: one symbol's running sum is a chain of
dependent additions, 4 chains overlap), and it lays the trades out itself. `run_parallel`
(phase 4) runs `run_symbol` for every symbol with `prange`.

Execution model (documented once, here): decisions are taken at a bar's close and fill at the
symbol's next bar with data, at its open, moved against us by the slippage (bp) and charged the
fee (bp of notional) per fill. One position per symbol. Positions are sized for equal risk:
notional = risk_per_trade / stop, so a stopped trade of any symbol loses about the same share of
capital. A position still open on the symbol's last bar is closed at that bar's close (reason
END). PnL is in units of initial capital; `mtm[s, t]` is symbol s's marked-to-market PnL change
over bar t (fees included), so its sum over a trade equals the trade's PnL up to rounding.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# parameter vector (float64), built by strategies.pack_params
P_KIND, P_LOOKBACK, P_VOL_WINDOW, P_VOL_MULT, P_STOP, P_TARGET, P_MAX_HOLD, P_CONFIRM = range(8)
P_FEE, P_SLIP, P_NOTIONAL = 8, 9, 10
N_PARAMS = 11
KIND_BREAKOUT, KIND_FAKEOUT = 0.0, 1.0

# per-symbol state: a tuple of N_STATE floats (kept in registers by the kernels), stored in a
# float64 [N_STATE] row between calls; the S_CLOSED_* fields describe the last closed trade
S_POS, S_PENDING, S_REASON, S_ENTRY_PX, S_ENTRY_T, S_HELD, S_REF = range(7)
S_BRK_DIR, S_BRK_LEVEL, S_BRK_AGE, S_NTRADES = 7, 8, 9, 10
S_STOP_PX, S_TARGET_PX, S_SCALE = 11, 12, 13
S_CLOSED_SIDE, S_CLOSED_PX, S_CLOSED_PNL = 14, 15, 16
N_STATE = 17
PENDING_EXIT = 2.0

# trade record (float64 row)
T_ENTRY, T_EXIT, T_SIDE, T_ENTRY_PX, T_EXIT_PX, T_REASON, T_HELD, T_PNL = range(8)
N_TRADE_FIELDS = 8
REASON_STOP, REASON_TARGET, REASON_TIME, REASON_END = 1.0, 2.0, 3.0, 4.0
REASONS = {1: "stop", 2: "target", 3: "time", 4: "end"}
_ONE = np.uint64(1)
PREFETCH_AHEAD = 64  # bars: a cache line is 8 bars of float64, DRAM latency about 100 ns
_AHEAD = np.uint64(PREFETCH_AHEAD)
_SEVEN = np.uint64(7)


@intrinsic
def prefetch(typingctx, rows, idx):
    """Hint the CPU to bring the cache line of row[idx] in, for every array in the tuple rows
    (LLVM `llvm.prefetch`: read, high locality). A hint: it never faults, also past the end of
    a row, and changes no result. Emitted straight from the tuple: binding the arrays to loop
    variables would cost reference counting on every call."""
    sig = types.void(rows, idx)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        for k, aryty in enumerate(signature.args[0]):
            ary = context.make_array(aryty)(context, builder, builder.extract_value(args[0], k))
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _exit(raw_px, reason, p, st, d):
    """Fill the exit at raw_px (less slippage): returns the flat state (the closed trade in the
    S_CLOSED_* fields, the count of trades + 1) and the bar's PnL change d plus the exit's."""
    (pos, _pd, _rs, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
     sc) = st[:14]
    notional = p[P_NOTIONAL]
    px = raw_px * (1.0 - pos * p[P_SLIP])
    d += sc * (px - ref) - notional * p[P_FEE]
    pnl = notional * (pos * (px - entry) / entry - 2.0 * p[P_FEE])
    return (0.0, 0.0, reason, entry, entry_t, held, px, bdir, blevel, bage, ntr + 1.0, stop_px,
            tgt_px, sc, pos, px, pnl), d


@njit(cache=True, inline="always")
def volume_confirmed(v, vsum, p):
    """The volume test: v at least k times the M-bar mean, i.e. v * M >= k * vsum (vsum: sum
    of the previous M bars' volumes; False when vsum is NaN)."""
    return v * p[P_VOL_WINDOW] >= p[P_VOL_MULT] * vsum


@njit(cache=True, inline="always")
def hold_bar(c, pos, ref, sc, held, stop_px, tgt_px, max_hold):
    """One bar of a held position (side pos, +1 or -1) closing at c: returns (pnl change,
    bars held, exit reason or 0). The PnL change is sc x (c - ref), ref the previous mark.
    A stop is hit when the close reaches stop_px = entry x (1 - side x stop), a target at
    tgt_px = entry x (1 + side x target), both fixed at the entry fill; time after max_hold."""
    held += 1.0
    d = sc * (c - ref)
    if pos * c <= pos * stop_px:
        reason = REASON_STOP
    elif pos * c >= pos * tgt_px:
        reason = REASON_TARGET
    elif held >= max_hold:
        reason = REASON_TIME
    else:
        reason = 0.0
    return d, held, reason


@njit(cache=True, inline="always")
def on_bar(t, o, c, vol_ok, ready, is_last, p, st):
    """Apply one bar of one symbol up to the break test.

    Returns (state, test, pnl, closed): the new state tuple; True when a break must be tested
    (`on_break` with the range), i.e. flat, ready, not the last bar, not watching a break, and
    vol_ok; the bar's marked-to-market PnL change (capital units, fees included); True when a
    trade closed on this bar (at most one can; `write_trade` records it from the state).

    t: clock index (int); o, c: open and close price; vol_ok: the bar's volume is confirmed
    (`volume_confirmed`); ready: N and M bars of history exist; is_last: the symbol's last
    bar. p: params (tuple of N_PARAMS floats); st: state tuple [N_STATE]. Exits: `hold_bar`.
    """
    d = 0.0
    closed = False
    if st[S_PENDING] == PENDING_EXIT:
        st, d = _exit(o, st[S_REASON], p, st, d)
        closed = True
    (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
     sc) = st[:14]
    if pend != 0.0:
        pos = pend
        pend = 0.0
        entry = o * (1.0 + pos * p[P_SLIP])
        entry_t = t
        held = 0.0
        ref = entry
        stop_px = entry * (1.0 - pos * p[P_STOP])
        tgt_px = entry * (1.0 + pos * p[P_TARGET])
        sc = p[P_NOTIONAL] * pos / entry
        d -= p[P_NOTIONAL] * p[P_FEE]
    test = False
    if pos != 0.0:
        dd, held, reason = hold_bar(c, pos, ref, sc, held, stop_px, tgt_px, p[P_MAX_HOLD])
        d += dd
        ref = c
        if reason != 0.0:
            pend = PENDING_EXIT
    elif ready and not is_last:
        if bdir != 0.0:
            bage += 1.0
            if (bdir > 0.0 and c < blevel) or (bdir < 0.0 and c > blevel):
                pend = -bdir
                bdir = 0.0
            elif bage >= p[P_CONFIRM]:
                bdir = 0.0
        test = pend == 0.0 and bdir == 0.0 and vol_ok
    st = (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
          sc, st[S_CLOSED_SIDE], st[S_CLOSED_PX], st[S_CLOSED_PNL])
    if is_last and pos != 0.0:
        st, d = _exit(c, REASON_END, p, st, d)
        closed = True
    return st, test, d, closed


@njit(cache=True, inline="always")
def on_break(c, hi, lo, p, st):
    """The break test after `on_bar` asked for it: close above the previous N bars' highest
    high (up) or below their lowest low (down). TrueBreakout orders the break's direction;
    Fakeout starts watching the broken level for `confirm` bars. Returns the state tuple."""
    if c > hi:
        brk = 1.0
        level = hi
    elif c < lo:
        brk = -1.0
        level = lo
    else:
        return st
    (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
     sc, c_side, c_px, c_pnl) = st
    if p[P_KIND] == KIND_BREAKOUT:
        pend = brk
    else:
        bdir = brk
        blevel = level
        bage = 0.0
    return (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
            sc, c_side, c_px, c_pnl)


@njit(cache=True)
def write_trade(trades, t, st):
    """Record the trade `on_bar` just closed (bar t) at row st[S_NTRADES] - 1 of trades
    [capacity, N_TRADE_FIELDS]."""
    row = trades[int(st[S_NTRADES]) - 1]
    row[T_ENTRY] = st[S_ENTRY_T]
    row[T_EXIT] = t
    row[T_SIDE] = st[S_CLOSED_SIDE]
    row[T_ENTRY_PX] = st[S_ENTRY_PX]
    row[T_EXIT_PX] = st[S_CLOSED_PX]
    row[T_REASON] = st[S_REASON]
    row[T_HELD] = st[S_HELD]
    row[T_PNL] = st[S_CLOSED_PNL]


def initial_state() -> tuple[float, ...]:
    """A symbol's state before its first bar (flat, nothing pending, no trades)."""
    return (0.0,) * N_STATE


@njit(cache=True)
def volume_sums(v, mask, m, out, ahead):
    """Running sum of the volumes of the previous m bars with data, at each bar with data:
    out[t] (float64 [T]) = sum of v over those bars, NaN until m bars precede (and where mask
    is False). O(1) per bar: add the new bar, subtract the one m bars back (found by walking a
    tail index over the mask), no buffer. The sum is a chain of dependent additions, so the
    loop waits on it; meanwhile it prefetches the rows in `ahead` (a tuple of [T] arrays that
    the caller reads next) PREFETCH_AHEAD bars ahead."""
    vsum = 0.0
    tail = 0
    j = 0
    for t in range(v.shape[0]):
        if t & 7 == 0:
            prefetch(ahead, t + PREFETCH_AHEAD)
        if not mask[t]:
            out[t] = np.nan
            continue
        out[t] = vsum if j >= m else np.nan
        vsum += v[t]
        if j == 0:
            tail = t
        if j >= m:
            vsum -= v[tail]
            tail += 1
            while not mask[tail]:
                tail += 1
        j += 1


def volume_mean(v: np.ndarray, mask: np.ndarray, m: int) -> np.ndarray:
    """Mean volume of the previous `m` bars with data (float64 [T], NaN where undefined): the
    kernels' running sum / m. On gap-free data it equals polars `rolling_mean(m).shift(1)` up
    to rounding."""
    out = np.empty(v.shape[0])
    volume_sums(v, mask, m, out, (v,))
    return out / m


@njit(cache=True, inline="always")
def window_range(h, lo_, mask, t, n_look):
    """Highest high and lowest low of the n_look bars with data before bar t (t: uint64, at
    least n_look such bars precede). One branch-free pass when those are the n_look clock bars
    right before t, else a walk back over the mask. Indices are unsigned: no wraparound
    checks."""
    hi, lo = -np.inf, np.inf
    full = True
    for i in range(t - np.uint64(n_look), t):
        x, y = h[i], lo_[i]
        hi = x if x > hi else hi
        lo = y if y < lo else lo
        full &= mask[i]
    if full:
        return hi, lo
    hi, lo, n, i = -np.inf, np.inf, n_look, t
    while n > 0:
        i -= _ONE
        if mask[i]:
            x, y = h[i], lo_[i]
            hi = x if x > hi else hi
            lo = y if y < lo else lo
            n -= 1
    return hi, lo


@njit(cache=True)
def volume_flags(v, mask, vs, warm, p, flags):
    """flags[t] (bool [T]) = bar t has data, at least `warm` bars with data precede it, and
    `volume_confirmed(v[t], vs[t])` (vs: `volume_sums`, NaN where undefined). Returns the clock
    index of the first bar with `warm` bars with data before it (T when there is none)."""
    n_t = v.shape[0]
    ready_t = n_t
    j = 0
    for t in range(n_t):
        if mask[t]:
            if j == warm:
                ready_t = t
                break
            j += 1
    for t in range(n_t):
        flags[t] = (t >= ready_t) & volume_confirmed(v[t], vs[t], p)
    return ready_t



@njit(cache=True)
def symbol_flags(o, h, lo_, c, v, mask, mtm, p, flags):
    """One symbol's volume flags (`volume_flags`) from its running volume sums (`volume_sums`,
    prefetching the rows the walk reads next); any row, gaps included. Returns ready_t."""
    m = int(p[P_VOL_WINDOW])
    vs = np.empty(v.shape[0])
    volume_sums(v, mask, m, vs, (o, h, lo_, c, mtm))
    return volume_flags(v, mask, vs, max(int(p[P_LOOKBACK]), m), p, flags)


@njit(cache=True)
def _flags_span(v, t_from, t_to, first, m, warm, p, vsum, flags):
    """`volume_sums` + `volume_flags` over bars t_from <= t < t_to of a row with data on every
    bar from `first` on: the running sum carried in and returned, the same additions in the
    same order (no mask, the tail is t - m)."""
    for t in range(t_from, t_to):
        j = t - first
        flags[t] = (j >= warm) & volume_confirmed(v[t], vsum, p)
        vsum += v[t]
        if j >= m:
            vsum -= v[t - m]
    return vsum


@njit(cache=True)
def volume_flags4(v4, f4, first, last, p, ahead):
    """`symbol_flags` for 4 rows with data on every bar from first[i] to last[i] (v4, f4:
    tuples of 4 volume and flag rows): the 4 running sums advance in one loop over the bars
    all 4 share, so the 4 chains of dependent additions overlap (one symbol's sum alone waits
    about 6 cycles a bar). Bit-identical to `symbol_flags`: same additions, same order. Prefetches
    the rows in `ahead`. Returns the 4 ready_t."""
    m = int(p[P_VOL_WINDOW])
    warm = max(int(p[P_LOOKBACK]), m)
    t0 = max(first[0], first[1], first[2], first[3]) + m
    t1 = min(last[0], last[1], last[2], last[3]) + 1
    va, vb, vc, vd = v4
    fa, fb, fc, fd = f4
    ra, rb, rc, rd = (np.uint64(first[0] + warm), np.uint64(first[1] + warm),
                      np.uint64(first[2] + warm), np.uint64(first[3] + warm))
    if t0 >= t1:  # no span shared after the first m bars: one row at a time
        for i in range(4):
            _flags_span(v4[i], first[i], last[i] + 1, first[i], m, warm, p, 0.0, f4[i])
        return ra, rb, rc, rd
    sa = _flags_span(va, first[0], t0, first[0], m, warm, p, 0.0, fa)
    sb = _flags_span(vb, first[1], t0, first[1], m, warm, p, 0.0, fb)
    sc = _flags_span(vc, first[2], t0, first[2], m, warm, p, 0.0, fc)
    sd = _flags_span(vd, first[3], t0, first[3], m, warm, p, 0.0, fd)
    mu = np.uint64(m)
    for t in range(np.uint64(t0), np.uint64(t1)):
        if t & _SEVEN == 0:
            prefetch(ahead, t + _AHEAD)
        x = va[t]
        fa[t] = (t >= ra) & volume_confirmed(x, sa, p)
        sa = (sa + x) - va[t - mu]
        x = vb[t]
        fb[t] = (t >= rb) & volume_confirmed(x, sb, p)
        sb = (sb + x) - vb[t - mu]
        x = vc[t]
        fc[t] = (t >= rc) & volume_confirmed(x, sc, p)
        sc = (sc + x) - vc[t - mu]
        x = vd[t]
        fd[t] = (t >= rd) & volume_confirmed(x, sd, p)
        sd = (sd + x) - vd[t - mu]
    _flags_span(va, t1, last[0] + 1, first[0], m, warm, p, sa, fa)
    _flags_span(vb, t1, last[1] + 1, first[1], m, warm, p, sb, fb)
    _flags_span(vc, t1, last[2] + 1, first[2], m, warm, p, sc, fc)
    _flags_span(vd, t1, last[3] + 1, first[3], m, warm, p, sd, fd)
    return ra, rb, rc, rd


@njit(cache=True, error_model="numpy")
def walk_symbol(o, h, lo_, c, mask, flags, ready_t, last_t, p, st, trades, mtm):
    """Walk one symbol's bars (float64 [T] rows, mask and flags bool [T] from `symbol_flags`,
    ready_t its first ready bar, last_t its last clock index with data, -1 for none) from and
    back into its state st (float64 [N_STATE]); trades appended, every element of mtm [T]
    written (0.0 where the PnL does not change: the caller need not zero it). How: the module
    docstring.

    Time indices are uint64 (no wraparound checks). Per-bar helpers take scalars and the state
    tuple; the array helpers (`window_range`, `write_trade`) are inlined.
    """
    n_look = int(p[P_LOOKBACK])
    max_hold = p[P_MAX_HOLD]
    n_t = np.uint64(o.shape[0])
    last = np.uint64(last_t) if last_t >= 0 else n_t
    ready_t = np.uint64(ready_t)
    pt = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10])
    state = (st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10],
             st[11], st[12], st[13], st[14], st[15], st[16])
    t = np.uint64(0)
    while t < n_t:
        (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr, stop_px, tgt_px,
         sc, c_side, c_px, c_pnl) = state
        if pos != 0.0 and pend == 0.0 and t < last:
            # holding, nothing pending: hold_bar alone until an exit or the last bar
            reason = 0.0
            while t < last and reason == 0.0:
                if mask[t]:
                    ct = c[t]
                    dd, held, reason = hold_bar(ct, pos, ref, sc, held, stop_px, tgt_px,
                                                max_hold)
                    mtm[t] = 0.0 + dd
                    ref = ct
                else:
                    mtm[t] = 0.0
                t += _ONE
            if reason != 0.0:
                pend = PENDING_EXIT
            state = (pos, pend, reason, entry, entry_t, held, ref, bdir, blevel, bage, ntr,
                     stop_px, tgt_px, sc, c_side, c_px, c_pnl)
            continue
        if pos == 0.0 and pend == 0.0 and bdir == 0.0:
            # flat, nothing pending or watched: only a flagged bar before the last can act
            while t < n_t and not flags[t]:
                mtm[t] = 0.0
                t += _ONE
            if t >= last:
                break
            mtm[t] = 0.0
            test = True
        else:
            if not mask[t]:
                mtm[t] = 0.0
                t += _ONE
                continue
            state, test, d, closed = on_bar(t, o[t], c[t], flags[t], t >= ready_t, t == last,
                                            pt, state)
            mtm[t] = d
            if closed:
                write_trade(trades, t, state)
        if test:
            hi, lo = window_range(h, lo_, mask, t, n_look)
            state = on_break(c[t], hi, lo, pt, state)
        t += _ONE
    for i in range(t, n_t):
        mtm[i] = 0.0
    for i in range(N_STATE):
        st[i] = state[i]


@njit(cache=True)
def run_symbol(o, h, lo_, c, v, mask, last_t, p, st, trades, mtm):
    """One symbol: `symbol_flags` then `walk_symbol` (rows [T]; see those)."""
    flags = np.empty(o.shape[0], dtype=np.bool_)
    ready_t = symbol_flags(o, h, lo_, c, v, mask, mtm, p, flags)
    walk_symbol(o, h, lo_, c, mask, flags, ready_t, last_t, p, st, trades, mtm)


@njit(cache=True)
def run_serial(o, h, lo_, c, v, mask, last_t, p, state, mtm):
    """Phase 3: every symbol in turn. Arrays [S, T] (C order), last_t int64 [S], p [N_PARAMS],
    state [S, N_STATE] (zeros), mtm [S, T] (every element written: it can come from np.empty).
    Returns the trades as `compact_trades` does, float64 [n, 1 + N_TRADE_FIELDS] ordered by
    symbol then entry: each symbol's walk appends to one buffer sized for the most trades
    possible, and the result is a view of its first n rows (only the rows written are ever
    touched: fresh pages cost a fault each).

    Symbols with data on every bar from their first to their last go 4 at a time through
    `volume_flags4` (the next 4 such symbols, when a symbol's walk needs its flags), each then
    walked in symbol order with its rows prefetched; the others through `run_symbol`."""
    n_sym, n_t = o.shape
    trades = np.empty((n_sym * trade_capacity(n_t), 1 + N_TRADE_FIELDS))
    flags = np.empty((4, n_t), dtype=np.bool_)  # the current group's rows
    ready = np.empty(4, dtype=np.int64)
    slot = np.full(n_sym, -1)  # a symbol's row in the current group
    first = np.empty(n_sym, dtype=np.int64)
    gap_free = np.zeros(n_sym, dtype=np.bool_)
    for s in range(n_sym):
        row = mask[s]
        f = 0
        while f < n_t and not row[f]:
            f += 1
        first[s] = f
        n_data = 0
        for t in range(n_t):
            n_data += row[t]
        gap_free[s] = last_t[s] >= 0 and n_data == last_t[s] - f + 1
    n = 0
    for s in range(n_sym):
        if gap_free[s] and slot[s] < 0:
            g = np.empty(4, dtype=np.int64)
            k = 0
            for x in range(s, n_sym):
                if gap_free[x] and k < 4:
                    g[k] = x
                    k += 1
            if k == 4:
                a, b, cc, d = g[0], g[1], g[2], g[3]
                flags[:] = False
                ra, rb, rc, rd = volume_flags4(
                    (v[a], v[b], v[cc], v[d]), (flags[0], flags[1], flags[2], flags[3]),
                    (first[a], first[b], first[cc], first[d]),
                    (last_t[a], last_t[b], last_t[cc], last_t[d]), p,
                    (o[a], h[a], lo_[a], c[a], mtm[a], o[b], h[b], lo_[b], c[b], mtm[b],
                     o[cc], h[cc], lo_[cc], c[cc], mtm[cc], o[d], h[d], lo_[d], c[d], mtm[d]))
                ready[0], ready[1], ready[2], ready[3] = ra, rb, rc, rd
                for i in range(4):
                    slot[g[i]] = i
        out = trades[n:, 1:]
        if slot[s] >= 0:
            i = slot[s]
            walk_symbol(o[s], h[s], lo_[s], c[s], mask[s], flags[i], ready[i], last_t[s], p,
                        state[s], out, mtm[s])
        else:
            run_symbol(o[s], h[s], lo_[s], c[s], v[s], mask[s], last_t[s], p, state[s], out,
                       mtm[s])
        n_s = int(state[s, S_NTRADES])
        trades[n:n + n_s, 0] = s
        n += n_s
    return trades[:n]


@njit(cache=True, parallel=True)
def run_parallel(o, h, lo_, c, v, mask, last_t, p, state, trades, mtm):
    """Phase 4: `run_symbol` for every symbol, spread over threads (`prange`)."""
    for s in prange(o.shape[0]):
        run_symbol(o[s], h[s], lo_[s], c[s], v[s], mask[s], last_t[s], p, state[s], trades[s],
                   mtm[s])


@njit(cache=True)
def compact_trades(state, trades):
    """Every symbol's trades in one float64 [n, 1 + N_TRADE_FIELDS] array: column 0 the symbol
    index, then the trade record; ordered by symbol, then entry."""
    n = 0
    for s in range(state.shape[0]):
        n += int(state[s, S_NTRADES])
    out = np.empty((n, 1 + N_TRADE_FIELDS))
    r = 0
    for s in range(state.shape[0]):
        for i in range(int(state[s, S_NTRADES])):
            out[r, 0] = s
            out[r, 1:] = trades[s, i]
            r += 1
    return out


@njit(cache=True)
def trade_capacity(n_bars: int) -> int:
    """Most trades one symbol can make on n_bars bars (a trade spans at least 2 bars, but
    the last one may open and end on the same bar)."""
    return n_bars // 2 + 2


def _warm() -> None:
    """Compile (or load from the numba cache) every kernel with the signatures used."""
    s, n = 1, 4
    x = np.ones((s, n))
    mask = np.ones((s, n), dtype=np.bool_)
    p = np.zeros(N_PARAMS)
    p[P_LOOKBACK] = p[P_VOL_WINDOW] = p[P_MAX_HOLD] = p[P_CONFIRM] = 1.0
    last_t = np.full(s, n - 1, np.int64)
    run_serial(x, x, x, x, x, mask, last_t, p, np.zeros((s, N_STATE)), np.empty((s, n)))
    trades = np.empty((s, trade_capacity(n), N_TRADE_FIELDS))
    run_parallel(x, x, x, x, x, mask, last_t, p, np.zeros((s, N_STATE)), trades,
                 np.empty((s, n)))
    volume_mean(np.ones(n), np.ones(n, dtype=np.bool_), 2)
    compact_trades(np.zeros((s, N_STATE)), trades)


_warm()
