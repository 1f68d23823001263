"""Compiled parser of book messages (Binance depth and REST snapshot, Bybit orderbook) straight
into an event batch.

Depth messages are the heavy ones: `{"stream":..,"data":{"e":"depthUpdate","E":..,"U":..,
"u":..,"pu":..,"b":[["61800.20","2.507"],...],"a":[...]}}`. Decoding them with msgspec and then
converting the level lists with numpy costs ~20 µs per message on the Binance USD-M dump (68
levels per message on average); this one-pass scanner reads the ids it needs and writes every
level event (all 64 bytes) into the batch in ~3 µs. Small messages (trades, tickers) stay on
msgspec typed structs, which are faster there.

The scanner is a tolerant JSON walker: objects are entered, values of keys it does not know
are skipped (strings, numbers, nested arrays), and these keys are read:
  integers: U, u, pu, E, T, lastUpdateId, ts, seq, cts -> `head[H_*]` (-1 when absent);
  strings: s, type -> (start, end) byte offsets in `head`;
  level arrays: b / bids (bid side), a / asks (ask side): [[price, qty], ...] as strings or
  numbers.
Numbers are an exact integer mantissa divided by an exact power of ten, so up to 15
significant digits the value is the correctly rounded double, identical to `float(text)`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from workbench.events import K_ASK, K_BID, S_BUY, S_SELL

# return codes (>= 0: number of level events written)
BAD_PRICE = -1
NO_ROOM = -2
BAD_QTY = -3
BAD_SYNTAX = -4

# head slots
H_U, H_u, H_pu, H_E, H_T, H_LAST_UPDATE_ID, H_ts, H_seq, H_cts = range(9)
H_S_START, H_S_END, H_TYPE_START, H_TYPE_END = 9, 10, 11, 12
HEAD_SIZE = 16

POW10 = np.array([10.0**i for i in range(23)], dtype=np.float64)


@nb.njit(cache=True, nogil=True)
def _number(buf, i, n, pow10):
    """Parse one number token at buf[i]; returns (value, next index, ok)."""
    neg = False
    if buf[i] == 45:  # '-'
        neg = True
        i += 1
    mant = 0
    frac = 0
    digits = 0
    seen_dot = False
    any_digit = False
    while i < n:
        c = buf[i]
        if 48 <= c <= 57:
            any_digit = True
            if digits < 18:
                mant = mant * 10 + (c - 48)
                if mant:
                    digits += 1
                if seen_dot:
                    frac += 1
            elif not seen_dot:
                return 0.0, i, False
        elif c == 46 and not seen_dot:  # '.'
            seen_dot = True
        else:
            break
        i += 1
    if not any_digit:
        return 0.0, i, False
    exp = -frac
    if i < n and (buf[i] == 101 or buf[i] == 69):  # 'e' / 'E'
        i += 1
        eneg = False
        if i < n and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        got = False
        while i < n and 48 <= buf[i] <= 57:
            e = e * 10 + (buf[i] - 48)
            got = True
            i += 1
        if not got:
            return 0.0, i, False
        exp += -e if eneg else e
    value = float(mant)
    if exp < 0:
        value = value / pow10[-exp] if -exp < 23 else value * 10.0**exp
    elif exp > 0:
        value = value * pow10[exp] if exp < 23 else value * 10.0**exp
    return (-value if neg else value), i, True


@nb.njit(cache=True, nogil=True)
def _skip_string(buf, i, n):
    """buf[i] is the opening quote; returns the index after the closing quote."""
    i += 1
    while i < n:
        c = buf[i]
        if c == 92:  # backslash
            i += 2
            continue
        if c == 34:
            return i + 1
        i += 1
    return -1


@nb.njit(cache=True, nogil=True)
def _skip_value(buf, i, n):
    """Skip a scalar or array value at buf[i] (objects are entered, not skipped)."""
    c = buf[i]
    if c == 34:
        return _skip_string(buf, i, n)
    if c == 91:  # '[': skip to the matching ']'
        depth = 0
        while i < n:
            c = buf[i]
            if c == 34:
                i = _skip_string(buf, i, n)
                if i < 0:
                    return -1
                continue
            if c == 91:
                depth += 1
            elif c == 93:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    while i < n:  # number, true, false, null
        c = buf[i]
        if c == 44 or c == 125 or c == 93 or c == 32:
            return i
        i += 1
    return i


@nb.njit(cache=True, nogil=True)
def _levels(buf, i, n, floats, sides, row, side, pow10):
    """Parse the level array at buf[i] ('['). Writes price/qty to floats[row+j, 6:8] and
    side codes to sides; returns (next index, count or error code)."""
    cap = floats.shape[0]
    depth = 0
    count = 0
    slot = 0
    price = 0.0
    while i < n:
        c = buf[i]
        if c == 45 or c == 46 or 48 <= c <= 57:
            value, i, ok = _number(buf, i, n, pow10)
            if slot == 0:
                if not ok or not (value > 0.0) or value == np.inf:
                    return i, BAD_PRICE
                price = value
                slot = 1
            else:
                if not ok or not (value >= 0.0) or value == np.inf:
                    return i, BAD_QTY
                if row + count >= cap:
                    return i, NO_ROOM
                floats[row + count, 6] = price
                floats[row + count, 7] = value
                sides[row + count] = side
                count += 1
                slot = 0
            continue
        if c == 91:
            depth += 1
        elif c == 93:
            depth -= 1
            if depth == 0:
                if slot != 0:
                    return i, BAD_SYNTAX
                return i + 1, count
        elif c == 34 or c == 44 or c == 32 or c == 10 or c == 13 or c == 9:
            pass
        else:
            return i, BAD_PRICE if slot == 0 else BAD_QTY
        i += 1
    return i, BAD_SYNTAX


@nb.njit(cache=True, nogil=True)
def _int(buf, i, n):
    neg = buf[i] == 45
    if neg:
        i += 1
    v = 0
    while i < n and 48 <= buf[i] <= 57:
        v = v * 10 + (buf[i] - 48)
        i += 1
    return (-v if neg else v), i


@nb.njit(cache=True, nogil=True)
def parse_book(buf, ints, sides, row, head, pow10):
    """Scan one book message (`buf`: bytes or uint8 array), writing levels from batch `row`.

    ints: the batch as (n, 8) int64; prices/qtys go to its float64 view, columns 6 and 7.
    sides: int8 scratch (n,), 1 for a bid level, 2 for an ask level, per written row.
    head: int64 (HEAD_SIZE,) receives the ids and string offsets (see module docstring).
    Returns the number of levels written, or BAD_PRICE / BAD_QTY / BAD_SYNTAX / NO_ROOM.
    The caller fills the integer columns with `fill_levels` once the ids are known.
    """
    floats = ints.view(np.float64)
    n = len(buf)
    for k in range(HEAD_SIZE):
        head[k] = -1
    i = 0
    total = 0
    while i < n:
        c = buf[i]
        if c != 34:
            i += 1
            continue
        # a string: a key if followed by ':'
        ks = i + 1
        j = _skip_string(buf, i, n)
        if j < 0:
            return BAD_SYNTAX
        ke = j - 1
        while j < n and buf[j] == 32:
            j += 1
        if j >= n or buf[j] != 58:  # ':'
            i = j
            continue
        j += 1
        while j < n and buf[j] == 32:
            j += 1
        if j >= n:
            return BAD_SYNTAX
        klen = ke - ks
        k0 = buf[ks]
        v0 = buf[j]
        if v0 == 123:  # '{': enter the object
            i = j + 1
            continue
        slot = -1
        side = 0
        if klen == 1:
            if k0 == 85:
                slot = H_U
            elif k0 == 117:
                slot = H_u
            elif k0 == 69:
                slot = H_E
            elif k0 == 84:
                slot = H_T
            elif k0 == 98:
                side = 1
            elif k0 == 97:
                side = 2
            elif k0 == 115 and v0 == 34:
                head[H_S_START] = j + 1
                i = _skip_string(buf, j, n)
                head[H_S_END] = i - 1
                continue
        elif klen == 2:
            if k0 == 112 and buf[ks + 1] == 117:
                slot = H_pu
            elif k0 == 116 and buf[ks + 1] == 115:
                slot = H_ts
        elif klen == 3:
            if k0 == 115 and buf[ks + 1] == 101:
                slot = H_seq
            elif k0 == 99 and buf[ks + 1] == 116:
                slot = H_cts
        elif klen == 4:
            if k0 == 98 and buf[ks + 1] == 105:
                side = 1
            elif k0 == 97 and buf[ks + 1] == 115:
                side = 2
            elif k0 == 116 and buf[ks + 1] == 121 and v0 == 34:
                head[H_TYPE_START] = j + 1
                i = _skip_string(buf, j, n)
                head[H_TYPE_END] = i - 1
                continue
        elif klen == 12 and k0 == 108:
            slot = H_LAST_UPDATE_ID
        if side and v0 == 91:
            i, got = _levels(buf, j, n, floats, sides, row + total, side, pow10)
            if got < 0:
                return got
            total += got
            continue
        if slot >= 0 and (v0 == 45 or 48 <= v0 <= 57):
            head[slot], i = _int(buf, j, n)
            continue
        i = _skip_value(buf, j, n)
        if i < 0:
            return BAD_SYNTAX
    return total


@nb.njit(cache=True, nogil=True)
def fill_levels(ints, sides, start, stop, ts_event, recv_ns, seq, venue_seq, symbol_id, flags,
                last_flags):
    """Fill the integer columns of level rows [start, stop) (kind and side from `sides`);
    the last row also gets `last_flags` (LAST_IN_MSG when it ends the message)."""
    base = symbol_id | (flags << 48)
    bid = base | (K_BID << 32) | (S_BUY << 40)
    ask = base | (K_ASK << 32) | (S_SELL << 40)
    for r in range(start, stop):
        ints[r, 0] = ts_event
        ints[r, 1] = recv_ns
        ints[r, 2] = 0
        ints[r, 3] = seq
        ints[r, 4] = venue_seq
        ints[r, 5] = bid if sides[r] == 1 else ask
    if stop > start:
        ints[stop - 1, 5] |= last_flags << 48


def warm() -> None:
    """Compile (or load from cache) the kernels."""
    ints = np.zeros((4, 8), dtype=np.int64)
    sides = np.zeros(4, dtype=np.int8)
    head = np.zeros(HEAD_SIZE, dtype=np.int64)
    msg = b'{"s":"X","type":"delta","u":1,"pu":0,"b":[["1.5","2"]],"a":[[2.5,1e-3]],"x":[1]}'
    parse_book(msg, ints, sides, 0, head, POW10)
    fill_levels(ints, sides, 0, 2, 1, 2, 3, 4, 5, 0, 2)


warm()
