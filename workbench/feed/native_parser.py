"""NativeParser: the C++ venue parsers (`csrc/native/parse*.cpp`, simdjson On-Demand) from Python.

A thin class over `wb_parse.h` through the cffi module `workbench._native`. It reads the same
raw messages as the Python normalizers (`workbench.feed.venues`) and gives the same events
(EVENT_DTYPE, ts_publish_ns 0) and the same `MessageInfo`; parse.cpp's header lists where they
deliberately differ (symbols must be added first; invalid JSON may get another malformed kind).

    parser = NativeParser("binance-usdm", registry, symbols=["BTCUSDT"])
    events, info = parser.parse(message, recv_ns)   # a view, valid until the next call

Symbols are registered through the Python `SymbolRegistry` (`add_symbol`), so the ids agree
with the Python path; a message naming a symbol that was not added is counted
'unknown_symbol'. `parse_many` normalizes a list of messages in one C call (benchmarks, bulk
replay).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from workbench._native import ffi, lib
from workbench.errors import ConfigError
from workbench.events import EVENT_DTYPE, MessageInfo
from workbench.feed.native_codes import BAD_KINDS, VENUE_CODES, malformed_counts
from workbench.feed.symbols import SYMBOLS, SymbolRegistry

DEFAULT_CAPACITY = 4096
PADDING = lib.WB_PARSE_PADDING  # bytes simdjson may read past a message


class NativeParser:
    """One venue connection's C++ parser. venue_key: a key of
    `workbench.feed.native_codes.VENUE_CODES`; registry: the symbol
    registry ids come from; symbols: added at once; default_symbol (Binance): the symbol of
    depth snapshots that name none (BinanceNormalizer's default_symbol; added if needed).
    Raises ConfigError for another venue key, a bad symbol or capacity < 16."""

    def __init__(self, venue_key: str, registry: SymbolRegistry = SYMBOLS,
                 symbols: Iterable[str] = (), default_symbol: str | None = None,
                 capacity: int = DEFAULT_CAPACITY):
        if venue_key not in VENUE_CODES:
            raise ConfigError(f"NativeParser: unknown venue {venue_key!r}: expected one of "
                              f"{', '.join(VENUE_CODES)}")
        if capacity < 16:
            raise ConfigError(f"capacity must be >= 16 events, got {capacity}")
        self._ffi, self._lib = ffi, lib
        self.venue = venue_key
        self.registry = registry
        self.last = MessageInfo()
        ptr = self._lib.wb_parser_new(VENUE_CODES[venue_key])
        if ptr == self._ffi.NULL:
            raise MemoryError("wb_parser_new failed")
        self._p = self._ffi.gc(ptr, self._lib.wb_parser_free)
        self._info = self._ffi.new("wb_msg_info *")
        self._bulk = np.zeros(0, dtype=EVENT_DTYPE)  # parse_many's batch
        self._alloc(capacity)
        for symbol in symbols:
            self.add_symbol(symbol)
        if default_symbol is not None:
            self.add_symbol(default_symbol)
            if self._lib.wb_parser_default_symbol(self._p, default_symbol.encode()) != 0:
                raise ConfigError(f"default_symbol is for Binance venues, not {venue_key!r}")

    def _alloc(self, capacity: int) -> None:
        self._out = np.zeros(capacity, dtype=EVENT_DTYPE)
        self._out_ptr = self._ffi.cast("wb_event *", self._ffi.from_buffer(self._out))

    @property
    def capacity(self) -> int:
        """Events the output batch holds (it grows on demand)."""
        return len(self._out)

    def add_symbol(self, symbol: str) -> int:
        """Register `symbol` (any case) in the registry under this venue and make it known to
        the parser. Returns its symbol_id. Raises ConfigError for an empty symbol, one over 64
        bytes or with a NUL byte."""
        raw = symbol.encode()
        if not raw or len(raw) > 64 or b"\0" in raw:
            raise ConfigError(f"symbol must be 1..64 bytes without NUL, got {symbol!r}")
        sid = self.registry.id(self.venue, symbol)
        if self._lib.wb_parser_add_symbol(self._p, raw, sid) != 0:
            raise ConfigError(f"wb_parser_add_symbol refused {symbol!r}")
        return sid

    def _info_out(self) -> MessageInfo:
        i = self._info
        last = self.last
        last.kind = i.kind
        last.symbol_id = i.symbol_id
        last.first_id = i.first_id
        last.last_id = i.last_id
        last.prev_id = i.prev_id
        last.seq = i.seq
        last.ts_event_ns = i.ts_event_ns
        last.channel = BAD_KINDS[i.bad]
        return last

    def _call(self, parse, message: bytes) -> tuple[np.ndarray, MessageInfo]:
        buf = self._ffi.from_buffer(message)
        while True:
            n = parse(buf, len(message), self._out_ptr, len(self._out))
            if n != self._lib.WB_PARSE_NO_ROOM:
                return self._out[:n], self._info_out()
            self._alloc(max(int(self._info.n_events), 2 * len(self._out)))

    def parse(self, message: bytes, recv_ns: int) -> tuple[np.ndarray, MessageInfo]:
        """Events of one raw message: a view of the reused batch (valid until the next call),
        shape (n,), dtype EVENT_DTYPE; and `self.last` (reused): kind, symbol_id, ids, seq,
        ts_event_ns as `Normalizer.last`, and `channel` = the malformed kind ('' if none).
        Never raises for bad input: it is counted (see `stats`)."""
        lib, p, info = self._lib, self._p, self._info
        return self._call(lambda buf, n, out, cap: lib.wb_parser_parse(
            p, buf, n, n, recv_ns, out, cap, info), message)

    def parse_snapshot(self, body: bytes, recv_ns: int, symbol: str
                       ) -> tuple[np.ndarray, MessageInfo]:
        """Events of a Binance REST depth snapshot `body` of `symbol`, as
        `BinanceNormalizer.normalize_snapshot`; same contract as `parse` (other venues count
        every body 'unknown_type')."""
        lib, p, info = self._lib, self._p, self._info
        raw = symbol.encode()
        return self._call(lambda buf, n, out, cap: lib.wb_parser_snapshot(
            p, buf, n, n, recv_ns, raw, out, cap, info), body)

    def parse_many(self, messages: Sequence[bytes], recv_ns: np.ndarray | Sequence[int],
                   infos: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All `messages` in one C call (`wb_parser_parse_many`): (events, ends, infos).
        events: a view of a reused batch (valid until the next parse_many); ends: uint64 (n,),
        the events of messages 0..i (message i's are events[ends[i-1]:ends[i]]); infos: a
        structured array of the `wb_msg_info` fields (INFO_DTYPE: kind, bad, symbol_id,
        n_events, first_id, last_id, prev_id, seq, ts_event_ns) when `infos` is set, else
        None. recv_ns: int64 (n,)."""
        ffi, lib = self._ffi, self._lib
        n = len(messages)
        lengths = np.fromiter(map(len, messages), dtype=np.uint64, count=n)
        offsets = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(lengths, out=offsets[1:])
        buf = b"".join([*messages, bytes(PADDING)])  # one copy (join + pad would make two)
        recv = np.ascontiguousarray(recv_ns, dtype=np.int64)
        if len(recv) != n:
            raise ValueError(f"recv_ns has {len(recv)} entries for {n} messages")
        ends = np.zeros(n, dtype=np.uint64)
        info_arr = np.zeros(n, dtype=INFO_DTYPE) if infos else None
        # a reused batch (fresh pages cost a fault each): about one event per 16 bytes
        need = 4 * n + len(buf) // 16
        if len(self._bulk) < need:
            self._bulk = np.zeros(need, dtype=EVENT_DTYPE)
        out = self._bulk
        done = total = 0
        while done < n:
            got = lib.wb_parser_parse_many(
                self._p, ffi.from_buffer(buf), len(buf),
                ffi.cast("uint64_t *", ffi.from_buffer(offsets[done:])), n - done,
                ffi.cast("int64_t *", ffi.from_buffer(recv[done:])),
                ffi.cast("wb_event *", ffi.from_buffer(out[total:])), len(out) - total,
                ffi.cast("uint64_t *", ffi.from_buffer(ends[done:])),
                ffi.cast("wb_msg_info *", ffi.from_buffer(info_arr[done:]))
                if info_arr is not None else ffi.NULL)
            if got:
                ends[done:done + got] += total
                total = int(ends[done + got - 1])
                done += got
            if done < n:  # the next message does not fit: grow
                grown = np.zeros(2 * len(out), dtype=EVENT_DTYPE)
                grown[:total] = out[:total]
                out = self._bulk = grown
        return out[:total], ends, info_arr

    def stats(self) -> dict:
        """{'messages': n, 'events': n, 'malformed': {kind: count}} since construction
        (kinds as the Python `stats.malformed`, only those counted)."""
        ffi = self._ffi
        messages, events = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        bad = ffi.new("uint64_t[]", self._lib.WB_BAD_COUNT)
        self._lib.wb_parser_counters(self._p, messages, events, bad)
        return {"messages": messages[0], "events": events[0],
                "malformed": malformed_counts(bad)}


# wb_msg_info as numpy (parse_many's infos)
INFO_DTYPE = np.dtype([("kind", "<i4"), ("bad", "<i4"), ("symbol_id", "<u4"),
                       ("n_events", "<u4"), ("first_id", "<i8"), ("last_id", "<i8"),
                       ("prev_id", "<i8"), ("seq", "<i8"), ("ts_event_ns", "<i8")])
