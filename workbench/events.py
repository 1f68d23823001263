"""The normalized market-data event, its numpy dtype, and the message vocabulary.

`EVENT_DTYPE` mirrors `struct wb_event` in `csrc/wb_event.h` field by field: 64 bytes, one cache
line. A *batch* is a 1-D numpy array of `EVENT_DTYPE`. Times are int64 ns; prices and quantities
are float64 (venue decimal strings are parsed once, at the edge).

`MessageKind` and `MessageInfo` describe one raw venue message for sequencing (written by the
feed's normalizers, read by the book's `BookSync` and the engine). The plain-int constants
(`K_*` event kinds, `S_*` sides, `F_*` flags, `M_*` message kinds) are the enums' values for
hot paths: a module-level int is one global load, an IntEnum attribute ~100 ns on 3.11, and
numba kernels read them as compile-time constants.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

import numpy as np

EVENT_SIZE = 64

EVENT_DTYPE = np.dtype(
    {
        "names": [
            "ts_event_ns",
            "ts_recv_ns",
            "ts_publish_ns",
            "seq",
            "venue_seq",
            "symbol_id",
            "kind",
            "side",
            "flags",
            "price",
            "qty",
        ],
        "formats": ["<i8", "<i8", "<i8", "<u8", "<u8", "<u4", "u1", "u1", "<u2", "<f8", "<f8"],
        "offsets": [0, 8, 16, 24, 32, 40, 44, 45, 46, 48, 56],
        "itemsize": EVENT_SIZE,
        "aligned": True,
    }
)


class EventKind(IntEnum):
    """`wb_event.kind`: what one event carries (WB_KIND_* in wb_event.h)."""

    TRADE = 1
    BID_LEVEL = 2
    ASK_LEVEL = 3
    BBO = 4
    SNAPSHOT_BEGIN = 5
    SNAPSHOT_END = 6
    HEARTBEAT = 7
    BOOK_INVALID = 8  # the symbol's book is invalid until its next snapshot (a producer's gap)


class Side(IntEnum):
    """`wb_event.side`: trade aggressor, or which side of the book a BBO event quotes."""

    NONE = 0
    BUY = 1
    SELL = 2


class EventFlag(IntFlag):
    """`wb_event.flags` bits (WB_FLAG_* in wb_event.h)."""

    SNAPSHOT = 1
    LAST_IN_MSG = 2
    GAP = 4


# plain-int aliases for the hot paths and numba kernels (see the module docstring)
K_TRADE = int(EventKind.TRADE)
K_BID = int(EventKind.BID_LEVEL)
K_ASK = int(EventKind.ASK_LEVEL)
K_BBO = int(EventKind.BBO)
K_SNAP_BEGIN = int(EventKind.SNAPSHOT_BEGIN)
K_SNAP_END = int(EventKind.SNAPSHOT_END)
K_HEARTBEAT = int(EventKind.HEARTBEAT)
K_BOOK_INVALID = int(EventKind.BOOK_INVALID)
S_BUY = int(Side.BUY)
S_SELL = int(Side.SELL)
F_SNAPSHOT = int(EventFlag.SNAPSHOT)
F_LAST = int(EventFlag.LAST_IN_MSG)
F_GAP = int(EventFlag.GAP)


class MessageKind(IntEnum):
    """What one raw message was, for sequencing and counting."""

    OTHER = 0  # understood but carries no events we use (subscription acks, klines, ...)
    SNAPSHOT = 1  # full book for one symbol
    DELTA = 2  # incremental book update for one symbol
    TRADE = 3
    BBO = 4
    HEARTBEAT = 5
    MALFORMED = 6  # skipped; counted in the normalizer's stats.malformed
    BOOK_INVALID = 7  # a producer (the native handler) found a gap: the book waits for a snapshot


M_OTHER = int(MessageKind.OTHER)
M_SNAPSHOT = int(MessageKind.SNAPSHOT)
M_DELTA = int(MessageKind.DELTA)
M_TRADE = int(MessageKind.TRADE)
M_BBO = int(MessageKind.BBO)
M_HEARTBEAT = int(MessageKind.HEARTBEAT)
M_MALFORMED = int(MessageKind.MALFORMED)
M_BOOK_INVALID = int(MessageKind.BOOK_INVALID)


class MessageInfo:
    """Sequence metadata of one normalized message (a normalizer reuses one instance as its
    `last`: copy the fields to keep them).

    kind: a MessageKind value (M_*). channel: the venue's message type label ('depthUpdate',
    'bookTicker', 'orderbook', 'l2_data', ...), used for counts. symbol_id: 0 when the message
    has none. first_id / last_id / prev_id: venue update ids, -1 when absent:
      Binance depth: U / u / pu (pu futures only); REST snapshot: last_id = lastUpdateId.
      Bybit orderbook: first_id = last_id = u. Coinbase: first_id = last_id = sequence_num.
    seq: the per-connection sequence (Coinbase sequence_num on every message, Bybit `seq`),
    -1 when absent. ts_event_ns: venue event time in ns, 0 when absent.
    """

    __slots__ = ("channel", "first_id", "kind", "last_id", "prev_id", "seq", "symbol_id",
                 "ts_event_ns")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to an OTHER message with no symbol and no ids."""
        self.kind = M_OTHER
        self.channel = ""
        self.symbol_id = 0
        self.first_id = -1
        self.last_id = -1
        self.prev_id = -1
        self.seq = -1
        self.ts_event_ns = 0

    def copy(self) -> MessageInfo:
        """A new MessageInfo with the same fields."""
        out = MessageInfo()
        for name in MessageInfo.__slots__:
            setattr(out, name, getattr(self, name))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in MessageInfo.__slots__)
        return f"MessageInfo({fields})"


def empty_batch(n: int) -> np.ndarray:
    """A zeroed batch of `n` events, shape (n,), dtype EVENT_DTYPE."""
    return np.zeros(n, dtype=EVENT_DTYPE)
