"""Tick event data: a recording converted to one ordered event file with two timelines.

`convert(recording, out)` turns any recording `workbench.feed.replay` reads into an `.npy`
array of `workbench.events.EVENT_DTYPE` rows (shape (n,), 64 bytes each) plus a `.json`
sidecar (`TickMeta`: symbols, tick and lot size, price range, the local-time offset applied).
Each row carries the exchange time `ts_event_ns` and the local (receive) time `ts_recv_ns`,
and in `flags` which timeline sees it:

- `TF_EXCH` (0x100): the simulated exchange processes the row at `ts_event_ns`;
- `TF_LOCAL` (0x200): the strategy's feed sees the row at `ts_recv_ns`.

Exchange rows are in non-decreasing `ts_event_ns` order, local rows in non-decreasing
`ts_recv_ns` order; a row whose two orders disagree is written twice (once per timeline). This
is hftbacktest's layout and algorithm (nkaz001/hftbacktest, py-hftbacktest/hftbacktest/data/
validation.py, `correct_event_order`; docs "Data" page, "Event flags" and "Feed latency"),
reimplemented here as a streaming merge so a day of data is never held whole: rows are merged
in chunks, and a row is written once no later row can precede it on either timeline (later
rows have local times >= the chunk's last and exchange times >= that minus the recording's
largest feed latency).

Conversion path, in bounded memory (`chunk_events` rows at a time):
1. every record goes through the venue's normalizer and a `BookSync` with the venue's
   sequencing rule, as in the engine: a delta reaches the file only if the book applied it
   (deltas buffered before the snapshot and drained by it are written after the snapshot, at
   the snapshot's times; stale ones are dropped); trades and BBO events always; a receive time
   earlier than the previous record's is raised to it (recordings are in receive order); a
   row without an exchange time takes its receive time;
2. local times are shifted so that no feed latency is negative (the recorder's clock may lag
   the venue's: hftbacktest's `correct_local_timestamp`, same file: local += -min(local -
   exchange) + base_latency_ns when that minimum is negative);
3. the two timelines are merged and written (`np.lib.format` header, rewritten at the end).

`events_for(recording)` is the cached form: the file lives in `cache_dir()` (data/cache/tick,
or $WORKBENCH_TICK_CACHE) under a key of the recording's resolved path, size, mtime, the
options and FORMAT_VERSION; a cached file is reused, a stale one rebuilt. `TickData` opens a
converted file memory-mapped; `chunks()` yields row windows for the kernel.

Errors: RecordingError (from the reader) for unreadable input, ConfigError for a recording
no normalizer reads or a file that is not a converted event file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba as nb
import numpy as np

from workbench.book.sync import BookSync
from workbench.errors import ConfigError
from workbench.events import (
    EVENT_DTYPE,
    K_ASK,
    K_BID,
    K_TRADE,
    M_DELTA,
    M_SNAPSHOT,
)
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SYMBOLS
from workbench.feed.venues import get_venue

TF_EXCH = 0x100
TF_LOCAL = 0x200
FORMAT_VERSION = 2
CHUNK_EVENTS = 1 << 20  # rows merged per step (64 MiB of rows)


@dataclass
class TickMeta:
    """The sidecar of a converted file. symbols: symbol_id -> [venue, symbol]; tick_size /
    lot_size / price_min / price_max / price_median (of the first 200k level and trade prices) /
    events: per symbol_id (str keys, as JSON has them);
    local_offset_ns: what step 2 added to every local time; max_feed_latency_ns: the largest
    local - exchange after it; rows: rows in the file."""

    source: str
    venue: str
    rows: int = 0
    local_offset_ns: int = 0
    max_feed_latency_ns: int = 0
    symbols: dict[str, list[str]] = field(default_factory=dict)
    tick_size: dict[str, float] = field(default_factory=dict)
    lot_size: dict[str, float] = field(default_factory=dict)
    price_min: dict[str, float] = field(default_factory=dict)
    price_max: dict[str, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    price_median: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def symbol_id(self, symbol: str | int | None = None) -> int:
        """The symbol_id for `symbol` (a name, an id, or None: the symbol with the most
        events). Raises ConfigError for a symbol the file does not hold."""
        if symbol is None:
            if not self.events:
                raise ConfigError(f"{self.source}: the converted file holds no symbol")
            return int(max(self.events, key=lambda k: self.events[k]))
        if isinstance(symbol, int) and str(symbol) in self.symbols:
            return symbol
        for sid, (_, name) in self.symbols.items():
            if name.upper() == str(symbol).upper():
                return int(sid)
        raise ConfigError(f"{self.source}: no symbol {symbol!r} in the converted file "
                          f"(has {', '.join(n for _, n in self.symbols.values())})")


class TickData:
    """A converted event file, memory-mapped. `rows` is the whole EVENT_DTYPE array (read-only
    memmap, paged in as read); `meta` its TickMeta. Raises ConfigError for a file that is not a
    converted event file of this FORMAT_VERSION."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        side = self.path.with_suffix(".json")
        if not self.path.is_file() or not side.is_file():
            raise ConfigError(f"{self.path}: not a converted tick event file (expected it and "
                              f"{side.name}; make one with `workbench convert`)")
        meta = json.loads(side.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{side}: format version {meta.get('format_version')}, expected "
                              f"{FORMAT_VERSION}: convert the recording again")
        self.meta = TickMeta(**meta)
        rows = np.load(self.path, mmap_mode="r")
        if rows.dtype != EVENT_DTYPE:
            raise ConfigError(f"{self.path}: dtype {rows.dtype} is not EVENT_DTYPE")
        self.rows = rows.view(EVENT_DTYPE)  # the .npy header drops the aligned flag

    @classmethod
    def in_memory(cls, rows: np.ndarray, meta: TickMeta) -> TickData:
        """A TickData over rows already in memory (EVENT_DTYPE, merged: `merge_rows`)."""
        self = cls.__new__(cls)
        self.path = Path("<memory>")
        self.meta = meta
        self.rows = rows
        return self

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self, size: int = CHUNK_EVENTS, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(first row index, rows) windows of at most `size` rows from `start`."""
        for i in range(start, len(self.rows), size):
            yield i, self.rows[i:i + size]


# ---- conversion -----------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where cached converted files live: $WORKBENCH_TICK_CACHE, else data/cache/tick under the
    repository (git-ignored data/)."""
    env = os.environ.get("WORKBENCH_TICK_CACHE")
    if env:
        return Path(env)
    from workbench.shared_data import REPO_ROOT

    return REPO_ROOT / "data" / "cache" / "tick"


def cache_key(recording: str | Path, base_latency_ns: int = 0) -> str:
    """The cache key of a recording: sha1 of its resolved path, size, mtime, the options and
    FORMAT_VERSION (hex, 16 chars), prefixed by the file's stem."""
    path = Path(recording).resolve()
    st = path.stat()
    text = f"{path}|{st.st_size}|{st.st_mtime_ns}|{base_latency_ns}|{FORMAT_VERSION}"
    stem = path.name.split(".")[0]
    return f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def events_for(recording: str | Path, base_latency_ns: int = 0,
               directory: str | Path | None = None) -> TickData:
    """The converted events of `recording`, from the cache when there, else converted now."""
    where = Path(directory) if directory is not None else cache_dir()
    out = where / f"{cache_key(recording, base_latency_ns)}.npy"
    if out.is_file() and out.with_suffix(".json").is_file():
        try:
            return TickData(out)
        except ConfigError:
            pass
    return convert(recording, out, base_latency_ns=base_latency_ns)


def convert(recording: str | Path, out: str | Path, base_latency_ns: int = 0,
            chunk_events: int = CHUNK_EVENTS) -> TickData:
    """Convert `recording` to the event file `out` (.npy, with its .json sidecar); returns it
    opened. base_latency_ns: added to every local time after the clock correction (step 2).
    Peak memory: about 3 x chunk_events rows (64 B each) plus the normalizer and books."""
    if chunk_events < 1024:
        raise ConfigError(f"convert: chunk_events must be >= 1024, got {chunk_events}")
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = open_recording(recording)
    venues = {v for v in rec.venues.values() if v}
    if not venues:
        why = "; ".join(rec.refused.values()) or "no connection with a normalizer"
        raise ConfigError(f"convert: {recording}: nothing to convert ({why})")
    meta = TickMeta(source=str(Path(recording).resolve()), venue=",".join(sorted(venues)))
    raw = out.with_suffix(".raw.tmp")
    try:
        stats = _normalize_to(rec, raw, meta)
        offset = -stats.min_latency + base_latency_ns if stats.min_latency < 0 else 0
        meta.local_offset_ns = int(offset) if stats.rows else 0
        meta.max_feed_latency_ns = int(stats.max_latency + meta.local_offset_ns) \
            if stats.rows else 0
        meta.rows = _merge_to(raw, stats.rows, out, meta.local_offset_ns,
                              meta.max_feed_latency_ns, chunk_events)
    finally:
        raw.unlink(missing_ok=True)
    out.with_suffix(".json").write_text(json.dumps(asdict(meta), indent=1))
    return TickData(out)


@dataclass
class _PassStats:
    rows: int = 0
    min_latency: int = 2**62
    max_latency: int = -(2**62)
    last_recv: int = 0


class _RowWriter:
    """Appends EVENT_DTYPE rows to a raw file through a buffer of `size` rows."""

    def __init__(self, path: Path, size: int = 1 << 16) -> None:
        self.fh = path.open("wb")
        self.buf = np.empty(size, EVENT_DTYPE)
        self.n = 0
        self.total = 0

    def put(self, rows: np.ndarray) -> None:
        k = len(rows)
        if self.n + k > len(self.buf):
            self.flush()
            if k > len(self.buf):
                self.fh.write(rows.tobytes())
                self.total += k
                return
        self.buf[self.n:self.n + k] = rows
        self.n += k
        self.total += k

    def flush(self) -> None:
        if self.n:
            self.fh.write(self.buf[:self.n].tobytes())
            self.n = 0

    def close(self) -> None:
        self.flush()
        self.fh.close()


def _normalize_to(rec, raw: Path, meta: TickMeta) -> _PassStats:
    """Pass 1: normalize and sequence every record, write the applied rows to `raw`."""
    stats = _PassStats()
    writer = _RowWriter(raw)
    normalizers = {conn: get_venue(v).normalizer() for conn, v in rec.venues.items() if v}
    syncs = {conn: BookSync(get_venue(v).sequencing) for conn, v in rec.venues.items() if v}
    pending: dict[tuple[str, int], list[np.ndarray]] = {}  # buffered deltas, per book
    samples: dict[int, list[np.ndarray]] = {}
    try:
        for record in rec.records():
            norm = normalizers.get(record.conn)
            if norm is None:
                continue
            recv = max(record.recv_ns, stats.last_recv)
            stats.last_recv = recv
            batch = norm.normalize(record.message, recv)
            if not len(batch):
                continue
            info = norm.last
            kind = info.kind
            if kind in (M_DELTA, M_SNAPSHOT):
                rows = _sequenced(syncs[record.conn], batch, info, pending, record.conn)
            else:
                syncs[record.conn].process(batch, info)
                rows = [batch]
            for part in rows:
                _emit(part, recv, writer, stats, meta, samples)
    finally:
        writer.close()
    for sid, parts in samples.items():
        meta.tick_size[str(sid)] = _step(np.concatenate([p[0] for p in parts]))
        meta.lot_size[str(sid)] = _step(np.concatenate([p[1] for p in parts]))
        meta.price_median[str(sid)] = float(np.median(np.concatenate([p[0] for p in parts])))
    stats.rows = writer.total
    return stats


def _sequenced(sync: BookSync, batch: np.ndarray, info, pending: dict, conn: str
               ) -> list[np.ndarray]:
    """The book rows of one message that the book applied (see step 1)."""
    key = (conn, info.symbol_id)
    st = sync.stats
    applied, stale, buffered = st.applied, st.dropped_stale, st.buffered
    book = sync.process(batch, info)
    if info.kind == M_DELTA:
        if st.buffered != buffered:
            held = pending.setdefault(key, [])
            held.append(batch.copy())
            del held[:-4096]  # BookSync's buffer is bounded too
            return []
        return [batch] if book is not None and st.applied != applied else []
    if book is None:
        return []
    held = pending.pop(key, [])
    drop = st.dropped_stale - stale
    took = st.applied - applied
    out = [batch]
    for part in held[drop:drop + took]:
        part = part.copy()
        part["ts_event_ns"] = batch[0]["ts_event_ns"]
        part["ts_recv_ns"] = batch[0]["ts_recv_ns"]
        out.append(part)
    return out


def _emit(rows: np.ndarray, recv: int, writer: _RowWriter, stats: _PassStats, meta: TickMeta,
          samples: dict[int, list[np.ndarray]]) -> None:
    rows = rows.copy()
    ev = rows["ts_event_ns"]
    ev[ev <= 0] = rows["ts_recv_ns"][ev <= 0]
    lat = rows["ts_recv_ns"] - ev
    stats.min_latency = min(stats.min_latency, int(lat.min()))
    stats.max_latency = max(stats.max_latency, int(lat.max()))
    writer.put(rows)
    sid = int(rows[0]["symbol_id"])
    if not sid:
        return
    key = str(sid)
    if key not in meta.symbols:
        meta.symbols[key] = list(SYMBOLS.name(sid))
    meta.events[key] = meta.events.get(key, 0) + len(rows)
    kinds = rows["kind"]
    levels = rows[(kinds == K_BID) | (kinds == K_ASK) | (kinds == K_TRADE)]
    if len(levels):
        prices = levels["price"]
        lo, hi = float(prices.min()), float(prices.max())
        meta.price_min[key] = min(meta.price_min.get(key, math.inf), lo)
        meta.price_max[key] = max(meta.price_max.get(key, -math.inf), hi)
        held = samples.setdefault(sid, [])
        if sum(len(p[0]) for p in held) < 200_000:
            qty = levels["qty"]
            held.append((prices, qty[qty > 0]))


def _step(values: np.ndarray) -> float:
    """The decimal grid step of `values` (10**-d for the fewest decimals d in 0..12 that
    represent them all), 1.0 for an empty array."""
    values = values[np.isfinite(values)]
    for d in range(13):
        scaled = values * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled))):
            return float(10.0**-d)
    return 1e-12


# ---- the two-timeline merge -----------------------------------------------------------------
def _merge_to(raw: Path, n: int, out: Path, offset: int, max_latency: int,
              chunk_events: int) -> int:
    """Pass 2: shift local times by `offset`, merge, write `out`; returns the rows written."""
    src = np.memmap(raw, dtype=EVENT_DTYPE, mode="r", shape=(n,)) if n else \
        np.zeros(0, EVENT_DTYPE)
    written = 0
    with out.open("wb") as fh:
        fh.write(b"\0" * _HEADER_BYTES)
        carry = np.zeros(0, EVENT_DTYPE)
        carry_done = np.zeros(0, np.uint8)
        for i in range(0, max(n, 1), chunk_events):
            part = np.array(src[i:i + chunk_events])
            part["ts_recv_ns"] += offset
            buf = np.concatenate([carry, part])
            done = np.concatenate([carry_done, np.zeros(len(part), np.uint8)])
            last = i + chunk_events >= n
            water = np.iinfo(np.int64).max if last else \
                int(buf["ts_recv_ns"][-1]) - max_latency
            order, flags = _merge(buf["ts_event_ns"], buf["ts_recv_ns"], done, water)
            rows = buf[order]
            rows["flags"] = (rows["flags"] & 0xFF) | flags
            fh.write(rows.tobytes())
            written += len(rows)
            keep = done != 3
            carry, carry_done = buf[keep], done[keep]
        if len(carry):
            raise AssertionError(f"merge left {len(carry)} rows")  # unreachable: last chunk
    _write_header(out, written)
    return written


@nb.njit(cache=True)
def _merge(exch, local, done, water):  # pragma: no cover - compiled
    """One merge step (hftbacktest's `correct_event_order`, module docstring) over the rows
    not yet written on each timeline (done bit 1: exchange, 2: local), stopping at the first
    row whose exchange time is >= water. Returns (row indices, TF flags) in write order and
    updates `done`."""
    n = len(exch)
    ex_idx = np.empty(n, np.int64)
    lo_idx = np.empty(n, np.int64)
    ne = 0
    nl = 0
    for i in range(n):
        if not done[i] & 1:
            ex_idx[ne] = i
            ne += 1
        if not done[i] & 2:
            lo_idx[nl] = i
            nl += 1
    ex_idx = ex_idx[:ne][np.argsort(exch[ex_idx[:ne]], kind="mergesort")]
    lo_idx = lo_idx[:nl][np.argsort(local[lo_idx[:nl]], kind="mergesort")]
    order = np.empty(ne + nl, np.int64)
    flags = np.empty(ne + nl, np.uint16)
    k = 0
    ei = 0
    li = 0
    while ei < ne or li < nl:
        if ei < ne and li < nl:
            e = ex_idx[ei]
            lrow = lo_idx[li]
            if e == lrow:
                pick = 3
            elif exch[e] < exch[lrow] or (exch[e] == exch[lrow] and local[e] <= local[lrow]):
                pick = 1
            else:
                pick = 2
        elif ei < ne:
            e = ex_idx[ei]
            lrow = -1
            pick = 1
        else:
            e = -1
            lrow = lo_idx[li]
            pick = 2
        row = e if pick != 2 else lrow
        if exch[row] >= water:
            break
        order[k] = row
        if pick == 3:
            flags[k] = 0x300
            done[row] = 3
            ei += 1
            li += 1
        elif pick == 1:
            flags[k] = 0x100
            done[row] |= 1
            ei += 1
        else:
            flags[k] = 0x200
            done[row] |= 2
            li += 1
        k += 1
    return order[:k], flags[:k]


def merge_rows(rows: np.ndarray) -> np.ndarray:
    """The two-timeline layout (module docstring) of `rows` in memory (EVENT_DTYPE, in
    receive order, local times already corrected): the merged rows with TF flags set."""
    done = np.zeros(len(rows), np.uint8)
    order, flags = _merge(rows["ts_event_ns"], rows["ts_recv_ns"], done,
                          np.iinfo(np.int64).max)
    out = rows[order]
    out["flags"] = (out["flags"] & 0xFF) | flags
    return out


def _header(n: int, size: int = 0) -> bytes:
    """The .npy v1 header of (n,) EVENT_DTYPE rows, padded to `size` bytes (0: to the next
    multiple of 64 that holds any row count)."""
    head = {"descr": np.lib.format.dtype_to_descr(EVENT_DTYPE), "fortran_order": False,
            "shape": (n,)}
    text = repr(head).encode("latin1")
    if not size:
        size = (10 + len(text) + 24 + 63) // 64 * 64  # 24: room for the digits of any n
    body = text + b" " * (size - 11 - len(text)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


_HEADER_BYTES = len(_header(0))


def _write_header(path: Path, n: int) -> None:
    """Write the final header into the reserved first bytes of `path`."""
    with path.open("r+b") as fh:
        fh.write(_header(n, _HEADER_BYTES))
