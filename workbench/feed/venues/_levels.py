"""Compiled strict reader of book messages (Binance depth and REST snapshot, Bybit orderbook)
straight into an event batch.

Depth messages are the heavy ones: `{"stream":..,"data":{"e":"depthUpdate","E":..,"U":..,
"u":..,"pu":..,"b":[["61800.20","2.507"],...],"a":[...]}}`. Decoding them with msgspec and then
converting the level lists with numpy costs ~20 µs per message on the Binance USD-M dump (68
levels per message on average); validating them with msgspec before this pass would add ~1.2
µs. This one pass validates the whole message as JSON, reads the ids it needs and writes every
level (price, qty, side) into the batch in ~5 µs. Small messages (trades, tickers) stay on
msgspec typed structs, which are faster there.

`parse_book(buf, ints, sides, row, in_data, bybit, head, pow10)`:
- JSON (RFC 8259): the message must be exactly one JSON object (whitespace around it only).
  Every value is checked, read or not: strings (escapes, no raw control bytes), numbers (the
  section 6 grammar), literals, nesting (at most MAX_DEPTH containers: deeper is BAD_DEPTH).
- The *book object* is the top-level object (in_data False: a bare depthUpdate or a REST body)
  or the object under the top-level key "data" (in_data True: a combined-stream envelope, a
  Bybit message). Keys are read only where the venue documents them, in any order, each once
  (a repeated key is BAD_SCHEMA); the same names elsewhere are only validated.
  Binance (bybit False), in the book object: integers E, T, U, u, pu, lastUpdateId; strings e,
  s; level arrays b / bids (bid side) and a / asks (ask side); at the top of an envelope: the
  string stream. Bybit (bybit True), at the top: strings topic, type; integers ts, cts; in
  `data`: string s, integers u, seq, level arrays b, a.
- Integers: non-negative JSON integers that fit int64 (else BAD_SCHEMA) -> `head[H_*]`, -1
  when absent. Strings: no escapes (else BAD_SCHEMA) -> (start, end) byte offsets in `head`.
  `head[H_SIDES]` gets a bit per level array read (SIDE_B, SIDE_A, SIDE_BIDS, SIDE_ASKS).
- Level arrays: `[[price, qty], ...]`, exactly two values per level, each a JSON number or a
  string holding exactly one (`"61800.20"`, the same grammar, no surrounding space). Price
  finite and > 0 (else BAD_PRICE), qty finite and >= 0 (else BAD_QTY); anything else in the
  array is BAD_SCHEMA.
Numbers are an exact integer mantissa divided by an exact power of ten, so up to 15 significant
digits the value is the correctly rounded double, identical to `float(text)`. Fraction digits
past the 18th significant digit are dropped; an integer part longer than 18 digits is out of
range (a bad value); exponents saturate at +-MAX_EXP (an overflowing exponent gives inf,
refused, never a wrapped small number).

Returns the number of levels written (>= 0) or BAD_PRICE / BAD_QTY / BAD_SYNTAX (not JSON) /
BAD_SCHEMA / BAD_DEPTH / NO_ROOM (the batch is full: grow it and call again). The caller checks
which keys are required and fills the integer columns with `fill_levels` once the symbol is
known.
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
BAD_SCHEMA = -5
BAD_DEPTH = -6

MAX_DEPTH = 62  # nested containers (a bit each in an int64)
MAX_DIGITS = 18  # significant digits kept exactly in the int64 mantissa
MAX_EXP = 400  # exponents saturate here: 1e400 is inf, 1e-400 is 0
MIN_LEVEL_BYTES = 5  # the shortest level, `[1,0]`: a message of n bytes holds < n / 5 levels
INT64_MAX = 2**63 - 1

# head slots: integers (-1 when absent), then (start, end) offsets of strings
H_E, H_T, H_U, H_u, H_pu, H_LAST_UPDATE_ID, H_ts, H_cts, H_seq = range(9)
H_s, H_e, H_TYPE, H_TOPIC, H_STREAM = 9, 11, 13, 15, 17  # start; end is the next slot
H_SIDES = 19
HEAD_SIZE = 20
SIDE_B, SIDE_A, SIDE_BIDS, SIDE_ASKS = 1, 2, 4, 8
# repeated-key mask: bit `slot` for a head slot, bit _SIDE_BITS + side bit for a level array,
# bit _DATA for the "data" key
_SIDE_BITS = 24
_DATA = 40

POW10 = np.array([10.0**i for i in range(23)], dtype=np.float64)

# what a key's value is: skipped (validated only), an integer / string head slot, a level
# array, or the object holding the book
_SKIP, _INT, _STR, _LEVELS, _ENTER = range(5)
# containers expected next by the parser
_VALUE, _AFTER, _KEY, _KEY_OR_END, _VALUE_OR_END = range(5)


def _word(key: str) -> int:
    """A key of at most 8 ASCII bytes as the little-endian integer `_key_word` computes."""
    return int.from_bytes(key.encode(), "little")


W_E, W_T, W_U, W_u, W_e, W_s, W_b, W_a = (_word(k) for k in "ETUuesba")
W_PU, W_TS, W_SEQ, W_CTS = _word("pu"), _word("ts"), _word("seq"), _word("cts")
W_BIDS, W_ASKS, W_DATA, W_TYPE = _word("bids"), _word("asks"), _word("data"), _word("type")
W_TOPIC, W_STREAM = _word("topic"), _word("stream")
LAST_UPDATE_ID = np.frombuffer(b"lastUpdateId", dtype=np.uint8).copy()


@nb.njit(cache=True, nogil=True, inline="always")
def _number(buf, i, n, pow10):
    """Parse one JSON number (RFC 8259 section 6) starting at buf[i]. Returns (value, index
    after the number, ok); ok is False when no valid number starts there or its integer part
    has more than MAX_DIGITS digits."""
    neg = False
    if i < n and buf[i] == 45:  # '-'
        neg = True
        i += 1
    if i >= n or not (48 <= buf[i] <= 57):
        return 0.0, i, False
    mant = 0
    digits = 0
    exp = 0
    if buf[i] == 48:  # a leading zero stands alone
        i += 1
        if i < n and 48 <= buf[i] <= 57:
            return 0.0, i, False
    else:
        while i < n and 48 <= buf[i] <= 57:
            if digits == MAX_DIGITS:
                return 0.0, i, False
            mant = mant * 10 + (buf[i] - 48)
            digits += 1
            i += 1
    if i < n and buf[i] == 46:  # '.'
        i += 1
        if i >= n or not (48 <= buf[i] <= 57):
            return 0.0, i, False
        while i < n and 48 <= buf[i] <= 57:
            if digits < MAX_DIGITS:
                mant = mant * 10 + (buf[i] - 48)
                if mant:
                    digits += 1
                exp -= 1
            i += 1
    if i < n and (buf[i] == 101 or buf[i] == 69):  # 'e' / 'E'
        i += 1
        eneg = False
        if i < n and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        if i >= n or not (48 <= buf[i] <= 57):
            return 0.0, i, False
        e = 0
        while i < n and 48 <= buf[i] <= 57:
            if e < MAX_EXP:
                e = e * 10 + (buf[i] - 48)
            i += 1
        exp += -min(e, MAX_EXP) if eneg else min(e, MAX_EXP)
    value = float(mant)
    if mant == 0:
        value = 0.0
    elif exp < 0:
        value = value / pow10[-exp] if -exp < 23 else value * 10.0**exp
    elif exp > 0:
        value = value * pow10[exp] if exp < 23 else value * 10.0**exp
    return (-value if neg else value), i, True


@nb.njit(cache=True, nogil=True, inline="always")
def _skip_number(buf, i, n):
    """The index after the JSON number at buf[i] (any length), or -1 if none is there."""
    if i < n and buf[i] == 45:
        i += 1
    if i >= n or not (48 <= buf[i] <= 57):
        return -1
    if buf[i] == 48:
        i += 1
    else:
        while i < n and 48 <= buf[i] <= 57:
            i += 1
    if i < n and buf[i] == 46:
        i += 1
        if i >= n or not (48 <= buf[i] <= 57):
            return -1
        while i < n and 48 <= buf[i] <= 57:
            i += 1
    if i < n and (buf[i] == 101 or buf[i] == 69):
        i += 1
        if i < n and (buf[i] == 45 or buf[i] == 43):
            i += 1
        if i >= n or not (48 <= buf[i] <= 57):
            return -1
        while i < n and 48 <= buf[i] <= 57:
            i += 1
    return i


@nb.njit(cache=True, nogil=True, inline="always")
def _int(buf, i, n):
    """A non-negative JSON integer at buf[i] that fits int64: (value, index after). Returns
    (-1, i) for anything else (a sign, a fraction, an exponent, a leading zero, overflow)."""
    if i >= n or not (48 <= buf[i] <= 57):
        return -1, i
    v = 0
    j = i + 1
    if buf[i] != 48:
        j = i
        digits = 0
        while j < n and 48 <= buf[j] <= 57:
            d = buf[j] - 48
            digits += 1
            # 18 digits cannot overflow; check (once, a division) only past them
            if digits > MAX_DIGITS and (digits > MAX_DIGITS + 1 or v > (INT64_MAX - d) // 10):
                return -1, i
            v = v * 10 + d
            j += 1
    if j < n and (buf[j] == 46 or buf[j] == 101 or buf[j] == 69 or 48 <= buf[j] <= 57):
        return -1, i
    return v, j


@nb.njit(cache=True, nogil=True, inline="always")
def _string_end(buf, i, n):
    """buf[i] is an opening quote: the index after the closing quote, or -1 when the string
    is not valid JSON (a bad escape, a raw control byte, no end). Also returns whether it has
    escapes."""
    i += 1
    escaped = False
    while i < n:
        c = buf[i]
        if c == 34:
            return i + 1, escaped
        if c == 92:  # backslash
            escaped = True
            if i + 1 >= n:
                return -1, escaped
            e = buf[i + 1]
            if e == 117:  # \uXXXX
                if i + 5 >= n:
                    return -1, escaped
                for j in range(i + 2, i + 6):
                    h = buf[j]
                    if not (48 <= h <= 57 or 65 <= h <= 70 or 97 <= h <= 102):
                        return -1, escaped
                i += 6
                continue
            if not (e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110
                    or e == 114 or e == 116):
                return -1, escaped
            i += 2
            continue
        if c < 32:
            return -1, escaped
        i += 1
    return -1, escaped


@nb.njit(cache=True, nogil=True, inline="always")
def _literal(buf, i, n):
    """The index after `true`, `false` or `null` at buf[i], or -1."""
    c = buf[i]
    if c == 116 and i + 3 < n and buf[i + 1] == 114 and buf[i + 2] == 117 \
            and buf[i + 3] == 101:
        return i + 4
    if c == 102 and i + 4 < n and buf[i + 1] == 97 and buf[i + 2] == 108 \
            and buf[i + 3] == 115 and buf[i + 4] == 101:
        return i + 5
    if c == 110 and i + 3 < n and buf[i + 1] == 117 and buf[i + 2] == 108 \
            and buf[i + 3] == 108:
        return i + 4
    return -1


@nb.njit(cache=True, nogil=True, inline="always")
def _key_word(buf, ks, klen):
    """Key bytes buf[ks:ks+klen] (klen <= 8) as a little-endian integer."""
    w = 0
    for j in range(klen):
        w |= np.int64(buf[ks + j]) << (8 * j)
    return w


@nb.njit(cache=True, nogil=True, inline="always")
def _level_array(buf, i, n, floats, sides, row, side, pow10):
    """Parse the level array at buf[i] ('['): writes price/qty to floats[row+j, 6:8] and the
    side code to sides[row+j]. Returns (index after the array, levels or an error code).

    One loop over a state (0: a level or the ']' of an empty array, 1: the price, 2: ',',
    3: the qty, 4: ']' ending the level, 5: ',' or the final ']', 6: the next level); helper
    calls other than `_number` are kept out of it (each costs ~15 ns per call here)."""
    cap = floats.shape[0]
    count = 0
    state = 0
    price = 0.0
    i += 1
    while i < n:
        c = buf[i]
        if c == 32 or c == 10 or c == 13 or c == 9:
            i += 1
            continue
        if state == 1 or state == 3:  # a value: a number, or a string holding one
            if c == 34:
                value, j, ok = _number(buf, i + 1, n, pow10)
                ok = ok and j < n and buf[j] == 34
                j += 1
            elif c == 45 or 48 <= c <= 57:
                value, j, ok = _number(buf, i, n, pow10)
            else:
                return i, BAD_SCHEMA
            if state == 1:
                if not ok or not (value > 0.0) or value == np.inf:
                    return i, BAD_PRICE
                price = value
            else:
                if not ok or not (value >= 0.0) or value == np.inf:
                    return i, BAD_QTY
                if row + count >= cap:
                    return i, NO_ROOM
                floats[row + count, 6] = price
                floats[row + count, 7] = value
                sides[row + count] = side
                count += 1
            state += 1
            i = j
            continue
        if state == 0 or state == 6:
            if c == 91:  # '['
                state = 1
            elif c == 93 and state == 0:  # ']': an empty array
                return i + 1, 0
            else:
                return i, BAD_SCHEMA
        elif state == 2:
            if c != 44:  # a level of one value
                return i, BAD_SCHEMA
            state = 3
        elif state == 4:
            if c != 93:  # more than two values
                return i, BAD_SCHEMA
            state = 5
        else:
            if c == 93:
                return i + 1, count
            if c != 44:
                return i, BAD_SCHEMA
            state = 6
        i += 1
    return i, BAD_SYNTAX


@nb.njit(cache=True, nogil=True, inline="always")
def _book_key(buf, ks, klen, bybit):
    """(action, slot or side bit) of a key of the book object."""
    if klen == 12 and not bybit:
        for j in range(12):
            if buf[ks + j] != LAST_UPDATE_ID[j]:
                return _SKIP, 0
        return _INT, H_LAST_UPDATE_ID
    if klen > 4:
        return _SKIP, 0
    w = _key_word(buf, ks, klen)
    if w == W_b:
        return _LEVELS, SIDE_B
    if w == W_a:
        return _LEVELS, SIDE_A
    if w == W_u:
        return _INT, H_u
    if w == W_s:
        return _STR, H_s
    if bybit:
        if w == W_SEQ:
            return _INT, H_seq
        return _SKIP, 0
    if w == W_U:
        return _INT, H_U
    if w == W_PU:
        return _INT, H_pu
    if w == W_E:
        return _INT, H_E
    if w == W_T:
        return _INT, H_T
    if w == W_e:
        return _STR, H_e
    if w == W_BIDS:
        return _LEVELS, SIDE_BIDS
    if w == W_ASKS:
        return _LEVELS, SIDE_ASKS
    return _SKIP, 0


@nb.njit(cache=True, nogil=True, inline="always")
def _top_key(buf, ks, klen, bybit):
    """(action, slot) of a top-level key of a message whose book object is its `data`."""
    if klen > 6:
        return _SKIP, 0
    w = _key_word(buf, ks, klen)
    if w == W_DATA:
        return _ENTER, _DATA
    if bybit:
        if w == W_TOPIC:
            return _STR, H_TOPIC
        if w == W_TYPE:
            return _STR, H_TYPE
        if w == W_TS:
            return _INT, H_ts
        if w == W_CTS:
            return _INT, H_cts
    elif w == W_STREAM:
        return _STR, H_STREAM
    return _SKIP, 0


@nb.njit(cache=True, nogil=True)
def parse_book(buf, ints, sides, row, in_data, bybit, head, pow10):
    """Validate and read one book message (`buf`: bytes) writing its levels from batch `row`
    (see the module docstring).

    ints: the batch as (n, 8) int64; prices/qtys go to its float64 view, columns 6 and 7.
    sides: int8 scratch (n,), 1 for a bid level, 2 for an ask level, per written row.
    head: int64 (HEAD_SIZE,) receives the integers, string offsets and level-array bits.
    Returns the number of levels written, or BAD_PRICE / BAD_QTY / BAD_SYNTAX / BAD_SCHEMA /
    BAD_DEPTH / NO_ROOM. The caller fills the integer columns with `fill_levels`.
    """
    floats = ints.view(np.float64)
    n = len(buf)
    for k in range(HEAD_SIZE):
        head[k] = -1
    head[H_SIDES] = 0
    book_depth = 2 if in_data else 1
    inside = not in_data  # within the book object (the top-level one: from the start)
    depth = 0
    objects = 0  # bit d: the container at depth d is an object
    seen = 0  # bit per head slot (and _DATA) read: a repeated key is refused
    total = 0
    action = _SKIP
    slot = 0
    expect = _VALUE
    i = 0
    while True:
        while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
            i += 1
        if expect == _AFTER:
            if depth == 0:
                return total if i == n else BAD_SYNTAX
            if i >= n:
                return BAD_SYNTAX
            c = buf[i]
            is_object = (objects >> depth) & 1
            if c == 44:  # ','
                expect = _KEY if is_object else _VALUE
            elif (c == 125 and is_object) or (c == 93 and not is_object):
                depth -= 1
                if depth < book_depth:
                    inside = False
            else:
                return BAD_SYNTAX
            i += 1
            continue
        if i >= n:
            return BAD_SYNTAX
        c = buf[i]
        if expect in (_KEY_OR_END, _VALUE_OR_END):
            if (c == 125 and expect == _KEY_OR_END) or (c == 93 and expect == _VALUE_OR_END):
                depth -= 1
                if depth < book_depth:
                    inside = False
                i += 1
                expect = _AFTER
                continue
            expect = _KEY if expect == _KEY_OR_END else _VALUE
        if expect == _KEY:
            if c != 34:
                return BAD_SYNTAX
            ks = i + 1
            i, _ = _string_end(buf, i, n)
            if i < 0:
                return BAD_SYNTAX
            klen = i - 1 - ks
            while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                i += 1
            if i >= n or buf[i] != 58:  # ':'
                return BAD_SYNTAX
            i += 1
            action = _SKIP
            if inside and depth == book_depth:
                action, slot = _book_key(buf, ks, klen, bybit)
            elif in_data and depth == 1:
                action, slot = _top_key(buf, ks, klen, bybit)
            expect = _VALUE
            continue
        # a value; `action` says what the key before it wants of it (top level: nothing)
        act = action
        action = _SKIP
        if act != _SKIP:
            bit = np.int64(1) << (slot if act != _LEVELS else _SIDE_BITS + slot)
            if seen & bit:
                return BAD_SCHEMA
            seen |= bit
        if act == _LEVELS:
            if c != 91:
                return BAD_SCHEMA
            side = 1 if slot & (SIDE_B | SIDE_BIDS) else 2
            i, got = _level_array(buf, i, n, floats, sides, row + total, side, pow10)
            if got < 0:
                return got
            total += got
            head[H_SIDES] |= slot
            expect = _AFTER
            continue
        if act == _INT:
            v, j = _int(buf, i, n)
            if v < 0:  # another JSON value is a wrong type, anything else bad JSON
                value_start = c in (34, 91, 102, 110, 116, 123) or _skip_number(buf, i, n) >= 0
                return BAD_SCHEMA if value_start else BAD_SYNTAX
            head[slot] = v
            i = j
            expect = _AFTER
            continue
        if act == _STR:
            if c != 34:
                return BAD_SCHEMA
            j, escaped = _string_end(buf, i, n)
            if j < 0:
                return BAD_SYNTAX
            if escaped:
                return BAD_SCHEMA
            head[slot] = i + 1
            head[slot + 1] = j - 1
            i = j
            expect = _AFTER
            continue
        if c == 123 or c == 91:  # '{' '['
            if act == _ENTER:
                if c != 123:
                    return BAD_SCHEMA
                inside = True
            if depth == MAX_DEPTH:
                return BAD_DEPTH
            depth += 1
            if c == 123:
                objects |= np.int64(1) << depth
                expect = _KEY_OR_END
            else:
                objects &= ~(np.int64(1) << depth)
                expect = _VALUE_OR_END
            i += 1
            continue
        if act == _ENTER:
            return BAD_SCHEMA
        if depth == 0:  # the message must be an object
            return BAD_SYNTAX
        if c == 34:
            i, _ = _string_end(buf, i, n)
        elif c == 45 or 48 <= c <= 57:
            i = _skip_number(buf, i, n)
        else:
            i = _literal(buf, i, n)
        if i < 0:
            return BAD_SYNTAX
        expect = _AFTER


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
    msg = (b'{"topic":"x","type":"delta","ts":1,"data":{"s":"X","u":1,"b":[["1.5","2"]],'
           b'"a":[[2.5,1e-3]],"x":[true,null,-0.5e+3,"\\u00e9",{}]}}')
    parse_book(msg, ints, sides, 0, True, True, head, POW10)
    parse_book(b'{"lastUpdateId":1,"bids":[],"asks":[["1","0"]]}', ints, sides, 0, False,
               False, head, POW10)
    fill_levels(ints, sides, 0, 2, 1, 2, 3, 4, 5, 0, 2)


warm()
