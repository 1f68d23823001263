"""Sequencing rules: how one venue's book messages follow each other, for `BookSync`.

A rule judges a delta by its update ids (`MessageInfo.first_id`, `last_id`, `prev_id`; -1 when
the venue has none) with three predicates, and sets three flags:

- `follows(last_applied, first, last, prev)`: the delta continues a live book whose last
  applied update id is `last_applied`.
- `stale(last, reference)`: the delta is older than `reference` (a snapshot's id or the last
  applied one): dropped, not a gap.
- `straddles(snapshot_id, first, last, prev)`: the delta may be the first one applied after a
  snapshot whose id is `snapshot_id`.
- `connection_seq`: `MessageInfo.seq` counts every message of the connection (all channels),
  so a jump is a gap for every book of the connection.
- `buffer_predates_snapshot`: deltas buffered while a book waited are older than the next
  snapshot on the same connection: dropped as stale when it arrives.
- `live_on_snapshot`: deltas apply as they come right after a snapshot (no straddling delta is
  looked for).

The rules (each venue's `Venue.sequencing` names its own):

- `BINANCE_SPOT`, `BINANCE_FUTURES` (Binance "How to manage a local order book correctly",
  spot and USDⓈ-M/COIN-M futures docs): on the snapshot (lastUpdateId L) drop buffered deltas
  with u <= L (spot) or u < L (futures); the first applied delta must straddle L: U <= L+1 <= u
  (spot) or U <= L <= u (futures; also a delta with pu == L, the update right after the
  snapshot: a snapshot taken between two deltas has no straddling one); afterwards each delta
  must follow the previous one: U == previous u + 1 (spot) or pu == previous u (futures). A
  first delta beyond the straddle means the snapshot is too old: a gap, resync again.
- `BYBIT` (Bybit v5 orderbook docs): a snapshot (or a message with u == 1, marked SNAPSHOT by
  the normalizer) replaces the book; each delta's u must be previous u + 1; deltas with u <=
  the book's u are stale.
- `COINBASE` (Advanced Trade): `sequence_num` counts every message of a connection, so the
  connection sequence is checked on every message and a jump invalidates every book (the owner
  resubscribes: Coinbase sends fresh snapshots); buffered deltas predate the next snapshot.
- `UNSEQUENCED`: no update ids (Tardis CSV replays, normalized events from a ring, shadow
  books): snapshots reset, deltas apply in order.

The rules are stateless; one instance each serves every BookSync.
"""

from __future__ import annotations


class SyncRule:
    """A sequencing rule (the module docstring). This base is the rule of venues without
    update ids; subclasses override the predicates and flags of their venue."""

    name = ""
    connection_seq = False
    buffer_predates_snapshot = False
    live_on_snapshot = False

    def follows(self, last_applied: int, first: int, last: int, prev: int) -> bool:
        """The delta (first, last, prev) continues a book whose last applied id is
        `last_applied`."""
        return True

    def stale(self, last: int, reference: int) -> bool:
        """The delta ending at `last` is older than `reference`."""
        return False

    def straddles(self, snapshot_id: int, first: int, last: int, prev: int) -> bool:
        """The delta (first, last, prev) may be the first applied after snapshot
        `snapshot_id`."""
        return True

    def __repr__(self) -> str:
        return f"<sequencing rule {self.name}>"


class BinanceSpot(SyncRule):
    """Binance spot: U == previous u + 1; stale if u <= reference; U <= L+1 <= u straddles."""

    name = "binance-spot"

    def follows(self, last_applied: int, first: int, last: int, prev: int) -> bool:
        return first == last_applied + 1

    def stale(self, last: int, reference: int) -> bool:
        return last <= reference

    def straddles(self, snapshot_id: int, first: int, last: int, prev: int) -> bool:
        return first <= snapshot_id + 1 <= last


class BinanceFutures(SyncRule):
    """Binance USDⓈ-M and COIN-M futures: pu == previous u; stale if u < reference;
    U <= L <= u or pu == L straddles."""

    name = "binance-futures"

    def follows(self, last_applied: int, first: int, last: int, prev: int) -> bool:
        return prev == last_applied

    def stale(self, last: int, reference: int) -> bool:
        return last < reference

    def straddles(self, snapshot_id: int, first: int, last: int, prev: int) -> bool:
        return first <= snapshot_id <= last or prev == snapshot_id


class Bybit(SyncRule):
    """Bybit v5: u == previous u + 1; stale if u <= reference; live from the snapshot."""

    name = "bybit"
    live_on_snapshot = True

    def follows(self, last_applied: int, first: int, last: int, prev: int) -> bool:
        return last == last_applied + 1

    def stale(self, last: int, reference: int) -> bool:
        return last <= reference

    def straddles(self, snapshot_id: int, first: int, last: int, prev: int) -> bool:
        return last == snapshot_id + 1


class Coinbase(SyncRule):
    """Coinbase Advanced Trade: the connection's sequence_num checked on every message;
    buffered deltas predate the next snapshot; live from the snapshot."""

    name = "coinbase"
    connection_seq = True
    buffer_predates_snapshot = True
    live_on_snapshot = True


class Unsequenced(SyncRule):
    """No update ids: snapshots reset, deltas apply in order."""

    name = "unsequenced"
    buffer_predates_snapshot = True
    live_on_snapshot = True


BINANCE_SPOT = BinanceSpot()
BINANCE_FUTURES = BinanceFutures()
BYBIT = Bybit()
COINBASE = Coinbase()
UNSEQUENCED = Unsequenced()
