"""What every venue normalizer shares: the batch it writes, per-message sequence info, stats,
and the message boundary that no exception crosses.

A `Normalizer` turns one raw venue message (bytes) into events written to a preallocated
`EVENT_DTYPE` batch. `normalize(message, recv_ns)` returns a **view** of that batch holding this
message's events; the view is valid only until the next `normalize` call on the same
normalizer (copy it to keep it). Alongside, `normalizer.last` (a `workbench.events.MessageInfo`,
also reused) carries what sequencing needs: the message kind (snapshot, delta, trade, ...), its
symbol_id and the venue update ids. `workbench.book.sync.BookSync` consumes both.

Events written per message:
- book snapshot: SNAPSHOT_BEGIN, then BID_LEVEL / ASK_LEVEL events flagged SNAPSHOT, then
  SNAPSHOT_END. Level events carry price and qty (qty 0 deletes the level).
- book delta: BID_LEVEL / ASK_LEVEL events.
- trade: TRADE with side = aggressor (BUY or SELL), price, qty.
- best bid/offer: two BBO events, side BUY (bid price, bid qty) then side SELL (ask).
- heartbeat: one HEARTBEAT event.
The last event of a message has the LAST_IN_MSG flag. `seq` is this normalizer's running
message count (1-based), `venue_seq` the venue's update id (Binance `u`, Bybit `u`, Coinbase
`sequence_num`, trade id for trades). `ts_event_ns` is the venue's event time in ns (0 if the
message has none); `ts_recv_ns` is the caller's `recv_ns`.

A normalizer can only return events or count a malformed message; each call counts one message
(`stats.messages`). Venues implement `_normalize` and the base's `normalize` is the message
boundary: any exception out of it is caught there, once for every venue, and counted by kind
in `stats.malformed`: 'json' (syntax, encoding), 'schema' (a missing key, a wrong type, an
integer or time out of range), 'depth' (nesting too deep: RecursionError), 'memory' (a giant
input: MemoryError), 'internal' (anything else: a bug, logged with its traceback). The venue
code counts its own refusals: 'unknown_type', 'bad_price' (NaN, inf, zero or negative),
'bad_qty' (NaN, inf or negative), 'unknown_symbol'. Times (`E`, `T`, `ts`, ...) must be > 0
and fit int64 ns (`MAX_TIME_MS`); update ids must be >= 0 and fit int64.

A refused message yields no events, `last.kind` MALFORMED and `last.seq` -1; it is counted in
`stats.skipped` by (message type, kind) and logged at most once per kind per `LOG_INTERVAL_S`
with the head of its bytes. The whole message is skipped, not just the bad level: BookSync then
sees the missing update as a sequence gap (the next delta does not follow; on a venue with a
connection sequence the skipped message is a gap at once) and resyncs, so the book never
silently diverges.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import numpy as np

from workbench.errors import ConfigError
from workbench.events import (
    EVENT_DTYPE,
    F_LAST,
    F_SNAPSHOT,
    K_SNAP_BEGIN,
    K_SNAP_END,
    M_MALFORMED,
    MessageInfo,
)
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues import _levels

log = logging.getLogger("workbench.feed.venues")

LOG_INTERVAL_S = 10.0
DEFAULT_CAPACITY = 4096
# distinct message type labels counted by name; a message's type comes from the message, so
# hostile input could otherwise grow the counters without bound: later labels count as OTHER
MAX_CHANNELS = 64
OTHER_CHANNEL = "(other types)"

# One event packed as EVENT_DTYPE lays it out (64 bytes, little-endian).
EVENT_STRUCT = struct.Struct("<qqqQQIBBHdd")
assert EVENT_STRUCT.size == EVENT_DTYPE.itemsize
# The same with ts_publish_ns written as zero padding and symbol_id | kind | side | flags as
# one word (`event_word`): 7 arguments instead of 11, ~15 ns saved per argument on hot paths.
EVENT_WORDS = struct.Struct("<qq8xQQQdd")
assert EVENT_WORDS.size == EVENT_DTYPE.itemsize


def event_word(symbol_id: int, kind: int, side: int, flags: int) -> int:
    """Word 5 of an event: symbol_id | kind << 32 | side << 40 | flags << 48 (EVENT_DTYPE's
    u4, u1, u1, u2 little-endian)."""
    return symbol_id | kind << 32 | side << 40 | flags << 48

INF = float("inf")
INT64_MAX = _levels.INT64_MAX
MAX_TIME_MS = INT64_MAX // 1_000_000  # the latest ms time whose ns fits int64 (2262-04-11)
# msgspec constraints of venue fields: an update id / sequence number, a ms time, a symbol
Id = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
TimeMs = Annotated[int, msgspec.Meta(gt=0, le=MAX_TIME_MS)]
Symbol = Annotated[str, msgspec.Meta(min_length=1)]

# what each malformed kind means (for reports such as `workbench inspect`)
MALFORMED_KINDS = {
    "json": "not valid JSON (syntax, encoding, trailing bytes)",
    "schema": "a required key missing, repeated or misplaced, or a value of the wrong type or "
              "out of range (ids, times)",
    "unknown_type": "a message type the normalizer does not know",
    "bad_price": "a price that is not a finite number > 0",
    "bad_qty": "a quantity that is not a finite number >= 0",
    "unknown_symbol": "a depth snapshot that names no symbol",
    "depth": "nested too deep",
    "memory": "too large to decode",
    "internal": "a normalizer error (a bug: the log has its traceback)",
}
# what parsing a hostile message raises (besides msgspec's errors): counted as 'schema'
PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error)
_LEVEL_ERRORS = {_levels.BAD_PRICE: "bad_price", _levels.BAD_QTY: "bad_qty",
                 _levels.BAD_SYNTAX: "json", _levels.BAD_SCHEMA: "schema",
                 _levels.BAD_DEPTH: "depth"}


def error_kind(exc: BaseException) -> str:
    """The malformed kind of an exception raised while normalizing one message (see the
    module docstring)."""
    if isinstance(exc, RecursionError):
        return "depth"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, msgspec.ValidationError):
        return "schema"
    if isinstance(exc, (msgspec.DecodeError, UnicodeError)):
        return "json"
    if isinstance(exc, PARSE_ERRORS):
        return "schema"
    return "internal"


def as_bytes(message: object) -> bytes:
    """`message` as bytes: str is UTF-8 encoded, buffers (bytearray, memoryview) copied.
    Raises TypeError for anything else, UnicodeEncodeError for a str with lone surrogates."""
    if isinstance(message, str):
        return message.encode()
    return bytes(memoryview(message))  # type: ignore[arg-type]


@dataclass(slots=True)  # slots: attribute reads/writes on the per-message path are cheaper
class NormalizerStats:
    """Counts since construction. messages: every `normalize` call. malformed: kind -> count
    of the refused ones (kinds in `MALFORMED_KINDS`). skipped: (message type label, kind)
    -> count, the same messages by type ('?' when the type could not be read). by_channel:
    message type label -> count, all messages (a plain dict: `Counter.__iadd__` costs ~180 ns
    on the hot path). At most MAX_CHANNELS labels are kept apart; messages of later new
    labels count under OTHER_CHANNEL (in both by_channel and skipped)."""

    messages: int = 0
    events: int = 0
    malformed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    by_channel: dict[str, int] = field(default_factory=dict)

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


class Normalizer:
    """Base of the venue normalizers: batch management, bad-input accounting, symbol ids.

    Subclasses set `venue` and implement `_normalize` (called by `normalize`, inside the
    message boundary), and `normalize_snapshot` through `guarded` when their venue has a REST
    depth market (`Venue.rest`). Raises ConfigError for capacity < 16.
    """

    venue: str = ""

    def __init__(self, registry: SymbolRegistry = SYMBOLS, capacity: int = DEFAULT_CAPACITY):
        if capacity < 16:
            raise ConfigError(f"capacity must be >= 16 events, got {capacity}")
        self.registry = registry
        self.stats = NormalizerStats()
        self.last = MessageInfo()
        self._symbol_cache: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}
        self._venue_normalize = self._normalize  # bound once: saves ~15 ns a message
        self._alloc(capacity)

    # ---- batch -------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        self._batch = np.zeros(capacity, dtype=EVENT_DTYPE)
        self._buf = memoryview(self._batch.view(np.uint8))
        # frombuffer views: numba dispatches on them ~5x faster than on .view()s of the
        # structured batch (its typeof slow path)
        self._ints = np.frombuffer(self._batch, dtype=np.int64).reshape(capacity, 8)
        self._floats = np.frombuffer(self._batch, dtype=np.float64).reshape(capacity, 8)
        self._head = tuple(self._batch[:k] for k in range(4))  # cached small views
        self._sides = np.zeros(capacity, dtype=np.int8)  # scratch of _levels.parse_book
        self._ids = np.zeros(_levels.HEAD_SIZE, dtype=np.int64)  # ids of the last book msg

    def _reserve(self, n: int) -> None:
        """Make room for `n` events in one message: grows the batch keeping the rows written so far
        (views returned earlier keep pointing at the old batch)."""
        if n > len(self._batch):
            old, old_sides = self._batch, self._sides
            self._alloc(max(n, 2 * len(old)))
            self._batch[:len(old)] = old
            self._sides[:len(old)] = old_sides

    @property
    def capacity(self) -> int:
        return len(self._batch)

    def _put(self, i: int, ts_event: int, recv_ns: int, venue_seq: int, sid: int, kind: int,
             side: int, flags: int, price: float, qty: float) -> None:
        """Write event `i` of the batch (one struct.pack_into: ~4x faster than a row setitem)."""
        EVENT_STRUCT.pack_into(self._buf, i << 6, ts_event, recv_ns, 0, self.stats.messages,
                               venue_seq, sid, kind, side, flags, price, qty)

    def _finish(self, n: int) -> np.ndarray:
        """Mark event n-1 LAST_IN_MSG, count, and return the view of the first n events."""
        if n:
            self._ints[n - 1, 5] |= F_LAST << 48
            self.stats.events += n
        return self._batch[:n]

    def _parse_book(self, message: bytes, in_data: bool, bybit: bool) -> int:
        """Validate a book message and write its levels from row 1 (row 0 is kept for
        SNAPSHOT_BEGIN) with `_levels.parse_book` (in_data, bybit as there); ids and string
        offsets land in `self._ids`. Returns the level count, or a negative `_levels` code
        (see `_level_error`)."""
        k = _levels.parse_book(message, self._ints, self._sides, 1, in_data, bybit, self._ids,
                               _levels.POW10)
        if k == _levels.NO_ROOM:
            self._reserve(len(message) // _levels.MIN_LEVEL_BYTES + 4)
            k = _levels.parse_book(message, self._ints, self._sides, 1, in_data, bybit,
                                   self._ids, _levels.POW10)
        return k

    def _level_error(self, code: int, message: bytes) -> np.ndarray:
        """Count a book message `_parse_book` refused (after `begin_message`)."""
        return self._bad(_LEVEL_ERRORS.get(code, "schema"), message)

    def _book_events(self, k: int, snapshot: bool, ts: int, recv_ns: int, venue_seq: int,
                     sid: int) -> np.ndarray:
        """Finish a parsed book message of `k` levels at rows 1..k: integer columns, and for a
        snapshot the SNAPSHOT_BEGIN/END brackets. Returns the message's events."""
        seq = self.stats.messages
        if snapshot:
            self._reserve(k + 2)
            _levels.fill_levels(self._ints, self._sides, 1, k + 1, ts, recv_ns, seq,
                                venue_seq, sid, F_SNAPSHOT, 0)
            self._put(0, ts, recv_ns, venue_seq, sid, K_SNAP_BEGIN, 0, F_SNAPSHOT, 0.0, 0.0)
            self._put(k + 1, ts, recv_ns, venue_seq, sid, K_SNAP_END, 0, F_SNAPSHOT | F_LAST,
                      0.0, 0.0)
            self.stats.events += k + 2
            return self._batch[:k + 2]
        if k == 0:
            return self._head[0]
        _levels.fill_levels(self._ints, self._sides, 1, k + 1, ts, recv_ns, seq, venue_seq,
                            sid, 0, F_LAST)
        self.stats.events += k
        return self._batch[1:k + 1]

    # ---- bad input ---------------------------------------------------------------------
    def _bad(self, kind: str, message: bytes, detail: str = "",
             exc: BaseException | None = None) -> np.ndarray:
        """Count a skipped message under `kind`, log it once per kind per interval (with the
        traceback of `exc` for 'internal')."""
        stats = self.stats
        stats.malformed[kind] += 1
        info = self.last
        stats.skipped[info.channel or "?", kind] += 1
        info.kind = M_MALFORMED
        info.seq = -1
        now = time.monotonic()
        if now - self._last_logged.get(kind, -INF) >= LOG_INTERVAL_S:
            self._last_logged[kind] = now
            log.warning("%s: skipped %s message (%d so far)%s: %.200r", self.venue, kind,
                        stats.malformed[kind], f" {detail}" if detail else "", message,
                        exc_info=exc if kind == "internal" else None)
        return self._head[0]

    def _failed(self, exc: Exception, message: object, start: int) -> np.ndarray:
        """An exception escaped a venue path: count the message once (`start` = the message
        count before it) under its `error_kind`."""
        if self.stats.messages == start:
            begin_message(self, "?")
        detail = f"{type(exc).__name__}: {exc}"[:200]
        return self._bad(error_kind(exc), message, detail, exc)  # type: ignore[arg-type]

    def guarded(self, parse: Callable[..., np.ndarray], message: object, *args: object
                ) -> np.ndarray:
        """`parse(message_as_bytes, *args)` inside the message boundary (what `normalize`
        does for `_normalize`): for entry points other than `normalize`."""
        start = self.stats.messages
        try:
            if type(message) is not bytes:
                message = as_bytes(message)
            return parse(message, *args)
        except Exception as exc:  # the message boundary: nothing escapes
            return self._failed(exc, message, start)

    # ---- symbols -----------------------------------------------------------------------
    def symbol_id(self, symbol: str) -> int:
        """symbol_id of a venue symbol string (registered on first use)."""
        sid = self._symbol_cache.get(symbol)
        if sid is None:
            sid = self.registry.id(self.venue, symbol)
            self._symbol_cache[symbol] = sid
        return sid

    # ---- interface ---------------------------------------------------------------------
    def normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        """Events of one raw message (bytes; str and buffers are accepted too): a view of the
        reused batch (valid until the next call), shape (n,), dtype EVENT_DTYPE; `self.last`
        describes the message. Never raises: bad input of any kind is counted (see the module
        docstring)."""
        start = self.stats.messages
        try:
            if type(message) is not bytes:
                message = as_bytes(message)
            return self._venue_normalize(message, recv_ns)
        except Exception as exc:  # the message boundary: nothing escapes
            return self._failed(exc, message, start)

    def _normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        """The venue's reading of one message (may raise: `normalize` counts it)."""
        raise NotImplementedError

    def normalize_snapshot(self, body: bytes, recv_ns: int, symbol: str) -> np.ndarray:
        """Events of a REST depth snapshot `body` of `symbol`; same contract as `normalize`.
        Venues without REST snapshots do not implement it (NotImplementedError)."""
        raise NotImplementedError


def begin_message(norm: Normalizer, channel: str) -> MessageInfo:
    """Start a message: count it and reset `norm.last` (shared prologue of the venues)."""
    stats = norm.stats
    stats.messages += 1
    by_channel = stats.by_channel
    count = by_channel.get(channel)
    if count is None and len(by_channel) >= MAX_CHANNELS:
        channel = OTHER_CHANNEL
        count = by_channel.get(channel)
    by_channel[channel] = (count or 0) + 1
    info = norm.last
    info.reset()
    info.channel = channel
    return info
