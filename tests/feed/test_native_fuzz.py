"""Bad input through the C++ venue parsers (NativeParser), judged against the Python normalizers.

Seeds and mutations are tests/feed/test_fuzz.py's (real messages of each venue from the shared
recordings, Binance also in the bare `/ws` form; a field dropped, retyped or given a huge, tiny
or non-finite number as a token or a numeric string, a value nested up to 3000 deep, an extra
key, keys reordered, truncation at any position, non-UTF-8 bytes, a byte changed), plus fixed
inputs (empty, whitespace, scalars, a REST error body, unknown types, very deep nesting).
Properties of every input:
- nothing crashes; the call counts one message; a refused message has no events, info kind
  MALFORMED with its malformed kind, and is counted once under that kind;
- accept/refuse agrees with the Python normalizer, and an accepted message has exactly the
  Python events and message info;
- the malformed kind equals Python's whenever the input is valid JSON (RFC 8259: parsed by
  `json.loads` without NaN/Infinity; nesting beyond Python's recursion limit counts as valid).

The deliberate differences (parse.cpp's header) the checks allow:
- symbols: the parser knows the seed's symbols only; a mutant naming another is refused
  'unknown_symbol' where Python registers it and accepts;
- invalid JSON: both refuse, with any kinds ('json' wherever simdjson finds the fault first,
  e.g. a truncated quoted price is 'bad_price' in `_levels` and 'json' here; a top-level array
  with a syntax error later is 'schema' in msgspec and 'json' here); the one exception is
  invalid UTF-8 inside a string nobody decodes, accepted by Python and refused 'json' here;
- nesting of DEPTH_BAND (900) containers or more in non-book messages: msgspec raises
  RecursionError at Python's recursion limit minus the stack (1000 by default, raised by
  hypothesis while a test runs), the parser at LAX_MAX_DEPTH (960): there either may say
  'depth' where the other accepts or names another fault.
Deterministic: hypothesis derandomized, EXAMPLES per venue.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from test_fuzz import OPS, OPTIONS, RECV_NS, mutate, seeds

from workbench.events import EVENT_DTYPE, F_LAST, MessageKind
from workbench.feed.native_parser import NativeParser
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import normalizer_for

VENUES = ("binance", "binance-usdm", "binance-coinm", "bybit", "bybit-spot", "coinbase")
EXAMPLES = 800
# nesting from which msgspec's RecursionError depends on the stack and the recursion limit
# (1000, raised by hypothesis while a test runs) and the parser's LAX_MAX_DEPTH (960)
DEPTH_BAND = 900
INFO_FIELDS = ("kind", "symbol_id", "first_id", "last_id", "prev_id", "seq", "ts_event_ns")
FIXED = [b"", b" ", b"\n\t ", b"null", b"true", b"0", b"-1", b'"x"', b"[]", b"{}", b"[{}]",
         b'{"code":-1003,"msg":"Way too much request weight used; IP banned until '
         b'1723161255000."}',
         b'{"result":null,"id":1}', b'{"success":true,"op":"subscribe","conn_id":"x"}',
         b'{"e":"somethingNew","E":1}', b'{"topic":"somethingNew.X","ts":1,"data":{}}',
         b'{"channel":"somethingNew","sequence_num":1}', b'{"stream":"x@kline_1m","data":{}}',
         b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
         b'{"stream":"btcusdt@depth","data":' + b"[" * 100 + b"]" * 100 + b"}",
         b"\xff\xfe", b'{"x":"\xff"}', b"{\"stream\":\"btcusdt@trade\"", b"\x00" * 80]


def valid_json(message: bytes) -> bool:
    """RFC 8259 JSON (UTF-8, no NaN/Infinity); nesting too deep for Python counts as valid."""
    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(message, parse_constant=no_constants)
    except RecursionError:
        return True
    except ValueError:
        return False
    return True


def nesting(message: bytes) -> int:
    """The deepest container nesting of a message (brackets outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in message:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def malformed_kind(stats_before: dict, stats_after: dict) -> str | None:
    grown = [k for k, v in stats_after.items() if v != stats_before.get(k, 0)]
    return grown[0] if grown else None


def check(venue: str, seed: bytes, message: bytes) -> None:
    """One mutated message through both paths (see the module docstring)."""
    registry = SymbolRegistry()
    options = OPTIONS.get(venue, {})
    warm = normalizer_for(venue, registry, **options)
    warm.normalize(seed, RECV_NS)  # registers the seed's symbols
    known = [s for _, v, s in registry.items() if v == venue]
    norm = normalizer_for(venue, registry, **options)
    size = len(registry)
    expected = norm.normalize(message, RECV_NS).copy()
    py_kind = next(iter(norm.stats.malformed), None)
    new_symbol = len(registry) > size
    parser = NativeParser(venue, registry, symbols=known, **options)
    before = parser.stats()
    events, info = parser.parse(message, RECV_NS)
    after = parser.stats()
    kind = malformed_kind(before["malformed"], after["malformed"])
    detail = f"python {py_kind!r} native {kind!r}: {message[:300]!r}"
    # the boundary: one message counted; refused = no events, MALFORMED, counted once
    assert events.dtype == EVENT_DTYPE
    assert after["messages"] == before["messages"] + 1
    assert after["events"] == before["events"] + len(events)
    if info.kind == MessageKind.MALFORMED:
        assert len(events) == 0 and info.channel == kind and info.seq == -1
        assert sum(after["malformed"].values()) == sum(before["malformed"].values()) + 1
    else:
        assert kind is None and info.channel == ""
        if len(events):
            last = (events["flags"] & F_LAST) != 0
            assert last[-1] and not last[:-1].any()
            assert np.all(events["seq"] == after["messages"])
    # against Python
    if "depth" in (kind, py_kind) and kind != py_kind:  # Python's recursion limit
        assert nesting(message) >= DEPTH_BAND, detail
        return
    if kind == "unknown_symbol" and py_kind is None:
        assert new_symbol, detail
        return
    if py_kind is None and kind is None:
        assert events.tobytes() == expected.tobytes(), (detail, events, expected)
        assert all(getattr(info, f) == getattr(norm.last, f) for f in INFO_FIELDS), (
            detail, info, norm.last)
        return
    if py_kind is None:  # only: invalid UTF-8 that Python never decoded
        assert kind == "json" and not valid_json(message), detail
        with pytest.raises(UnicodeDecodeError):  # it is not UTF-8
            message.decode()
        return
    assert kind is not None, detail
    if valid_json(message):
        assert kind == py_kind, detail


@pytest.mark.parametrize("venue", VENUES)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed_index=st.integers(0, 10_000), op=st.sampled_from(OPS), rng=st.randoms())
def test_mutated_real_messages_agree_with_python(shared_data: Path, venue: str,
                                                 seed_index: int, op: str,
                                                 rng: random.Random) -> None:
    pool = seeds(shared_data, venue)
    seed = pool[seed_index % len(pool)]
    message = mutate(seed, op, rng)
    note(f"{venue} {op}: {message[:600]!r}")
    check(venue, seed, message)


@pytest.mark.parametrize("venue", VENUES)
def test_fixed_bad_inputs_agree_with_python(shared_data: Path, venue: str) -> None:
    seed = seeds(shared_data, venue)[0]
    for message in FIXED:
        check(venue, seed, message)


@pytest.mark.parametrize("venue", VENUES)
def test_every_seed_parses_like_python(shared_data: Path, venue: str) -> None:
    """The unmutated seeds (the fuzz properties mean something only if they parse)."""
    for seed in seeds(shared_data, venue):
        check(venue, seed, seed)
