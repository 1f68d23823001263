"""BookSync: each venue's snapshot/delta sequencing in front of the L2 books.

Feed it every normalized message: `sync.process(events, normalizer.last)` (the events view and
the `workbench.events.MessageInfo`). It owns one `L2Book` per symbol, applies
deltas that follow in sequence, buffers deltas while a book waits for its snapshot, drops
stale ones, and on a gap marks the book invalid, calls `on_resync(symbol_id)` once (the owner
fetches a new REST snapshot or resubscribes) and keeps buffering, so nothing is lost while the
snapshot arrives. The venue's rule (`workbench.book.sequencing`: update ids that follow, stale
or straddle a snapshot, the connection sequence, what a snapshot does to buffered deltas) is
the `SyncRule` BookSync is built with, e.g. `BookSync(get_venue("binance-usdm").sequencing)`
(`workbench.feed.venues`).

A message the book refuses (a price off every decimal grid, `L2Book.apply`'s BookError) is
counted in `stats.rejected`, logged, and treated as a gap: the book is invalid until a new
snapshot, and the feed goes on.

A message the normalizer counted malformed (MessageKind.MALFORMED) carries no update: its
update ids are unknown, so on a venue with per-book update ids (Binance, Bybit) the next delta
of that book does not follow and is the gap. On a venue with a connection sequence (Coinbase's
`sequence_num`) the malformed message itself was a numbered message whose body is lost: it is a
connection gap at once (`stats.lost`), every live book is invalid and resyncs, and the next
message starts the sequence again. Never "valid with a hole".

A BOOK_INVALID message (MessageKind.BOOK_INVALID: a producer that sequences books itself, the
native feed handler, found a gap and resyncs) makes its book invalid until the next snapshot
(`stats.invalidated`); nothing is requested, the producer sends the snapshot.

After a reconnect call `connection_reset()`: every book becomes invalid and waits for a
snapshot (a connection sequence restarts).

Per-symbol state (an L2Book: ~136 KiB resident when new, up to its ladder's 512 KiB, plus the
delta buffer) is bounded: `drop(symbol_id)` frees one symbol's (e.g. after an unsubscribe),
and at most `max_symbols` are kept: a message for a new symbol beyond that evicts the least
recently used one (counted in `stats.evicted`, logged the first time). An evicted symbol that
comes back starts over like a new one: invalid, waiting for a snapshot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from workbench.book.l2 import L2Book
from workbench.book.sequencing import SyncRule
from workbench.errors import BookError
from workbench.events import M_BOOK_INVALID, M_DELTA, M_MALFORMED, M_SNAPSHOT, MessageInfo

log = logging.getLogger("workbench.book.sync")

MAX_SYMBOLS = 1024  # symbols whose books BookSync keeps by default (LRU beyond)


@dataclass
class SyncStats:
    """Counts since construction (all symbols)."""

    messages: int = 0  # messages seen by process()
    applied: int = 0  # deltas applied to a book
    snapshots: int = 0  # snapshots applied
    buffered: int = 0  # deltas buffered while a book waited for its snapshot
    gaps: int = 0  # sequence gaps detected
    resyncs: int = 0  # resyncs requested after a gap (on_resync calls, gap-caused)
    snapshot_requests: int = 0  # every on_resync call, including the first snapshot
    dropped_stale: int = 0  # buffered or live deltas older than the book
    buffer_overflow: int = 0  # buffered deltas dropped because the buffer was full
    crossed: int = 0  # messages after which the book was crossed
    rejected: int = 0  # messages the book refused (BookError): handled as a gap
    lost: int = 0  # malformed messages on a connection sequence: handled as a gap
    evicted: int = 0  # symbols dropped to stay within max_symbols (least recently used)
    invalidated: int = 0  # BOOK_INVALID messages from a producer that sequences itself


class _Symbol:
    __slots__ = ("book", "buffer", "last_id", "live", "resync_pending", "snapshot_id", "used")

    def __init__(self, book: L2Book, max_buffer: int):
        self.book = book
        self.used = 0  # BookSync's message count when the symbol was last touched (LRU)
        self.buffer: deque[tuple[int, int, int, np.ndarray]] = deque(maxlen=max_buffer)
        self.last_id = -1  # last update id applied (or the snapshot's)
        self.snapshot_id = -1
        self.live = False  # a snapshot is in and deltas are applied as they come
        self.resync_pending = False


class BookSync:
    """Sequencing for one connection's books of one venue.

    rule: the venue's SyncRule (`Venue.sequencing`, or `workbench.book.sequencing.UNSEQUENCED`
    for events without update ids). on_resync(symbol_id): called when a book needs a snapshot
    (first delta before any snapshot, or after a gap); it must not block (schedule the REST
    call / resubscribe).
    capacity: initial levels of each L2Book's overflow table. max_buffer: deltas kept per
    symbol while waiting for a snapshot (older ones are dropped and counted in
    buffer_overflow). tick_sizes: symbol_id -> the venue's price step (symbol metadata) for
    the books' ladders; symbols not in it infer theirs from the first snapshot. max_symbols:
    symbols whose state is kept (the least recently used is evicted for a new one; see the
    module docstring). Raises BookError for a rule that is not a SyncRule, max_buffer < 1 or
    max_symbols < 1.
    """

    def __init__(self, rule: SyncRule, on_resync: Callable[[int], None] | None = None,
                 capacity: int = 1024, max_buffer: int = 100_000,
                 tick_sizes: Mapping[int, float] | None = None,
                 max_symbols: int = MAX_SYMBOLS):
        if not isinstance(rule, SyncRule):
            raise BookError(f"rule must be a SyncRule (workbench.book.sequencing, a venue's "
                            f"Venue.sequencing), got {rule!r}")
        if max_buffer < 1:
            raise BookError(f"max_buffer must be >= 1, got {max_buffer}")
        if max_symbols < 1:
            raise BookError(f"max_symbols must be >= 1, got {max_symbols}")
        self.max_symbols = max_symbols
        self.rule = rule
        self.on_resync = on_resync
        self.capacity = capacity
        self.tick_sizes = dict(tick_sizes or {})
        self.max_buffer = max_buffer
        self.stats = SyncStats()
        self._symbols: dict[int, _Symbol] = {}
        self._conn_seq = -1
        # the rule's predicates and flags, bound once (process() is on the hot path)
        self._follows = rule.follows
        self._stale = rule.stale
        self._straddles = rule.straddles
        self._connection_seq = rule.connection_seq
        self._live_on_snapshot = rule.live_on_snapshot
        self._buffer_predates_snapshot = rule.buffer_predates_snapshot

    # ---- access ------------------------------------------------------------------------
    @property
    def books(self) -> dict[int, L2Book]:
        """symbol_id -> L2Book for every symbol kept (seen and neither dropped nor
        evicted)."""
        return {sid: s.book for sid, s in list(self._symbols.items())}

    def book(self, symbol_id: int) -> L2Book:
        """The book of `symbol_id` (created empty and invalid if new)."""
        return self._symbol(symbol_id).book

    def get(self, symbol_id: int) -> L2Book | None:
        """The book of `symbol_id`, None if the symbol was never seen (creates nothing, so
        another thread may call it)."""
        s = self._symbols.get(symbol_id)
        return s.book if s else None

    def is_valid(self, symbol_id: int) -> bool:
        s = self._symbols.get(symbol_id)
        return bool(s and s.book.valid)

    def buffered(self, symbol_id: int) -> int:
        """Deltas currently buffered for `symbol_id`."""
        s = self._symbols.get(symbol_id)
        return len(s.buffer) if s else 0

    def drop(self, symbol_id: int) -> bool:
        """Forget `symbol_id`'s book, buffer and sequence state (free its memory); a later
        message for it starts over as for a new symbol. False if it was not kept."""
        return self._symbols.pop(symbol_id, None) is not None

    def _symbol(self, symbol_id: int) -> _Symbol:
        s = self._symbols.get(symbol_id)
        if s is None:
            if len(self._symbols) >= self.max_symbols:
                self._evict()
            book = L2Book(symbol_id, self.capacity, tick_size=self.tick_sizes.get(symbol_id))
            s = self._symbols[symbol_id] = _Symbol(book, self.max_buffer)
        s.used = self.stats.messages
        return s

    def _evict(self) -> None:
        """Drop the least recently used symbol (a scan of max_symbols stamps, only when a
        new symbol arrives with the table full)."""
        victim = min(self._symbols.values(), key=attrgetter("used"))
        del self._symbols[victim.book.symbol_id]
        self.stats.evicted += 1
        if self.stats.evicted == 1:
            log.warning("%s: more than %d symbols; evicting the least recently used (symbol "
                        "%d first; counted in stats.evicted)", self.rule.name,
                        self.max_symbols, victim.book.symbol_id)

    # ---- the entry point ---------------------------------------------------------------
    def process(self, events: np.ndarray, info: MessageInfo) -> L2Book | None:
        """Sequence one normalized message. Returns the book it changed, or None (not a book
        message, buffered, stale or gap). `events` may be a reused view: buffering copies."""
        self.stats.messages += 1
        kind = info.kind
        if self._connection_seq:
            if kind == M_MALFORMED:
                self._lost()
            elif info.seq >= 0:
                if self._conn_seq >= 0 and info.seq != self._conn_seq + 1:
                    self._connection_gap(info.seq)
                self._conn_seq = info.seq
        if kind == M_DELTA:
            return self._delta(events, info)
        if kind == M_SNAPSHOT:
            return self._snapshot(events, info)
        if kind == M_BOOK_INVALID:
            s = self._symbol(info.symbol_id)
            s.book.valid = False
            s.live = False
            s.snapshot_id = -1
            self.stats.invalidated += 1
        return None

    def _delta(self, events: np.ndarray, info: MessageInfo) -> L2Book | None:
        s = self._symbol(info.symbol_id)
        first, last, prev = info.first_id, info.last_id, info.prev_id
        if s.live:
            if self._follows(s.last_id, first, last, prev):
                return self._apply(s, events, last)
            if self._stale(last, s.last_id):
                self.stats.dropped_stale += 1
                return None
            self._gap(s, f"expected after {s.last_id}, got first={first} last={last} "
                         f"prev={prev}")
        elif s.snapshot_id >= 0:  # snapshot in, waiting for the straddling delta
            if self._stale(last, s.snapshot_id):
                self.stats.dropped_stale += 1
                return None
            if self._straddles(s.snapshot_id, first, last, prev):
                s.live = True
                return self._apply(s, events, last)
            self._gap(s, f"first delta {first}..{last} does not follow the snapshot "
                         f"{s.snapshot_id}")
        elif not s.resync_pending:
            self._request(s, after_gap=False)
        self._buffer(s, first, last, prev, events)
        return None

    def _snapshot(self, events: np.ndarray, info: MessageInfo) -> L2Book | None:
        s = self._symbol(info.symbol_id)
        if not self._applied(s, events):
            return None
        self.stats.snapshots += 1
        s.resync_pending = False
        s.snapshot_id = s.last_id = info.last_id
        s.live = self._live_on_snapshot
        self._drain(s)
        return s.book

    def _drain(self, s: _Symbol) -> None:
        """Apply the buffered deltas that follow the new snapshot; drop the stale ones."""
        buffered = list(s.buffer)
        s.buffer.clear()
        if self._buffer_predates_snapshot:
            self.stats.dropped_stale += len(buffered)
            return
        for j, (first, last, prev, events) in enumerate(buffered):
            if s.live:
                ok = self._follows(s.last_id, first, last, prev)
            else:
                if self._stale(last, s.snapshot_id):
                    self.stats.dropped_stale += 1
                    continue
                ok = self._straddles(s.snapshot_id, first, last, prev)
                s.live = ok
            if ok:
                if self._apply(s, events, last) is None:  # refused: resync requested
                    s.buffer.extend(buffered[j + 1:])
                    return
                continue
            if s.live and self._stale(last, s.last_id):
                self.stats.dropped_stale += 1
                continue
            self._gap(s, f"buffered delta {first}..{last} does not follow {s.last_id}")
            for item in buffered[j:]:
                s.buffer.append(item)
            return

    # ---- actions -----------------------------------------------------------------------
    def _applied(self, s: _Symbol, events: np.ndarray) -> bool:
        """Apply events to s's book; a BookError is counted and handled as a gap."""
        try:
            s.book.apply(events)
        except BookError as exc:
            self.stats.rejected += 1
            self._gap(s, f"message refused by the book: {exc}")
            return False
        return True

    def _apply(self, s: _Symbol, events: np.ndarray, last: int) -> L2Book | None:
        if not self._applied(s, events):
            return None
        s.last_id = last
        self.stats.applied += 1
        if s.book.crossed:
            self.stats.crossed += 1
        return s.book

    def _buffer(self, s: _Symbol, first: int, last: int, prev: int, events: np.ndarray
                ) -> None:
        if len(s.buffer) == s.buffer.maxlen:
            self.stats.buffer_overflow += 1
        s.buffer.append((first, last, prev, events.copy()))
        self.stats.buffered += 1

    def _gap(self, s: _Symbol, detail: str) -> None:
        self.stats.gaps += 1
        log.warning("%s symbol %d: sequence gap (%s); book invalid, resync requested",
                    self.rule.name, s.book.symbol_id, detail)
        s.book.valid = False
        s.live = False
        s.snapshot_id = -1
        self._request(s, after_gap=True)

    def _request(self, s: _Symbol, after_gap: bool) -> None:
        s.resync_pending = True
        self.stats.snapshot_requests += 1
        if after_gap:
            self.stats.resyncs += 1
        if self.on_resync is not None:
            self.on_resync(s.book.symbol_id)

    def _connection_gap(self, seq: int) -> None:
        self.stats.gaps += 1
        log.warning("%s: connection sequence gap (expected %d, got %d); all books resync",
                    self.rule.name, self._conn_seq + 1, seq)
        for s in self._symbols.values():
            s.book.valid = False
            s.live = False
            s.snapshot_id = -1
            self._request(s, after_gap=True)

    def _lost(self) -> None:
        """A malformed message on a connection sequence: its number advanced, its body is
        lost. Every live book resyncs (books already waiting for a snapshot keep waiting: the
        snapshot replaces whatever they missed); the next message restarts the sequence."""
        self.stats.lost += 1
        self._conn_seq = -1
        live = [s for s in self._symbols.values() if not s.resync_pending]
        if not live:
            return
        self.stats.gaps += 1
        log.warning("%s: a malformed message on the connection sequence; %d books resync",
                    self.rule.name, len(live))
        for s in live:
            s.book.valid = False
            s.live = False
            s.snapshot_id = -1
            self._request(s, after_gap=True)

    def request_resync(self, symbol_id: int) -> None:
        """Invalidate `symbol_id`'s book and ask the owner for a snapshot (manual resync)."""
        s = self._symbol(symbol_id)
        s.book.valid = False
        s.live = False
        s.snapshot_id = -1
        self._request(s, after_gap=False)

    def connection_reset(self) -> None:
        """A new connection: every book waits for a fresh snapshot; sequence state restarts."""
        self._conn_seq = -1
        for s in self._symbols.values():
            s.book.valid = False
            s.live = False
            s.snapshot_id = -1
            s.buffer.clear()
            self._request(s, after_gap=False)
