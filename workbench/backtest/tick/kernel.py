"""The tick simulation kernel: two timelines, an exchange with queue models, a compiled strategy.

One compiled loop (`run`) over a window of converted rows (`events.TickData`: EVENT_DTYPE with
TF_EXCH / TF_LOCAL flags) that picks, at each step, the earliest of four things (ties in this
order): the next local row (the strategy's feed, at ts_recv_ns), the next order response
reaching the strategy, the next exchange row (at ts_event_ns), the next order request reaching
the exchange. After the local rows of one local timestamp and everything else due at or
before it, the strategy's `on_feed(gw)` runs at that time; its requests leave then. This is
hftbacktest's event loop with `wait_next_feed` (nkaz001/hftbacktest, hftbacktest/src/
backtest/mod.rs `Backtest::goto` and evs.rs `EventSet`: the tie order LocalData < LocalOrder
< ExchData < ExchOrder; a last feed with nothing after it ends the data without a call).

Books: one L2 depth per timeline (exchange, local), dense float64 arrays over the ticks
[roi_lb, roi_ub] (rows priced outside are ignored), best bid / ask kept as hftbacktest's
`ROIVectorMarketDepth` keeps them (hftbacktest/src/depth/roivectormarketdepth.rs): a level
whose quantity rounds to 0 lots is empty; a new best bid at or above the best ask moves the
best ask to the next level above it (the crossed levels stay until updated). SNAPSHOT_BEGIN
clears both sides; trades do not change the depth. BBO events are not depth.

Exchange (`NoPartialFillExchange`'s rules, hftbacktest/src/backtest/proc/
nopartialfillexchange.rs, with `partial=0`):
- a new limit buy at or above the best ask: GTX (post-only) expires; GTC/IOC fills its whole
  quantity at the best ask (taker); a market buy the same; else it rests (GTC/GTX; IOC
  expires) with the queue model's initial position; sells mirror it;
- a resting buy fills whole (maker, at its price) when the best ask falls to or below it, when
  a sell trade prints below its price, or when a sell trade at its price leaves it
  `queue.executable` quantity; sells mirror it;
- cancel: cancelled if still resting, else the request is rejected.
With `partial=1` (ours, not parity-checked): a taker walks the levels up to its limit taking
min(leaves, level qty) each (the depth is not depleted by our fills); the rest of a GTC limit
rests, of a market or IOC order is cancelled; a maker fills min(leaves, executable) on a trade
at its price and min(leaves, trade qty) on a trade through it, whole when the book crosses it.
Fees: price * qty * maker or taker rate (hftbacktest's `TradingValueFeeModel`).

Numba's cache (`cache=True`) keys a function on its own file only: after editing
engine/queue_models.py or latency.py, whose functions are compiled into these, delete
workbench/backtest/tick/__pycache__/*.nbi and *.nbc (a stale kernel keeps the old model otherwise).

`run` works on arrays and scalars only (the strategy's `Gateway` too is six arrays), so it is
cached and compiled without reference counting (`_nrt=False`: no allocation inside); what runs
per row or per feed is inlined into it (`inline="always"`: a call passing a dozen arrays, each
a 7-word struct, cost about as much as the row's own work). It never
calls the strategy: it returns at each feed and fill, and the host calls the strategy and
calls `run` again, which resumes where it stopped (`drive`: a compiled loop that does this for
a compiled strategy, cached per strategy class; `drive_jitclass` for a jitclass strategy;
`pyhost.PythonHost` for a Python one).

Statuses returned: END (data done), NEED_DATA (a cursor reached the window's end: the caller
loads the next window and calls again), LOG_FULL (a log is full: the caller drains it), FEED
(a feed is complete: the host runs the strategy's on_feed on the gateway; the next call sends
what it queued), FILL (a response booked a fill, in S_FILL_ID / S_FILL_SIDE / F_FILL_PRICE /
F_FILL_QTY: the host runs on_fill; the next call applies the rest of that time's responses).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from workbench.backtest.tick import latency as lat
from workbench.backtest.tick.unlinked import unlinked
from workbench.engine import queue_models as qm
from workbench.engine.compiled import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    GF_LAST_PRICE,
    GF_LAST_QTY,
    GF_POSITION,
    GI_LAST_SIDE,
    GI_N_REQ,
    GTX,
    INVALID_MAX,
    INVALID_MIN,
    IOC,
    MARKET,
    NEW,
    NONE,
    PARTIALLY_FILLED,
    REQ_CANCEL,
    RI_ID,
    RI_KIND,
    RI_SIDE,
    RI_TICK,
    RI_TIF,
    RI_TYPE,
    SELL,
    gateway_from,
    gw_apply_response,
    gw_set_book,
)
from workbench.events import K_ASK, K_BID, K_SNAP_BEGIN, K_TRADE, S_BUY

END, NEED_DATA, LOG_FULL, FEED, FILL = 0, 1, 2, 3, 4
TF_EXCH, TF_LOCAL = 0x100, 0x200
NO_TARGET = np.iinfo(np.int64).max - 1
MAX_TS = np.iinfo(np.int64).max

# st (int64 state) slots
S_LCUR, S_ECUR, S_TARGET, S_BXH, S_BXN, S_BLH, S_BLN, S_REJECTED = range(8)
S_NX, S_NF, S_NO, S_NR, S_NEXTREC, S_LATE, S_LATR, S_EVENTS, S_FEEDS, S_CUR = range(8, 18)
# the next local / exchange row (absolute index); -1: not looked for, -2: none in the window
S_LNEXT, S_ENEXT = 18, 19
# a yielded feed's requests still to send (1) / the local row index the feed's rows start at
S_AFTER_FEED, S_FEED_FROM = 20, 21
# a fill for the host's on_fill (order id, side); responses of time S_RESP_T still to apply (1)
S_FILL_ID, S_FILL_SIDE, S_RESP_PENDING, S_RESP_T = 22, 23, 24, 25
STATE_SIZE = 26
# sf (float64 state): the strategy side's cash and fees; the host's fill (price, qty)
F_BALANCE, F_FEES, F_FILL_PRICE, F_FILL_QTY = range(4)
SF_SIZE = 4
# p_i / p_f parameters
P_QMODEL, P_PARTIAL, P_LATMODE, P_ENTRY, P_RESP, P_REC_EVERY, P_SID, P_LB, P_UB = range(9)
PF_MAKER, PF_TAKER, PF_TICK, PF_LOT, PF_N = range(5)
# exchange orders: xi columns, xf columns
XI_ID, XI_SIDE, XI_TICK, XI_TYPE, XI_TIF, XI_LOCAL, XI_EXCH = range(7)
XF_QTY, XF_LEAVES, XF_FRONT, XF_CUM = range(4)
# requests to the exchange (bx) and responses to the strategy (bl)
BX_TS, BX_KIND, BX_ID, BX_SIDE, BX_TICK, BX_TYPE, BX_TIF, BX_LOCAL = range(8)
BL_TS, BL_ID, BL_STATUS, BL_REQ, BL_EXEC_TICK, BL_EXCH, BL_REJECTED, BL_LOCAL = range(8)
BLF_LEAVES, BLF_EXEC, BLF_FEE = range(3)
# logs: fills (fl), orders as they reached the exchange (ol), records (rc)
FL_ID, FL_SIDE, FL_TICK, FL_EXCH, FL_LOCAL, FL_MAKER, FL_SENT = range(7)
FLF_QTY, FLF_FEE, FLF_MID = range(3)
OL_ID, OL_SIDE, OL_TICK, OL_TYPE, OL_TIF, OL_SENT, OL_EXCH, OL_STATUS = range(8)
OLF_QTY, OLF_FRONT = range(2)
RC_TS = 0
RCF_MID, RCF_POS, RCF_BAL, RCF_FEES, RCF_BID_FRONT, RCF_ASK_FRONT = range(6)


# ---- depth ----------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always", _nrt=False)
def _below(d, start, end, lb, ub):  # pragma: no cover - compiled
    s = min(start, ub) - lb
    e = max(end, lb) - lb
    for t in range(s - 1, e - 1, -1):
        if d[t] > 0.0:
            return t + lb
    return INVALID_MIN


@nb.njit(cache=True, inline="always", _nrt=False)
def _above(d, start, end, lb, ub):  # pragma: no cover - compiled
    s = max(start, lb) - lb
    e = min(end, ub) - lb
    for t in range(s + 1, e + 1):
        if d[t] > 0.0:
            return t + lb
    return INVALID_MAX


@nb.njit(cache=True, inline="always", _nrt=False)
def update_level(depth, bst, b, bid, tick, qty, lot, lb, ub):  # pragma: no cover - compiled
    """Set the level `tick` of book b's bid (bid=True) or ask side to `qty`. Returns
    (prev best tick of that side, new best tick, prev qty at tick)."""
    s = 0 if bid else 1
    prev_best = bst[b, s]
    if tick < lb or tick > ub:
        return prev_best, prev_best, 0.0
    t = tick - lb
    prev_qty = depth[b, s, t]
    depth[b, s, t] = qty
    empty = np.round(qty / lot) == 0
    bd = depth[b, 0]
    ad = depth[b, 1]
    if bid:
        if empty:
            if tick == bst[b, 0]:
                bst[b, 0] = _below(bd, bst[b, 0], bst[b, 2], lb, ub)
                if bst[b, 0] == INVALID_MIN:
                    bst[b, 2] = INVALID_MAX
        else:
            if tick > bst[b, 0]:
                bst[b, 0] = tick
                if bst[b, 0] >= bst[b, 1]:
                    bst[b, 1] = _above(ad, bst[b, 0], bst[b, 3], lb, ub)
            bst[b, 2] = min(bst[b, 2], tick)
    else:
        if empty:
            if tick == bst[b, 1]:
                bst[b, 1] = _above(ad, bst[b, 1], bst[b, 3], lb, ub)
                if bst[b, 1] == INVALID_MAX:
                    bst[b, 3] = INVALID_MIN
        else:
            if tick < bst[b, 1]:
                bst[b, 1] = tick
                if bst[b, 0] >= bst[b, 1]:
                    bst[b, 0] = _below(bd, bst[b, 1], bst[b, 2], lb, ub)
            bst[b, 3] = max(bst[b, 3], tick)
    return prev_best, bst[b, s], prev_qty


@nb.njit(cache=True, _nrt=False)
def clear_book(depth, bst, b):  # pragma: no cover - compiled
    """Empty both sides of book b."""
    depth[b].fill(0.0)
    bst[b, 0] = INVALID_MIN
    bst[b, 1] = INVALID_MAX
    bst[b, 2] = INVALID_MAX
    bst[b, 3] = INVALID_MIN


@nb.njit(cache=True, inline="always", _nrt=False)
def qty_at(depth, b, s, tick, lb, ub):  # pragma: no cover - compiled
    if tick < lb or tick > ub:
        return 0.0
    return depth[b, s, tick - lb]


@nb.njit(cache=True, inline="always", _nrt=False)
def _mid(bst, b, tick):  # pragma: no cover - compiled
    if bst[b, 0] == INVALID_MIN or bst[b, 1] == INVALID_MAX:
        return np.nan
    return (bst[b, 0] + bst[b, 1]) * 0.5 * tick


# ---- buses ----------------------------------------------------------------------------------
@nb.njit(cache=True, _nrt=False)
def _push_bx(bx_i, bx_f, st, ts, kind, oid, side, tick, otype, tif, local, qty
             ):  # pragma: no cover - compiled
    cap = len(bx_i)
    if st[S_BXN] > 0:  # FIFO: no earlier than the newest queued (hftbacktest's OrderBus::append)
        ts = max(ts, bx_i[(st[S_BXH] + st[S_BXN] - 1) % cap, BX_TS])
    j = (st[S_BXH] + st[S_BXN]) % cap
    bx_i[j, BX_TS] = ts
    bx_i[j, BX_KIND] = kind
    bx_i[j, BX_ID] = oid
    bx_i[j, BX_SIDE] = side
    bx_i[j, BX_TICK] = tick
    bx_i[j, BX_TYPE] = otype
    bx_i[j, BX_TIF] = tif
    bx_i[j, BX_LOCAL] = local
    bx_f[j, 0] = qty
    st[S_BXN] += 1


@nb.njit(cache=True, _nrt=False)
def _push_bl(bl_i, bl_f, st, ts, oid, status, req, exec_tick, exch, rejected, local, leaves,
             exec_qty, fee):  # pragma: no cover - compiled
    cap = len(bl_i)
    if st[S_BLN] > 0:
        ts = max(ts, bl_i[(st[S_BLH] + st[S_BLN] - 1) % cap, BL_TS])
    j = (st[S_BLH] + st[S_BLN]) % cap
    bl_i[j, BL_TS] = ts
    bl_i[j, BL_ID] = oid
    bl_i[j, BL_STATUS] = status
    bl_i[j, BL_REQ] = req
    bl_i[j, BL_EXEC_TICK] = exec_tick
    bl_i[j, BL_EXCH] = exch
    bl_i[j, BL_REJECTED] = rejected
    bl_i[j, BL_LOCAL] = local
    bl_f[j, BLF_LEAVES] = leaves
    bl_f[j, BLF_EXEC] = exec_qty
    bl_f[j, BLF_FEE] = fee
    st[S_BLN] += 1
    return ts


# ---- the exchange ---------------------------------------------------------------------------
@nb.njit(cache=True, _nrt=False)
def _fill(x, qty, tick, maker, ts, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i, bl_f,
          fl_i, fl_f):  # pragma: no cover - compiled
    """Execute qty of exchange order x at `tick`, log it and respond."""
    tick_size = p_f[PF_TICK]
    price = tick * tick_size
    fee = price * qty * (p_f[PF_MAKER] if maker else p_f[PF_TAKER])
    xf[x, XF_LEAVES] -= qty
    if xf[x, XF_LEAVES] <= p_f[PF_LOT] * 1e-6:
        xf[x, XF_LEAVES] = 0.0
    status = FILLED if xf[x, XF_LEAVES] == 0.0 else PARTIALLY_FILLED
    cur = st[S_LATR:S_LATR + 1]
    arrive = ts + lat.response(p_i[P_LATMODE], p_i[P_RESP], lat_rows, cur, ts)
    arrive = _push_bl(bl_i, bl_f, st, arrive, xi[x, XI_ID], status, NONE, tick, ts, 0,
                      xi[x, XI_LOCAL], xf[x, XF_LEAVES], qty, fee)
    f = st[S_NF]
    fl_i[f, FL_ID] = xi[x, XI_ID]
    fl_i[f, FL_SIDE] = xi[x, XI_SIDE]
    fl_i[f, FL_TICK] = tick
    fl_i[f, FL_EXCH] = ts
    fl_i[f, FL_LOCAL] = arrive
    fl_i[f, FL_MAKER] = 1 if maker else 0
    fl_i[f, FL_SENT] = xi[x, XI_LOCAL]
    fl_f[f, FLF_QTY] = qty
    fl_f[f, FLF_FEE] = fee
    fl_f[f, FLF_MID] = _mid(bst, 0, tick_size)
    st[S_NF] = f + 1
    return status


@nb.njit(cache=True, _nrt=False)
def _remove_done(st, xi, xf):  # pragma: no cover - compiled
    """Drop exchange orders with nothing left (keeps the order of the others)."""
    k = 0
    for x in range(st[S_NX]):
        if xf[x, XF_LEAVES] > 0.0:
            if k != x:
                for c in range(xi.shape[1]):
                    xi[k, c] = xi[x, c]
                for c in range(xf.shape[1]):
                    xf[k, c] = xf[x, c]
            k += 1
    st[S_NX] = k


@nb.njit(cache=True, _nrt=False)
def _take(x, buy, limit_tick, ts, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i, bl_f, fl_i,
          fl_f):  # pragma: no cover - compiled
    """The marketable part of order x: whole at the best (partial=0) or walking the levels."""
    lb, ub = p_i[P_LB], p_i[P_UB]
    best = bst[0, 1] if buy else bst[0, 0]
    if p_i[P_PARTIAL] == 0:
        return _fill(x, xf[x, XF_LEAVES], best, False, ts, p_i, p_f, lat_rows, st, depth, bst,
                     xi, xf, bl_i, bl_f, fl_i, fl_f)
    status = NEW
    t = best
    end = bst[0, 3] if buy else bst[0, 2]
    while xf[x, XF_LEAVES] > 0.0 and (t <= end if buy else t >= end):
        if (buy and t > limit_tick) or (not buy and t < limit_tick):
            break
        q = qty_at(depth, 0, 1 if buy else 0, t, lb, ub)
        if q > 0.0:
            status = _fill(x, min(xf[x, XF_LEAVES], q), t, False, ts, p_i, p_f, lat_rows, st,
                           depth, bst, xi, xf, bl_i, bl_f, fl_i, fl_f)
        t += 1 if buy else -1
    return status


@nb.njit(cache=True, _nrt=False)
def _new_order(j, ts, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bx_i, bx_f, bl_i, bl_f, fl_i,
               fl_f, ol_i, ol_f):  # pragma: no cover - compiled
    """A new-order request reaches the exchange at ts (ack_new)."""
    lb, ub = p_i[P_LB], p_i[P_UB]
    x = st[S_NX]
    if x >= len(xi):  # the exchange's order table is full: refuse
        st[S_REJECTED] += 1
        cur = st[S_LATR:S_LATR + 1]
        arrive = ts + lat.response(p_i[P_LATMODE], p_i[P_RESP], lat_rows, cur, ts)
        _push_bl(bl_i, bl_f, st, arrive, bx_i[j, BX_ID], EXPIRED, NONE, 0, ts, 0,
                 bx_i[j, BX_LOCAL], 0.0, 0.0, 0.0)
        return
    xi[x, XI_ID] = bx_i[j, BX_ID]
    xi[x, XI_SIDE] = bx_i[j, BX_SIDE]
    xi[x, XI_TICK] = bx_i[j, BX_TICK]
    xi[x, XI_TYPE] = bx_i[j, BX_TYPE]
    xi[x, XI_TIF] = bx_i[j, BX_TIF]
    xi[x, XI_LOCAL] = bx_i[j, BX_LOCAL]
    xi[x, XI_EXCH] = ts
    xf[x, XF_QTY] = bx_f[j, 0]
    xf[x, XF_LEAVES] = bx_f[j, 0]
    xf[x, XF_FRONT] = 0.0
    xf[x, XF_CUM] = 0.0
    buy = xi[x, XI_SIDE] == BUY
    tick = xi[x, XI_TICK]
    tif = xi[x, XI_TIF]
    opp_best = bst[0, 1] if buy else bst[0, 0]
    crosses = xi[x, XI_TYPE] == MARKET or (tick >= opp_best if buy else tick <= opp_best)
    status = NEW
    front = np.nan
    if crosses and tif == GTX and xi[x, XI_TYPE] != MARKET:
        status = EXPIRED
    elif crosses:
        if (buy and opp_best == INVALID_MAX) or (not buy and opp_best == INVALID_MIN):
            status = EXPIRED  # nothing to take
        else:
            status = _take(x, buy, tick if xi[x, XI_TYPE] != MARKET else
                           (INVALID_MAX if buy else INVALID_MIN), ts, p_i, p_f, lat_rows, st,
                           depth, bst, xi, xf, bl_i, bl_f, fl_i, fl_f)
            if xf[x, XF_LEAVES] > 0.0:
                if xi[x, XI_TYPE] == MARKET or tif == IOC:
                    status = CANCELED
                else:
                    front = qty_at(depth, 0, 0 if buy else 1, tick, lb, ub)
                    xf[x, XF_FRONT] = front
                    status = NEW if status == NEW else PARTIALLY_FILLED
    elif tif == IOC:
        status = EXPIRED
    else:
        front = qty_at(depth, 0, 0 if buy else 1, tick, lb, ub)
        xf[x, XF_FRONT] = front
    o = st[S_NO]
    ol_i[o, OL_ID] = xi[x, XI_ID]
    ol_i[o, OL_SIDE] = xi[x, XI_SIDE]
    ol_i[o, OL_TICK] = tick
    ol_i[o, OL_TYPE] = xi[x, XI_TYPE]
    ol_i[o, OL_TIF] = tif
    ol_i[o, OL_SENT] = xi[x, XI_LOCAL]
    ol_i[o, OL_EXCH] = ts
    ol_i[o, OL_STATUS] = status
    ol_f[o, OLF_QTY] = xf[x, XF_QTY]
    ol_f[o, OLF_FRONT] = front
    st[S_NO] = o + 1
    if status == FILLED:
        return  # the fill's response is the order's response (no second one)
    if status in (NEW, PARTIALLY_FILLED):
        st[S_NX] = x + 1  # rests
        if status == PARTIALLY_FILLED:
            return
    cur = st[S_LATR:S_LATR + 1]
    arrive = ts + lat.response(p_i[P_LATMODE], p_i[P_RESP], lat_rows, cur, ts)
    _push_bl(bl_i, bl_f, st, arrive, xi[x, XI_ID], status, NONE, 0, ts, 0, xi[x, XI_LOCAL],
             xf[x, XF_LEAVES], 0.0, 0.0)


@nb.njit(cache=True, _nrt=False)
def _cancel_order(j, ts, p_i, lat_rows, st, xi, xf, bx_i, bl_i, bl_f
                  ):  # pragma: no cover - compiled
    """A cancel request reaches the exchange at ts (ack_cancel)."""
    oid = bx_i[j, BX_ID]
    found = -1
    for x in range(st[S_NX]):
        if xi[x, XI_ID] == oid:
            found = x
            break
    cur = st[S_LATR:S_LATR + 1]
    arrive = ts + lat.response(p_i[P_LATMODE], p_i[P_RESP], lat_rows, cur, ts)
    if found < 0:
        _push_bl(bl_i, bl_f, st, arrive, oid, NEW, NONE, 0, ts, 1, bx_i[j, BX_LOCAL], 0.0, 0.0,
                 0.0)
        return
    _push_bl(bl_i, bl_f, st, arrive, oid, CANCELED, NONE, 0, ts, 0, xi[found, XI_LOCAL],
             xf[found, XF_LEAVES], 0.0, 0.0)
    xf[found, XF_LEAVES] = 0.0
    _remove_done(st, xi, xf)


@nb.njit(cache=True, inline="always", _nrt=False)
def _exch_row(row, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i, bl_f, fl_i, fl_f
              ):  # pragma: no cover - compiled
    """The exchange processes one row at its exchange time."""
    lb, ub = p_i[P_LB], p_i[P_UB]
    tick_size, lot = p_f[PF_TICK], p_f[PF_LOT]
    qmodel, qn, partial = p_i[P_QMODEL], p_f[PF_N], p_i[P_PARTIAL]
    kind = row.kind
    ts = row.ts_event_ns
    if kind == K_SNAP_BEGIN:
        clear_book(depth, bst, 0)
        return
    if kind in (K_BID, K_ASK):
        bid = kind == K_BID
        tick = np.int64(np.round(row.price / tick_size))
        prev_best, new_best, prev_qty = update_level(depth, bst, 0, bid, tick, row.qty, lot, lb,
                                                     ub)
        n = st[S_NX]
        if n == 0:
            return
        side = BUY if bid else SELL
        for x in range(n):
            if xi[x, XI_SIDE] == side and xi[x, XI_TICK] == tick:
                xf[x, XF_FRONT], xf[x, XF_CUM] = qm.on_depth(qmodel, qn, xf[x, XF_FRONT],
                                                            xf[x, XF_CUM], prev_qty, row.qty)
        done = False
        if bid and new_best > prev_best:
            for x in range(n):
                if xi[x, XI_SIDE] == SELL and xi[x, XI_TICK] <= new_best:
                    _fill(x, xf[x, XF_LEAVES], xi[x, XI_TICK], True, ts, p_i, p_f, lat_rows,
                          st, depth, bst, xi, xf, bl_i, bl_f, fl_i, fl_f)
                    done = True
        elif not bid and new_best < prev_best:
            for x in range(n):
                if xi[x, XI_SIDE] == BUY and xi[x, XI_TICK] >= new_best:
                    _fill(x, xf[x, XF_LEAVES], xi[x, XI_TICK], True, ts, p_i, p_f, lat_rows,
                          st, depth, bst, xi, xf, bl_i, bl_f, fl_i, fl_f)
                    done = True
        if done:
            _remove_done(st, xi, xf)
        return
    if kind == K_TRADE:
        n = st[S_NX]
        if n == 0:
            return
        tick = np.int64(np.round(row.price / tick_size))
        against = SELL if row.side == S_BUY else BUY  # a buy trade fills resting sells
        done = False
        for x in range(n):
            if xi[x, XI_SIDE] != against:
                continue
            ot = xi[x, XI_TICK]
            through = ot < tick if against == SELL else ot > tick
            if through:
                q = xf[x, XF_LEAVES] if partial == 0 else min(xf[x, XF_LEAVES], row.qty)
                _fill(x, q, ot, True, ts, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i,
                      bl_f, fl_i, fl_f)
                done = True
            elif ot == tick:
                xf[x, XF_FRONT], xf[x, XF_CUM] = qm.on_trade(xf[x, XF_FRONT], xf[x, XF_CUM],
                                                            row.qty)
                ex = qm.executable(xf[x, XF_FRONT], lot)
                if ex > 0.0:
                    xf[x, XF_FRONT] = 0.0
                    q = xf[x, XF_LEAVES] if partial == 0 else min(xf[x, XF_LEAVES], ex)
                    _fill(x, q, ot, True, ts, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i,
                          bl_f, fl_i, fl_f)
                    done = True
        if done:
            _remove_done(st, xi, xf)


# ---- the strategy side ----------------------------------------------------------------------
@nb.njit(cache=True, inline="always", _nrt=False)
def _local_row(row, p_i, p_f, depth, bst, gi, gf):  # pragma: no cover - compiled
    kind = row.kind
    if kind == K_SNAP_BEGIN:
        clear_book(depth, bst, 1)
    elif kind in (K_BID, K_ASK):
        tick = np.int64(np.round(row.price / p_f[PF_TICK]))
        update_level(depth, bst, 1, kind == K_BID, tick, row.qty, p_f[PF_LOT], p_i[P_LB],
                     p_i[P_UB])
    elif kind == K_TRADE:
        gf[GF_LAST_PRICE] = row.price
        gf[GF_LAST_QTY] = row.qty
        gi[GI_LAST_SIDE] = BUY if row.side == S_BUY else SELL


@nb.njit(cache=True, _nrt=False)
def _send(p_i, lat_rows, st, bx_i, bx_f, bl_i, bl_f, gi, ri, rf):  # pragma: no cover - compiled
    """Drain the gateway's requests into the exchange bus (or reject them: negative entry)."""
    now = st[S_CUR]
    for k in range(gi[GI_N_REQ]):
        cur = st[S_LATE:S_LATE + 1]
        e = lat.entry(p_i[P_LATMODE], p_i[P_ENTRY], lat_rows, cur, now)
        if e < 0:
            _push_bl(bl_i, bl_f, st, now - e, ri[k, RI_ID], NEW, NONE, 0, 0, 1, now, 0.0, 0.0,
                     0.0)
            continue
        _push_bx(bx_i, bx_f, st, now + e, ri[k, RI_KIND], ri[k, RI_ID], ri[k, RI_SIDE],
                 ri[k, RI_TICK], ri[k, RI_TYPE], ri[k, RI_TIF], now, rf[k])
    gi[GI_N_REQ] = 0


@nb.njit(cache=True, _nrt=False)
def _record(p_f, st, sf, depth, bst, xi, xf, rc_i, rc_f, gf):  # pragma: no cover - compiled
    r = st[S_NR]
    rc_i[r] = st[S_CUR]
    rc_f[r, RCF_MID] = _mid(bst, 1, p_f[PF_TICK])
    rc_f[r, RCF_POS] = gf[GF_POSITION]
    rc_f[r, RCF_BAL] = sf[F_BALANCE]
    rc_f[r, RCF_FEES] = sf[F_FEES]
    rc_f[r, RCF_BID_FRONT] = np.nan
    rc_f[r, RCF_ASK_FRONT] = np.nan
    for x in range(st[S_NX]):
        c = RCF_BID_FRONT if xi[x, XI_SIDE] == BUY else RCF_ASK_FRONT
        if rc_f[r, c] != rc_f[r, c]:
            rc_f[r, c] = max(xf[x, XF_FRONT], 0.0)
    st[S_NR] = r + 1


@nb.njit(cache=True, inline="always", _nrt=False)
def _responses(t, p_f, st, sf, bl_i, bl_f, gi, gf, oi, of):  # pragma: no cover - compiled
    """Every response due at t reaches the strategy (hftbacktest's process_recv_order).
    Returns True when one booked a fill: the fill is in S_FILL_* / F_FILL_* for the host's
    on_fill, and the next call goes on with the rest due at t (S_RESP_PENDING)."""
    cap = len(bl_i)
    st[S_RESP_PENDING] = 0
    while st[S_BLN] > 0 and bl_i[st[S_BLH], BL_TS] == t:
        j = st[S_BLH]
        st[S_BLH] = (j + 1) % cap
        st[S_BLN] -= 1
        status = bl_i[j, BL_STATUS]
        filled = gw_apply_response(gi, gf, oi, of, bl_i[j, BL_ID], status, bl_i[j, BL_REQ],
                                   bl_f[j, BLF_LEAVES], bl_f[j, BLF_EXEC],
                                   bl_i[j, BL_EXEC_TICK], bl_i[j, BL_EXCH], bl_f[j, BLF_FEE],
                                   bl_i[j, BL_REJECTED] == 1, bl_i[j, BL_LOCAL])
        if filled != 0.0:
            price = bl_i[j, BL_EXEC_TICK] * p_f[PF_TICK]
            sf[F_BALANCE] -= filled * price
            sf[F_FEES] += bl_f[j, BLF_FEE]
            st[S_FILL_ID] = bl_i[j, BL_ID]
            st[S_FILL_SIDE] = BUY if filled > 0 else SELL
            sf[F_FILL_PRICE] = price
            sf[F_FILL_QTY] = abs(filled)
            st[S_RESP_PENDING] = 1
            st[S_RESP_T] = t
            return True
    return False


@nb.njit(cache=True, inline="always", _nrt=False)
def _after_feed(p_i, p_f, lat_rows, st, sf, depth, bst, xi, xf, bx_i, bx_f, bl_i, bl_f, rc_i,
                rc_f, gi, gf, ri, rf):  # pragma: no cover - compiled
    """After the strategy's call: send its requests, record the state when due."""
    if gi[GI_N_REQ]:
        _send(p_i, lat_rows, st, bx_i, bx_f, bl_i, bl_f, gi, ri, rf)
    if st[S_CUR] >= st[S_NEXTREC]:
        _record(p_f, st, sf, depth, bst, xi, xf, rc_i, rc_f, gf)
        st[S_NEXTREC] = st[S_CUR] + p_i[P_REC_EVERY]


@nb.njit(cache=True, inline="always", _nrt=False)
def _find(rows, base, start, flag, sid):  # pragma: no cover - compiled
    """Index (absolute) of the next row from `start` with `flag` and symbol sid; -1 if the
    window ends first."""
    for i in range(start - base, len(rows)):
        r = rows[i]
        if r.flags & flag and r.symbol_id == sid:
            return i + base
    return -1


@nb.njit(cache=True, _nrt=False)
def run(rows, base, last, p_i, p_f, lat_rows, depth, bst, xi, xf, bx_i, bx_f, bl_i, bl_f, st,
        sf, fl_i, fl_f, ol_i, ol_f, rc_i, rc_f, gi, gf, oi, of, ri, rf
        ):  # pragma: no cover - compiled
    """Advance the simulation over the window rows[...] (absolute index of rows[0]: base;
    last: no rows after it) with the gateway's arrays gi, gf, oi, of, ri, rf
    (`workbench.engine.compiled.Gateway`). Returns END, NEED_DATA, LOG_FULL, FEED or FILL
    (module docstring); all state is in the arrays, so the call resumes where it stopped."""
    sid = p_i[P_SID]
    if st[S_AFTER_FEED]:  # the host ran the strategy of the feed we returned at
        st[S_AFTER_FEED] = 0
        _after_feed(p_i, p_f, lat_rows, st, sf, depth, bst, xi, xf, bx_i, bx_f, bl_i, bl_f,
                    rc_i, rc_f, gi, gf, ri, rf)
    if st[S_RESP_PENDING] and _responses(st[S_RESP_T], p_f, st, sf, bl_i, bl_f, gi, gf, oi, of):
        return FILL  # the host ran on_fill; more responses of that time booked fills
    for slot in (S_LNEXT, S_ENEXT):  # -2: none up to the end of the last window: look again
        if st[slot] == -2:
            st[slot] = -1
    room = min(len(fl_i), len(ol_i), len(rc_i)) - 2 * len(ri) - 2
    cap_x = len(bx_i)
    while True:
        if st[S_NF] >= room or st[S_NO] >= room or st[S_NR] >= room:
            return LOG_FULL
        li = st[S_LNEXT]
        if li == -1:
            li = _find(rows, base, st[S_LCUR], TF_LOCAL, sid)
            st[S_LNEXT] = li if li >= 0 else -2
        ei = st[S_ENEXT]
        if ei == -1:
            ei = _find(rows, base, st[S_ECUR], TF_EXCH, sid)
            st[S_ENEXT] = ei if ei >= 0 else -2
        if (li < 0 or ei < 0) and not last:
            return NEED_DATA
        t_ld = rows[li - base].ts_recv_ns if li >= 0 else MAX_TS
        t_lo = bl_i[st[S_BLH], BL_TS] if st[S_BLN] > 0 else MAX_TS
        t_ed = rows[ei - base].ts_event_ns if ei >= 0 else MAX_TS
        t_eo = bx_i[st[S_BXH], BX_TS] if st[S_BXN] > 0 else MAX_TS
        t = min(t_ld, t_lo, t_ed, t_eo)
        if t == MAX_TS:
            return END
        if t > st[S_TARGET]:  # the feed at S_TARGET is complete: the strategy runs
            st[S_CUR] = st[S_TARGET]
            st[S_TARGET] = NO_TARGET
            st[S_FEEDS] += 1
            gw_set_book(gi, gf, st[S_CUR], bst[1, 0],
                        qty_at(depth, 1, 0, bst[1, 0], p_i[P_LB], p_i[P_UB]), bst[1, 1],
                        qty_at(depth, 1, 1, bst[1, 1], p_i[P_LB], p_i[P_UB]))
            st[S_AFTER_FEED] = 1
            return FEED
        st[S_EVENTS] += 1
        if t == t_ld:
            _local_row(rows[li - base], p_i, p_f, depth, bst, gi, gf)
            st[S_LCUR] = li + 1
            st[S_LNEXT] = -1
            st[S_TARGET] = t
        elif t == t_lo:
            if _responses(t, p_f, st, sf, bl_i, bl_f, gi, gf, oi, of):
                return FILL
        elif t == t_ed:
            _exch_row(rows[ei - base], p_i, p_f, lat_rows, st, depth, bst, xi, xf, bl_i, bl_f,
                      fl_i, fl_f)
            st[S_ECUR] = ei + 1
            st[S_ENEXT] = -1
        else:
            while st[S_BXN] > 0 and bx_i[st[S_BXH], BX_TS] == t:
                j = st[S_BXH]
                st[S_BXH] = (j + 1) % cap_x
                st[S_BXN] -= 1
                if bx_i[j, BX_KIND] == REQ_CANCEL:
                    _cancel_order(j, t, p_i, lat_rows, st, xi, xf, bx_i, bl_i, bl_f)
                else:
                    _new_order(j, t, p_i, p_f, lat_rows, st, depth, bst, xi, xf, bx_i, bx_f,
                               bl_i, bl_f, fl_i, fl_f, ol_i, ol_f)


@nb.njit(inline="always")
def _deliver(strategy, gw, status, st, sf):  # pragma: no cover - compiled
    """Hand a kernel status to the strategy: on_feed(gw) at FEED, on_fill(gw, order_id, side,
    price, qty) at FILL; False for any other status (the run stops there). Inlined into each
    driver, so it is cached with `drive` and works with jitclass strategies too."""
    if status == FEED:
        strategy.on_feed(gw)
    elif status == FILL:
        strategy.on_fill(gw, st[S_FILL_ID], st[S_FILL_SIDE], sf[F_FILL_PRICE], sf[F_FILL_QTY])
    else:
        return False
    return True


@nb.njit(cache=True)
def drive(strategy, rows, base, last, p_i, p_f, lat_rows, depth, bst, xi, xf, bx_i, bx_f, bl_i,
          bl_f, st, sf, fl_i, fl_f, ol_i, ol_f, rc_i, rc_f, gi, gf, oi, of, ri, rf
          ):  # pragma: no cover - compiled
    """`run` with a compiled strategy (`workbench.engine.structs.compiled_class`) and a Gateway
    over the arrays gi..rf: calls the strategy's on_feed(gw) at each FEED and on_fill(gw,
    order_id, side, price, qty) at each FILL, and returns the other statuses. Cached per
    strategy class (its type names a digest of the class's source)."""
    gw = gateway_from(gi, gf, oi, of, ri, rf)
    while True:
        status = run(rows, base, last, p_i, p_f, lat_rows, depth, bst, xi, xf, bx_i, bx_f, bl_i,
                     bl_f, st, sf, fl_i, fl_f, ol_i, ol_f, rc_i, rc_f, gi, gf, oi, of, ri, rf)
        if not _deliver(strategy, gw, status, st, sf):
            return status


_run_by_address = unlinked(run)  # drive_jitclass calls run without re-generating its code


@nb.njit
def drive_jitclass(strategy, rows, base, last, p_i, p_f, lat_rows, depth, bst, xi, xf, bx_i,
                   bx_f, bl_i, bl_f, st, sf, fl_i, fl_f, ol_i, ol_f, rc_i, rc_f, gi, gf, oi, of,
                   ri, rf):  # pragma: no cover - compiled
    """`drive` for a strategy written as a numba jitclass, which numba cannot cache: compiled
    in every process, it calls the cached `run` by address (`unlinked`: linking it would
    re-generate its code here, about a second)."""
    gw = gateway_from(gi, gf, oi, of, ri, rf)
    args = (rows, base, last, p_i, p_f, lat_rows, depth, bst, xi, xf, bx_i, bx_f, bl_i, bl_f, st,
            sf, fl_i, fl_f, ol_i, ol_f, rc_i, rc_f, gi, gf, oi, of, ri, rf)  # built once: no
    while True:  # reference counting of 28 arrays per call
        status = _run_by_address(args)
        if not _deliver(strategy, gw, status, st, sf):
            return status
