"""Serialization phases on the real Binance messages.

- serialization.json_loads / json_dumps: stdlib `json` vs `orjson` (claimed 2-3x).
- serialization.msgpack_cache / msgpack_size: cache payloads (windows of normalized quotes and
  trades) as JSON vs msgpack: round-trip time (claimed 2-5x) and size (claimed 50% smaller).
- serialization.lz4_size / lz4_cost: a large cached market-data payload (the raw messages,
  newline-joined) stored raw vs as an lz4 frame: size (claimed 70% smaller) and the CPU cost of
  a store + load round trip through a file (claimed small: at most 1.5x the raw store time).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lz4.frame
import msgpack
import orjson

from workbench.bench import recorded
from workbench.bench.registry import Claim, Outcome, Phase, first_difference, register
from workbench.errors import PhaseMismatch

QUICK_MESSAGES = 4_000
FULL_MESSAGES = 40_000
CACHE_WINDOW = 500  # records per cached payload


def _raw(quick: bool) -> list[bytes]:
    return [raw for _, raw in recorded.messages(QUICK_MESSAGES if quick else FULL_MESSAGES)]


# -- loads / dumps -------------------------------------------------------------------------

def _loads_json(raws: list[bytes]) -> Outcome:
    return Outcome([json.loads(r) for r in raws], items=len(raws))


def _loads_orjson(raws: list[bytes]) -> Outcome:
    return Outcome([orjson.loads(r) for r in raws], items=len(raws))


def _check_equal(a: list, b: list) -> None:
    first_difference(a, b, "decoded messages")


def _prepare_objects(quick: bool) -> list[Any]:
    return [orjson.loads(r) for r in _raw(quick)]


def _dumps_json(objs: list[Any]) -> Outcome:
    return Outcome([json.dumps(o).encode() for o in objs], items=len(objs))


def _dumps_orjson(objs: list[Any]) -> Outcome:
    return Outcome([orjson.dumps(o) for o in objs], items=len(objs))


def _check_dumps(a: list[bytes], b: list[bytes]) -> None:
    first_difference([json.loads(x) for x in a], [json.loads(x) for x in b], "re-decoded dumps")


register(Phase(
    name="serialization.json_loads", topic="serialization",
    claim=Claim("orjson.loads is 2-3x faster than json.loads on exchange messages", 2.0, 3.0),
    prepare=_raw, baseline=_loads_json, optimized=_loads_orjson, check=_check_equal,
    baseline_label="json.loads", optimized_label="orjson.loads",
))
register(Phase(
    name="serialization.json_dumps", topic="serialization",
    claim=Claim("orjson.dumps is 2-3x faster than json.dumps on exchange messages", 2.0, 3.0),
    prepare=_prepare_objects, baseline=_dumps_json, optimized=_dumps_orjson,
    check=_check_dumps, baseline_label="json.dumps", optimized_label="orjson.dumps",
))


# -- msgpack cache payloads ------------------------------------------------------------------

def _prepare_payloads(quick: bool) -> list[dict[str, Any]]:
    """Cache payloads: windows of CACHE_WINDOW normalized records (numbers, not strings)."""
    quotes, trades = recorded.quotes_and_trades(QUICK_MESSAGES if quick else FULL_MESSAGES)
    q_keys = ("local_ns", "ts_ms", "update_id", "bid", "bid_qty", "ask", "ask_qty")
    t_keys = ("local_ns", "ts_ms", "trade_id", "price", "qty", "buyer_is_maker")
    q_rows = [dict(zip(q_keys, q, strict=True)) for q in quotes]
    t_rows = [dict(zip(t_keys, t, strict=True)) for t in trades]
    payloads = [{"symbol": "BTCUSDT", "kind": "quotes", "rows": q_rows[i:i + CACHE_WINDOW]}
                for i in range(0, len(q_rows), CACHE_WINDOW)]
    payloads += [{"symbol": "BTCUSDT", "kind": "trades", "rows": t_rows[i:i + CACHE_WINDOW]}
                 for i in range(0, len(t_rows), CACHE_WINDOW)]
    return payloads


def _cache_json(payloads: list[dict]) -> Outcome:
    blobs = [json.dumps(p).encode() for p in payloads]
    return Outcome([json.loads(b) for b in blobs], items=len(payloads),
                   nbytes=sum(len(b) for b in blobs))


def _cache_msgpack(payloads: list[dict]) -> Outcome:
    blobs = [msgpack.packb(p) for p in payloads]
    return Outcome([msgpack.unpackb(b) for b in blobs], items=len(payloads),
                   nbytes=sum(len(b) for b in blobs))


def _check_payloads(a: list[dict], b: list[dict]) -> None:
    first_difference(a, b, "round-tripped cache payloads")


register(Phase(
    name="serialization.msgpack_cache", topic="serialization",
    claim=Claim("msgpack is 2-5x faster than JSON for cache payloads (dump + load)", 2.0, 5.0),
    prepare=_prepare_payloads, baseline=_cache_json, optimized=_cache_msgpack,
    check=_check_payloads, baseline_label="json dump+load", optimized_label="msgpack pack+unpack",
))
register(Phase(
    name="serialization.msgpack_size", topic="serialization",
    claim=Claim("msgpack cache payloads are 50% smaller than JSON", 2.0, 2.0),
    prepare=_prepare_payloads, baseline=_cache_json, optimized=_cache_msgpack,
    check=_check_payloads, metric="bytes", repeats=1, warmup=0,
    baseline_label="json bytes", optimized_label="msgpack bytes",
))


# -- lz4 on a large cached payload -----------------------------------------------------------

def _prepare_blob(quick: bool) -> bytes:
    return b"\n".join(_raw(quick))


def _size_raw(blob: bytes) -> Outcome:
    return Outcome(blob, nbytes=len(blob))


def _size_lz4(blob: bytes) -> Outcome:
    packed = lz4.frame.compress(blob)
    return Outcome(lz4.frame.decompress(packed), nbytes=len(packed))


def _store_raw(blob: bytes) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        path = Path(tmp) / "cache.bin"
        path.write_bytes(blob)
        back = path.read_bytes()
    return Outcome(back, items=len(blob), nbytes=len(blob))


def _store_lz4(blob: bytes) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        path = Path(tmp) / "cache.lz4"
        packed = lz4.frame.compress(blob)
        path.write_bytes(packed)
        back = lz4.frame.decompress(path.read_bytes())
    return Outcome(back, items=len(blob), nbytes=len(packed))


def _check_blob(a: bytes, b: bytes) -> None:
    if a != b:
        n = min(len(a), len(b))
        i = next((k for k in range(n) if a[k] != b[k]), n)
        raise PhaseMismatch(f"round-tripped payload differs at byte {i} "
                            f"(lengths {len(a)} and {len(b)})")


register(Phase(
    name="serialization.lz4_size", topic="serialization",
    claim=Claim("lz4 frame compression makes cached market data 70% smaller", 1 / 0.3, 1 / 0.3),
    prepare=_prepare_blob, baseline=_size_raw, optimized=_size_lz4, check=_check_blob,
    metric="bytes", repeats=1, warmup=0, baseline_label="raw bytes", optimized_label="lz4 frame",
))
register(Phase(
    name="serialization.lz4_cost", topic="serialization",
    claim=Claim("lz4 costs little CPU: a store + load round trip at most 1.5x the raw one",
                1 / 1.5, None),
    prepare=_prepare_blob, baseline=_store_raw, optimized=_store_lz4, check=_check_blob,
    baseline_label="raw file store+load", optimized_label="lz4 file store+load",
))
