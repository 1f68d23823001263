"""The normalized market-data event and its numpy dtype.

`EVENT_DTYPE` mirrors `struct wb_event` in `csrc/wb_event.h` field by field: 64 bytes, one cache
line. A *batch* is a 1-D numpy array of `EVENT_DTYPE`. Times are int64 ns; prices and quantities
are float64 (venue decimal strings are parsed once, at the edge).
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


def empty_batch(n: int) -> np.ndarray:
    """A zeroed batch of `n` events, shape (n,), dtype EVENT_DTYPE."""
    return np.zeros(n, dtype=EVENT_DTYPE)
