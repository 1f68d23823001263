"""The Venue record: everything the workbench knows of one venue, in one frozen value.

Each venue module (binance.py, bybit.py, coinbase.py, tardis.py) builds its records from the
types here and lists them in its `RECORDS`; `workbench.feed.venues.get_venue(key)` finds them.
The rest of the workbench looks venue facts up in the record and never branches on venue
names:

- `Venue`: the normalizer venue key, its Normalizer factory, subscribe builder, REST depth
  market, sequencing rule (`workbench.book.sequencing`), websocket path on SimExchange,
  SimExchange dialect and simulator format.
- `RestMarket`: one REST depth-snapshot endpoint (base URL, path, legal limits, request weight,
  response keys).
- `Dialect`: how SimExchange speaks one exchange family's protocol (message keys, book deltas,
  requests and replies, per-connection framing, event times, REST depth bodies); `SimSession`
  is what a dialect may use of a SimExchange connection.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from workbench.book.sequencing import SyncRule

if TYPE_CHECKING:
    from workbench.feed.venues.base import Normalizer


@dataclass(frozen=True)
class RestMarket:
    """One REST depth-snapshot endpoint of a venue.

    name: a label for messages ('spot', 'usdm', 'coinm'). base_url: the venue's host
    ('https://fapi.binance.com'). path: the depth path ('/fapi/v1/depth'). limits: the legal
    values of the `limit` parameter (levels per side). default_limit: what the venue uses when
    `limit` is not sent. weight(limit): the request weight of one call. weight_limit_1m: the
    request weight the venue allows per calendar minute (per IP). fields: the keys of the
    depth response, in the venue's order (what SimExchange answers with).
    """

    name: str
    base_url: str
    path: str
    limits: Collection[int]
    default_limit: int
    weight: Callable[[int], int]
    weight_limit_1m: int
    fields: tuple[str, ...]


class SimSession(Protocol):
    """What a Dialect may use of one SimExchange websocket connection.

    sub_names: subscription names in subscribe order. subs: message key -> the subscription
    names selecting it, UTF-8, as the client spelled them, in subscribe order. seq: the
    connection's own message counter (a dialect that numbers frames per connection keeps
    it). raw: frames go out without their envelope (set from `Dialect.accept`).
    """

    sub_names: list[str]
    subs: Mapping[bytes, Sequence[bytes]]
    seq: int
    raw: bool

    def add(self, names: list[str]) -> None:
        """Subscribe to `names` (venue subscription names)."""

    def remove(self, names: list[str]) -> None:
        """Unsubscribe from `names`."""

    def simulated_book(self, symbol: str) -> list[bytes]:
        """The simulator's current book of `symbol` as the venue sends it on subscribe (the
        simulator's format); [] when the source is a recording or has no such symbol."""


class Dialect:
    """SimExchange's side of one exchange family's websocket protocol. Subclasses (one per
    family, in the venue modules) implement the keys, `is_delta` and `answer`.

    family: the SimExchange `venue=` name ('binance', 'bybit', 'coinbase'). bad_request: the
    frame answering a client frame that is not a valid request. shifts_times: the dialect
    implements `shift_times` (SimExchange's `now=True` needs it).
    """

    family = ""
    bad_request = b""
    shifts_times = False

    def subscription_key(self, name: str) -> bytes:
        """The message key a subscription name selects (also the key of the simulator's
        stream names)."""
        raise NotImplementedError

    def message_key(self, message: bytes) -> bytes:
        """The key of one stream message (what `subscription_key` of its subscription
        gives); b'' for a message no subscription selects."""
        raise NotImplementedError

    def is_delta(self, message: bytes) -> bool:
        """True if `message` is an incremental book update."""
        raise NotImplementedError

    def accept(self, path: str, query: str) -> tuple[list[str], bool] | None:
        """A connection opened at URL `path` and `query`: (subscriptions it starts with,
        raw), or None to refuse the path. Default: any path, no subscriptions, not raw."""
        return [], False

    def answer(self, request: dict[str, Any], session: SimSession) -> list[bytes]:
        """Act on one decoded client request and return the frames to send back. Raises
        FeedError (an unknown method), KeyError or TypeError (a malformed one) for a request
        the venue would reject."""
        raise NotImplementedError

    def framer(self, session: SimSession) -> Callable[[bytes], bytes | list[bytes]] | None:
        """The rewrite of each stream message sent on `session` (decided once per
        connection; it may read the session's current `subs`), or None to send messages as
        they are. The rewrite returns the frame, or a list of frames when the message goes out
        once per subscription that selects it."""
        return None

    def shift_times(self, message: bytes, shift: Callable[[int], int]) -> bytes:
        """`message` with each exchange time field (ms since the epoch) replaced by
        `shift(value)`. Only dialects with `shifts_times` implement it."""
        raise NotImplementedError

    def rest_body(self, market: RestMarket, symbol: str, body: bytes,
                  shift: Callable[[int], int] | None) -> bytes:
        """The REST depth response of `market` for `symbol` from `body` (the source's
        snapshot, possibly in another market's shape): the keys of `market.fields`, exchange
        times passed through `shift` when it is not None. Default: `body` unchanged."""
        return body

    def recorded_snapshot(self, key: bytes, message: bytes) -> tuple[bytes, bytes] | None:
        """(SYMBOL, REST body) if a recorded message is a REST depth snapshot (SYMBOL b'' when
        the line names none), else None."""
        return None

    def book_symbol(self, key: bytes) -> bytes | None:
        """The SYMBOL of a book stream's key, None for other keys (to attribute recorded REST
        snapshots that name no symbol)."""
        return None


@dataclass(frozen=True)
class Venue:
    """One venue: everything the workbench needs to read, sequence and simulate it.

    key: the normalizer venue key ('binance-usdm'), also the symbol registry's venue.
    normalizer(registry=SYMBOLS, **options) -> Normalizer: a new normalizer (options such as
    default_symbol= or capacity= go to its class). subscribe(symbols, channels=None) ->
    list[bytes]: the subscribe frames (channels None: the venue's book, BBO and trades).
    sequencing: the BookSync rule. rest: the REST depth market, None for venues without REST
    snapshots (a resync resubscribes instead). ws_path: the websocket stream path on
    SimExchange ('/stream', '/v5/public/linear', ''). dialect: how SimExchange speaks the
    venue's protocol, None for venues it does not serve. simulator: the SimConfig.venue format
    the built-in simulator writes for this venue, None when it does not simulate it.
    """

    key: str
    normalizer: Callable[..., Normalizer]
    subscribe: Callable[..., list[bytes]]
    sequencing: SyncRule
    rest: RestMarket | None = None
    ws_path: str = ""
    dialect: Dialect | None = None
    simulator: str | None = None
    ws_url: str = ""

    @property
    def exchange(self) -> str | None:
        """The SimExchange dialect family ('binance' | 'bybit' | 'coinbase'), None if
        SimExchange does not serve this venue."""
        return self.dialect.family if self.dialect is not None else None


def string_after(message: bytes, marker: bytes) -> bytes:
    """The JSON string value after `marker` (e.g. b'"stream":"') up to its closing quote; b''
    when `marker` is absent."""
    start = message.find(marker)
    if start < 0:
        return b""
    start += len(marker)
    return message[start:message.find(b'"', start)]
