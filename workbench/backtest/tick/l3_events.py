"""Bitfinex raw (R0, market-by-order) book recordings read into an L3 event array.

Source format: Bitfinex API v2 WebSocket, "WebSocket Public Channels: Raw Books"
(docs.bitfinex.com/reference-link/ws-public-raw-books): after the `info` and `subscribed`
events, one snapshot `[chanId, [[ORDER_ID, PRICE, AMOUNT], ...]]`, then updates
`[chanId, [ORDER_ID, PRICE, AMOUNT]]` (AMOUNT > 0 bid, < 0 ask; PRICE 0: remove the order from
the book), and heartbeats `[chanId, "hb"]`. An update for an order id already in the book is a
change of that order (its new price and amount). The subscription's LENGTH ("25" in the shared
recording) bounds the orders sent per side, so a removal may also be an order leaving that
window, not only a cancel or a fill; the channel carries no trades and no timestamps.

`read_l3(path)` returns `L3Events`: `rows`, a numpy structured array of `L3_DTYPE` (shape (n,)):

- ts_event_ns, ts_recv_ns (int64 ns): synthetic, as the recording has no clock: the message's
  index in the file (0-based, every message counts, events and heartbeats too) times
  `interval_ns`, plus `start_ns`; both timelines are equal (no feed latency can be known).
  All rows of one snapshot share its message's time.
- order_id (int64), side (int8: +1 bid, -1 ask; from AMOUNT's sign, also on a removal),
  price (float64, 0 on a removal), qty (float64, |AMOUNT|, 0 on a removal),
- action (int8): A_ADD (an id not in the book), A_MODIFY (an id in the book), A_DELETE
  (PRICE 0 of an id in the book), A_CLEAR (a snapshot after the first: the book restarts).

and counters: messages, info_events (dict events), heartbeats, snapshots, updates, malformed
(anything else, or any message whose parsing raised: skipped, never fatal), unknown_deletes
(PRICE 0 for an id not in the book: skipped). The file is one JSON array (optionally gzip),
read whole; `max_messages` bounds how much of it is used. Raises RecordingError when the file
cannot be read or is not a JSON array.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from workbench.errors import RecordingError

A_CLEAR, A_ADD, A_MODIFY, A_DELETE = 0, 1, 2, 3

L3_DTYPE = np.dtype([
    ("ts_event_ns", np.int64),
    ("ts_recv_ns", np.int64),
    ("order_id", np.int64),
    ("side", np.int8),
    ("action", np.int8),
    ("price", np.float64),
    ("qty", np.float64),
])


@dataclass
class L3Events:
    """An L3 event array and the reader's counters (module docstring)."""

    rows: np.ndarray
    messages: int = 0
    info_events: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    updates: int = 0
    malformed: int = 0
    unknown_deletes: int = 0
    channel: int | None = None
    subscription: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def _entry(entry) -> tuple[int, float, float]:
    """(order_id, price, amount) of one book entry; ValueError/TypeError when malformed."""
    if not isinstance(entry, list) or len(entry) != 3:
        raise ValueError("a book entry is [ORDER_ID, PRICE, AMOUNT]")
    oid, price, amount = entry
    if not isinstance(oid, int) or isinstance(oid, bool) or oid <= 0:
        raise ValueError("ORDER_ID must be a positive integer")
    price, amount = float(price), float(amount)
    if not (math.isfinite(price) and math.isfinite(amount)) or price < 0 or amount == 0:
        raise ValueError("PRICE must be finite and >= 0, AMOUNT finite and non-zero")
    return oid, price, amount


def parse_messages(messages: list, interval_ns: int = 1_000_000, start_ns: int = 0
                   ) -> L3Events:
    """The L3 events of decoded raw-book messages (module docstring for the rules)."""
    out: list[tuple] = []
    live: set[int] = set()
    ev = L3Events(rows=np.zeros(0, L3_DTYPE))
    for index, msg in enumerate(messages):
        ev.messages += 1
        ts = start_ns + index * interval_ns
        try:
            if isinstance(msg, dict):
                ev.info_events += 1
                if msg.get("event") == "subscribed":
                    ev.subscription = msg
                continue
            if not isinstance(msg, list) or len(msg) != 2 or not isinstance(msg[0], int):
                raise ValueError("a channel message is [chanId, payload]")
            payload = msg[1]
            if payload == "hb":
                ev.heartbeats += 1
                continue
            if isinstance(payload, list) and payload and isinstance(payload[0], list):
                entries = [_entry(e) for e in payload]
                rows = [(ts, ts, 0, 0, A_CLEAR, 0.0, 0.0)] if ev.snapshots else []
                if ev.snapshots:
                    live.clear()
                for oid, price, amount in entries:
                    if price == 0 or oid in live:
                        raise ValueError("a snapshot lists each live order once, PRICE > 0")
                    live.add(oid)
                    rows.append((ts, ts, oid, 1 if amount > 0 else -1, A_ADD, price, abs(amount)))
                out.extend(rows)
                ev.snapshots += 1
                ev.channel = msg[0]
                continue
            oid, price, amount = _entry(payload)
            side = 1 if amount > 0 else -1
            if price == 0:
                if oid not in live:
                    ev.unknown_deletes += 1
                    continue
                live.discard(oid)
                out.append((ts, ts, oid, side, A_DELETE, 0.0, 0.0))
            else:
                action = A_MODIFY if oid in live else A_ADD
                live.add(oid)
                out.append((ts, ts, oid, side, action, price, abs(amount)))
            ev.updates += 1
        except Exception:  # any malformed message is counted and skipped
            ev.malformed += 1
    ev.rows = np.array(out, dtype=L3_DTYPE) if out else np.zeros(0, L3_DTYPE)
    return ev


def read_l3(path: str | Path, interval_ns: int = 1_000_000, start_ns: int = 0,
            max_messages: int | None = None) -> L3Events:
    """The L3 events of a Bitfinex raw-book recording (`.json` or `.json.gz`, one JSON array).

    interval_ns: synthetic time between consecutive messages (ns, > 0); start_ns: time of the
    first message; max_messages: use only the first messages. Raises RecordingError.
    """
    if interval_ns <= 0:
        raise RecordingError(f"interval_ns must be > 0, got {interval_ns}")
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        messages = orjson.loads(raw)
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError) as exc:
        raise RecordingError(f"{path}: not a readable JSON array of messages ({exc})") from exc
    if not isinstance(messages, list):
        raise RecordingError(f"{path}: the recording is not a JSON array of messages")
    if max_messages is not None:
        messages = messages[:max_messages]
    return parse_messages(messages, interval_ns, start_ns)
