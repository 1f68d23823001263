"""Property-based tests of every venue normalizer on mutated real messages (hypothesis).

Seeds: real messages of each venue from the shared recordings (up to SEEDS_PER_TYPE of every
message type, read through `workbench.feed.replay`; Binance also in the bare `/ws` form).
Mutations: a field dropped, retyped or given a huge, tiny or non-finite number (as a JSON
token or a numeric string), a value nested thousands deep, an extra key (a book key where the
venue does not document it), keys reordered, the bytes truncated, non-UTF-8 bytes inserted, a
byte changed. Properties:
- nothing escapes `normalize`; it returns an EVENT_DTYPE batch;
- each input counts one message and is either normalized or counted malformed once (a
  malformed message has no events and `last.kind` MALFORMED);
- every event is sane: a known kind, price finite and > 0 where the kind has one (0 where it
  has none), qty finite and >= 0, event time >= 0 and within int64 ns (`MAX_TIME_MS`), the
  caller's receive time, the running message count, LAST_IN_MSG on the last event only, a
  symbol on every event but a heartbeat;
- keys reordered (any object, any depth) give exactly the events of the unmutated message
  (bid and ask arrays may swap places).

Examples: the `fuzz-ci` hypothesis profile (CI set: EXAMPLES_CI per venue, over 10k in all,
no example database) or `fuzz-dev` (a quick local run; failures kept in the git-ignored
.hypothesis/ directory).
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from workbench.events import EVENT_DTYPE, F_LAST, EventKind, MessageKind
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import normalizer_for
from workbench.feed.venues.base import MAX_TIME_MS

EXAMPLES_CI = 1500  # per venue: 7 venues, 10,500 examples
settings.register_profile("fuzz-ci", max_examples=EXAMPLES_CI, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("fuzz-dev", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
PROFILE = settings.get_profile("fuzz-ci" if os.environ.get("CI") else "fuzz-dev")

SEEDS_PER_TYPE = 25
MAX_SEED_BYTES = 8192
# venue -> (recording, connection or None for all)
SOURCES = {
    "binance": [("binance/hftbacktest/spot/btcusdt_20240808.gz", None),
                ("binance/cryptofeed_v3/BINANCE.jsonl.zst", None)],
    "binance-usdm": [("binance/hftbacktest/usdm/btcusdt_20240808.gz", None),
                     ("binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", None)],
    "binance-coinm": [("binance/hftbacktest/cm/btcusd_perp_20240808.gz", None)],
    "bybit": [("bybit/BYBIT.jsonl.zst", "BYBIT.ws.2"), ("bybit/xrpusdt-ob500.data.zip", None)],
    "bybit-spot": [("bybit/BYBIT.jsonl.zst", "BYBIT.ws.3")],
    "coinbase": [("coinbase/COINBASE.jsonl.zst", None)],
    "tardis": [("tardis_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv", None),
               ("tardis_samples/binance-futures_book_snapshot_5_BTCUSDT.csv", None),
               ("binance/nautilus/tardis_trades.csv.gz", None),
               ("binance/nautilus/tardis_quotes.csv.gz", None)],
}
# bare REST depth bodies name no symbol: Binance normalizers get one
OPTIONS = {v: {"default_symbol": "BTCUSDT"} for v in ("binance", "binance-usdm", "binance-coinm")}
PRICED = {int(EventKind.TRADE), int(EventKind.BID_LEVEL), int(EventKind.ASK_LEVEL),
          int(EventKind.BBO)}
MAX_TIME_NS = MAX_TIME_MS * 1_000_000
RECV_NS = 1_723_161_255_000_000_000


class Token(str):
    """Written into the JSON verbatim (a number JSON can spell but Python floats cannot)."""


def encode(value: object) -> str:
    """Compact JSON of a decoded message, Tokens verbatim, keys in their dict order."""
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + encode(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


NUMBER_TOKENS = [Token(t) for t in (
    "1e400", "-1e400", "1e-400", "-0", "0", "0.0", "-1", "1E+99999999999999999999",
    "99999999999999999999999", "-99999999999999999999999", "18446744073709551616",
    "9223372036854775808", "1.7976931348623157e309", "5e-324")]
NUMERIC_STRINGS = ["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1", "0", "-0",
                   "61800.20.5", "1e99999999999999999999", " 1", "1 ", "0x10", "１", "", ".5",
                   "5.", "1e", "--1", "+1", "01", "99999999999999999999999"]
RETYPED = ["", "x", True, False, None, [], {}, [[1, 2]], {"b": [["1", "1"]]}, 0, -1, 1.5,
           2**64, 10**30, -(2**63) - 1, [["1", "1", "1"]], [["1"]], "2024-01-01T00:00:00Z",
           "9999-01-01T00:00:00Z", "1969-12-31T23:59:59Z"]
EXTRA_KEYS = ["b", "a", "u", "U", "pu", "E", "T", "s", "e", "data", "stream", "topic", "type",
              "ts", "lastUpdateId", "bids", "asks", "events", "updates", "sequence_num",
              "channel", "tardis"]
OPS = ("drop", "retype", "number", "numeric_string", "nest", "extra_key", "reorder",
       "truncate", "non_utf8", "flip")


@cache
def seeds(root: Path, venue: str) -> tuple[bytes, ...]:
    """Real messages of `venue`: up to SEEDS_PER_TYPE of each message type (and, for
    Binance, each combined-stream frame also in its bare `/ws` form)."""
    by_type: dict[str, list[bytes]] = {}
    for rel, conn in SOURCES[venue]:
        records = open_recording(root / rel).records()
        for record in islice(records, 20_000):
            if (conn is not None and record.conn != conn) or len(record.message) > MAX_SEED_BYTES:
                continue
            label = _type_of(record.message)
            found = by_type.setdefault(label, [])
            if len(found) < SEEDS_PER_TYPE:
                found.append(record.message)
    out = [m for found in by_type.values() for m in found]
    if venue.startswith("binance"):
        out += [json.dumps(json.loads(m)["data"], separators=(",", ":")).encode()
                for m in out if m.startswith(b'{"stream"')]
    assert len(out) >= 5, (venue, by_type.keys())
    return tuple(out)


def _type_of(message: bytes) -> str:
    msg = json.loads(message)
    data = msg.get("data", msg) if isinstance(msg, dict) else msg
    if isinstance(data, list):
        data = data[0] if data else {}
    keys = ("e", "channel", "topic", "tardis", "type")
    found = [str(data.get(k) or msg.get(k)) for k in keys if data.get(k) or msg.get(k)]
    return "/".join(found)[:40] or ("snapshot" if "lastUpdateId" in data else "?")


def _nodes(tree: object) -> list[tuple[object, object]]:
    """(container, key) of every value under the root."""
    out: list[tuple[object, object]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        items = (node.items() if isinstance(node, dict)
                 else enumerate(node) if isinstance(node, list) else ())
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return out


def _shuffled(value: object, rng: random.Random) -> object:
    """The same value with the keys of every object in a new order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def mutate(seed: bytes, op: str, rng: random.Random) -> bytes:
    """One mutation of a real message (see the module docstring)."""
    if op == "truncate":
        return seed[:rng.randrange(len(seed))]
    if op == "non_utf8":
        pos = rng.randrange(len(seed) + 1)
        return seed[:pos] + bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randint(1, 3))
                                  ) + seed[pos:]
    if op == "flip":
        pos = rng.randrange(len(seed))
        return seed[:pos] + bytes([rng.randrange(256)]) + seed[pos + 1:]
    tree = json.loads(seed)
    if op == "reorder":
        return encode(_shuffled(tree, rng)).encode()
    nodes = _nodes(tree)
    if not nodes:
        return seed
    parent, key = rng.choice(nodes)
    if op == "drop":
        del parent[key]  # type: ignore[union-attr]
    elif op == "retype":
        parent[key] = rng.choice(RETYPED)  # type: ignore[index]
    elif op == "number":
        parent[key] = rng.choice(NUMBER_TOKENS)  # type: ignore[index]
    elif op == "numeric_string":
        parent[key] = rng.choice(NUMERIC_STRINGS)  # type: ignore[index]
    elif op == "nest":
        depth = rng.choice((2, 40, 600, 1100, 3000))
        opener, closer = ('{"k":', "}") if rng.random() < 0.5 else ("[", "]")
        parent[key] = Token(opener * depth + encode(parent[key]) + closer * depth)  # type: ignore[index]
    elif op == "extra_key":
        dicts = [tree] + [p[k] for p, k in nodes if isinstance(p[k], dict)]  # type: ignore[index]
        rng.choice(dicts)[rng.choice(EXTRA_KEYS)] = rng.choice(RETYPED + NUMBER_TOKENS)
    return encode(tree).encode()


def check_sane(events: np.ndarray, norm: object, before: tuple[int, int, int]) -> None:
    """The properties of one normalize call (see the module docstring)."""
    messages, events_before, malformed = before
    stats = norm.stats  # type: ignore[attr-defined]
    assert events.dtype == EVENT_DTYPE
    assert stats.messages == messages + 1
    assert stats.events == events_before + len(events)
    if norm.last.kind == MessageKind.MALFORMED:  # type: ignore[attr-defined]
        assert len(events) == 0 and stats.malformed_total == malformed + 1
        return
    assert stats.malformed_total == malformed
    if not len(events):
        return
    kind = events["kind"].astype(int)
    price, qty = events["price"], events["qty"]
    assert set(kind.tolist()) <= {int(k) for k in EventKind}
    priced = np.isin(kind, list(PRICED))
    assert np.all(np.isfinite(price[priced]) & (price[priced] > 0)), events
    assert np.all(price[~priced] == 0) and np.all(qty[~priced] == 0)
    assert np.all(np.isfinite(qty) & (qty >= 0)), events
    ts = events["ts_event_ns"]
    assert np.all((ts >= 0) & (ts <= MAX_TIME_NS)), ts
    assert np.all(events["ts_recv_ns"] == RECV_NS)
    assert np.all(events["seq"] == stats.messages)
    last = (events["flags"] & F_LAST) != 0
    assert last[-1] and not last[:-1].any()
    assert np.all((events["symbol_id"] > 0) | (kind == EventKind.HEARTBEAT))


def _fuzz(root: Path, venue: str, seed_index: int, op: str, rng: random.Random) -> None:
    pool = seeds(root, venue)
    seed = pool[seed_index % len(pool)]
    message = mutate(seed, op, rng)
    note(f"{venue} {op}: {message[:600]!r}")
    registry = SymbolRegistry()
    norm = normalizer_for(venue, registry, **OPTIONS.get(venue, {}))
    stats = norm.stats
    before = (stats.messages, stats.events, stats.malformed_total)
    events = norm.normalize(message, RECV_NS)
    check_sane(events, norm, before)
    if op == "reorder":  # the same events as the message as recorded
        same = normalizer_for(venue, registry, **OPTIONS.get(venue, {}))
        expected = same.normalize(seed, RECV_NS).copy()
        assert (norm.last.kind, stats.malformed) == (same.last.kind, same.stats.malformed)
        assert np.array_equal(_by_kind(events), _by_kind(expected)), (events, expected)


def _by_kind(events: np.ndarray) -> np.ndarray:
    """Events grouped by kind in a stable order, LAST_IN_MSG cleared: reordered keys may put
    the ask array before the bid array, which changes nothing else."""
    out = events[np.argsort(events["kind"], kind="stable")]
    out["flags"] &= ~np.uint16(F_LAST)
    return out


@pytest.mark.parametrize("venue", sorted(SOURCES))
@PROFILE
@given(seed_index=st.integers(0, 10_000), op=st.sampled_from(OPS), rng=st.randoms())
def test_mutated_real_messages(shared_data: Path, venue: str, seed_index: int, op: str,
                               rng: random.Random) -> None:
    _fuzz(shared_data, venue, seed_index, op, rng)


@pytest.mark.parametrize("venue", sorted(SOURCES))
def test_every_seed_normalizes_cleanly(shared_data: Path, venue: str) -> None:
    """The unmutated seeds are valid: no malformed message, and events from at least
    SEEDS_PER_TYPE of them (the fuzz properties mean something only if the seeds
    normalize)."""
    norm = normalizer_for(venue, SymbolRegistry(), **OPTIONS.get(venue, {}))
    with_events = 0
    for seed in seeds(shared_data, venue):
        with_events += len(norm.normalize(seed, RECV_NS)) > 0
    assert not norm.stats.malformed, norm.stats.skipped
    assert with_events >= SEEDS_PER_TYPE
