"""Recordings: readers for every market-data format in the shared data, and ReplayFeed.

Every reader yields `Record(recv_ns, message, conn)`: the receive time in int64 ns, the raw
message bytes as the venue sent them, and the connection it came on ('' when the format has
one). `open_recording(path)` sniffs the format from the name and the first line:

- `hftbacktest`: gzip (or plain) `<local_ns> <json>` lines (also `workbench record` captures);
  recv_ns = the ns prefix.
- `cryptofeed3`: JSONL+zstd `recv` records (+ REST depth responses, below); recv_ns = `ts`
  (float seconds).
- `cryptofeed2`: text log of `<ts>: <json>` lines (gzip or plain); recv_ns = `ts` (float
  seconds). URL lines (`<url> <-> ts` connects, `<url> <- ts: json` sent frames) are not
  messages: each names the connection of the messages after it (`Record.conn` is its URL),
  and the venue is sniffed from every one (`url_venue`: the host, and the path for Bybit).
- `bybit-data`: Bybit historical `.data` (zip or plain), one v5 WS message a line; no local
  time, so recv_ns = the exchange `ts` (ms).
- `tardis`: Tardis.dev CSV (incremental_book_L2, trades, quotes, book_snapshot_N); recv_ns =
  `local_timestamp` (µs).
- `bitfinex-array`: one JSON array of raw Bitfinex WS messages; no times: recv_ns = 0 (a
  paced replay of it is flat).

REST depth responses in cryptofeed captures (`http` records whose URL has `/depth?symbol=X`)
are yielded wrapped in a combined-stream envelope, `{"stream":"x@depthSnapshot","data":<REST
body>}`, so the symbol travels with the snapshot; BinanceNormalizer reads that form. cryptofeed
records are yielded in receive-time order (stable sort: the capture lists REST responses apart).

Tardis CSV rows are not venue messages, so the reader turns them into JSON messages (one form,
read by `workbench.feed.venues.tardis.TardisNormalizer`): consecutive incremental_book_L2 rows
of one symbol with the same local_timestamp become one message
`{"tardis":"book","exchange","symbol","timestamp","local_timestamp","is_snapshot",
"bids":[[price,amount],..],"asks":[..]}` (a run of snapshot rows is one snapshot message,
whatever its timestamps); a trades row becomes `{"tardis":"trade",...,"id","side","price",
"amount"}`, a quotes row `{"tardis":"quote",...,"bid_price","bid_amount","ask_price",
"ask_amount"}` (null where the CSV field is empty), a book_snapshot_N row a `"book"` snapshot
message. Times stay in µs as in the CSV.

Every connection is either normalized (`Recording.venues[conn]` is a venue key) or refused
with the reason (`Recording.refused[conn]`: a retired protocol such as Coinbase Pro or Bybit v2,
an exchange without a normalizer such as Bitfinex, messages before any connection line);
`workbench inspect` reports both.

Not read (no exchange messages in them): nautilus bookDepth CSVs and parquet fixtures, and the
bar files. A missing file, an unknown format or a corrupt line raises RecordingError naming the
file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import orjson

from workbench.errors import ConfigError, RecordingError

FORMATS = ("hftbacktest", "cryptofeed3", "cryptofeed2", "bybit-data", "tardis",
           "bitfinex-array")
_NS_LINE = re.compile(rb"^\d{16,20} [\[{]")
_CF2_LINE = re.compile(rb"^\d+(\.\d+)?: ")
_URL_LINE = re.compile(rb"^[a-z]+://")
_TS_KEY = re.compile(rb'"ts":(\d+)')
# a paced message due within this many ns is yielded at once: sleep() cannot wait shorter
# than ~0.1 ms, and sleeping per message would make bursty recordings fall behind
SLEEP_MIN_NS = 200_000
_DEPTH_URL = re.compile(r"/depth\?(?:.*&)?symbol=([A-Za-z0-9_]+)")


class Record(NamedTuple):
    """One recorded message: receive time (int64 ns), raw bytes, connection ('' if one)."""

    recv_ns: int
    message: bytes
    conn: str


@dataclass
class Recording:
    """A recording file: its format, connections and the venue key of each (or None when no
    normalizer reads that protocol, with the reason in `refused`). Iterate `records()` for
    `Record`s; iterating the recording itself gives `(recv_ns, message)` pairs."""

    path: Path
    format: str
    connections: dict[str, str] = field(default_factory=dict)  # conn -> address
    venues: dict[str, str | None] = field(default_factory=dict)  # conn -> venue key
    refused: dict[str, str] = field(default_factory=dict)  # conn -> why no normalizer

    def records(self) -> Iterator[Record]:
        """The recorded messages in recorded order. Raises RecordingError (file and line)."""
        return _READERS[self.format](self)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for rec in self.records():
            yield rec.recv_ns, rec.message

    @property
    def venue(self) -> str | None:
        """The venue key when all connections share one, else None."""
        found = set(self.venues.values())
        return found.pop() if len(found) == 1 else None


# ---- opening and sniffing -----------------------------------------------------------------
def _open_text(path: Path) -> io.BufferedReader:
    """Binary line reader over a plain, gzip or zstd file."""
    raw = path.open("rb")
    magic = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if magic[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))  # type: ignore[arg-type]
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw  # type: ignore[return-value]


def _lines(path: Path, opener=_open_text) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without the newline); decompression errors become
    RecordingError naming the line reached."""
    lineno = 0
    try:
        with opener(path) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordingError(f"{path}: line {lineno + 1}: corrupt or truncated file "
                             f"({exc})") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            raise RecordingError(f"{path}: line {lineno + 1}: corrupt zstd stream ({exc})"
                                 ) from exc
        raise


def _first_line(path: Path) -> bytes:
    for _, line in _lines(path):
        if line.strip():
            return line
    raise RecordingError(f"{path}: line 1: empty recording")


def open_recording(path: str | Path) -> Recording:
    """Sniff `path`'s format and connections. Raises RecordingError for a missing file, an
    unknown format (naming line 1) or a corrupt header."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording file")
    if zipfile.is_zipfile(path):
        rec = Recording(path, "bybit-data")
        first = _first_line_zip(path)
        if not first.startswith(b'{"topic"'):
            raise RecordingError(f"{path}: line 1: expected a Bybit v5 message in the zip, "
                                 f"got {first[:60]!r}")
        rec.connections[""] = "bybit historical data"
        rec.venues[""] = "bybit"
        return rec
    first = _first_line(path)
    if first.startswith(b'{"t":'):
        return _sniff_cryptofeed3(path)
    if _NS_LINE.match(first):
        rec = Recording(path, "hftbacktest", {"": str(path)})
        rec.venues[""] = _guess_binance(path)
        return rec
    if _URL_LINE.match(first) or _CF2_LINE.match(first):
        return _sniff_cryptofeed2(path)
    if first.startswith(b"exchange,symbol,timestamp,local_timestamp"):
        rec = Recording(path, "tardis", {"": first.decode()})
        rec.venues[""] = "tardis"
        return rec
    if first.startswith(b"{\"topic\""):
        rec = Recording(path, "bybit-data", {"": "bybit historical data"})
        rec.venues[""] = "bybit"
        return rec
    if first.startswith(b"["):
        rec = Recording(path, "bitfinex-array", {"": "bitfinex"})
        rec.venues[""] = None
        rec.refused[""] = "Bitfinex v2 raw book (R0) messages: no normalizer reads Bitfinex"
        return rec
    raise RecordingError(f"{path}: line 1: unknown recording format (expected one of "
                         f"{', '.join(FORMATS)}), got {first[:60]!r}")


def _guess_binance(path: Path) -> str:
    parts = {p.lower() for p in path.parts}
    if parts & {"cm", "coinm", "coin-m"} or "_perp" in path.name.lower():
        return "binance-coinm"
    if parts & {"usdm", "futures", "usd-m"}:
        return "binance-usdm"
    return "binance"


_CF3_VENUES = {"BINANCE": "binance", "BINANCE_US": "binance", "BINANCE_FUTURES": "binance-usdm",
               "BINANCE_DELIVERY": "binance-coinm", "COINBASE": "coinbase"}


def _cf3_venue(exchange: str, addr: str) -> str | None:
    if exchange == "BYBIT":
        if addr.endswith("/spot"):
            return "bybit-spot"
        if addr.endswith("/inverse"):
            return "bybit-inverse"
        return "bybit"
    return _CF3_VENUES.get(exchange)


def _sniff_cryptofeed3(path: Path) -> Recording:
    rec = Recording(path, "cryptofeed3")
    exchange = ""
    for lineno, line in _lines(path):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{path}: line {lineno}: not a JSON record ({exc})") from exc
        kind = obj.get("t")
        if kind == "header":
            exchange = obj.get("exchange", "")
        elif (kind in ("connect", "send", "recv") and obj.get("conn")
              and not rec.connections.get(obj["conn"])):
            rec.connections[obj["conn"]] = obj.get("addr", "")
    for conn, addr in rec.connections.items():
        rec.venues[conn] = _cf3_venue(exchange, addr)
        if rec.venues[conn] is None:
            rec.refused[conn] = f"no normalizer reads cryptofeed exchange {exchange!r} ({addr})"
    return rec


# public market-data websocket hosts (each venue's API docs) -> venue key
_WS_HOSTS = {"stream.binance.com": "binance", "data-stream.binance.vision": "binance",
             "stream.binance.us": "binance", "fstream.binance.com": "binance-usdm",
             "dstream.binance.com": "binance-coinm",
             "advanced-trade-ws.coinbase.com": "coinbase"}
_BYBIT_HOSTS = frozenset({"stream.bybit.com", "stream.bytick.com", "stream-testnet.bybit.com"})
_BYBIT_V5 = {"/v5/public/linear": "bybit", "/v5/public/spot": "bybit-spot",
             "/v5/public/inverse": "bybit-inverse"}
_RETIRED_HOSTS = {
    "ws-feed.pro.coinbase.com": "Coinbase Pro's feed (retired in 2022); the normalizer reads "
                                "Coinbase Advanced Trade",
    "ws-feed.exchange.coinbase.com": "Coinbase Exchange's feed (the Pro protocol); the "
                                     "normalizer reads Coinbase Advanced Trade",
}


def url_venue(url: str) -> tuple[str | None, str]:
    """(venue key, '') for a websocket URL whose messages a normalizer reads, else (None, the
    reason). Binance and Coinbase by host; Bybit by host and path (v5 `/v5/public/linear`,
    `/spot`, `/inverse`; the legacy `/realtime*` paths are refused)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in _WS_HOSTS:
        return _WS_HOSTS[host], ""
    if host in _BYBIT_HOSTS:
        venue = _BYBIT_V5.get(parts.path.rstrip("/"))
        if venue is not None:
            return venue, ""
        return None, (f"Bybit's legacy feed {parts.path} (v1/v2, retired); the normalizer "
                      f"reads Bybit v5 /v5/public/*")
    if host in _RETIRED_HOSTS:
        return None, _RETIRED_HOSTS[host]
    return None, f"no normalizer reads the feed at {url!r}"


def _sniff_cryptofeed2(path: Path) -> Recording:
    """Connections and venues of a cryptofeed v2 log, from its URL lines (all of them: a
    reconnect may go elsewhere); messages before any URL line form connection ''."""
    rec = Recording(path, "cryptofeed2")
    for _, line in _lines(path):
        if _URL_LINE.match(line):
            url = line.split(b" ", 1)[0].decode(errors="replace")
            if url not in rec.connections:
                rec.connections[url] = url
                rec.venues[url], why = url_venue(url)
                if why:
                    rec.refused[url] = why
        elif line and not rec.connections and "" not in rec.venues:
            rec.venues[""] = None
            rec.refused[""] = "messages before any connection (URL) line: their feed is unknown"
    if "" in rec.venues:
        rec.connections[""] = ""
    return rec


def _ws_conn(rec: Recording) -> str:
    """The websocket connection REST depth snapshots belong to (the first one)."""
    return next((c for c in rec.connections if ".ws." in c), "")


def _first_line_zip(path: Path) -> bytes:
    for _, line in _zip_lines(path):
        if line.strip():
            return line
    raise RecordingError(f"{path}: line 1: empty recording")


def _zip_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    lineno = 0
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise RecordingError(f"{path}: line 1: expected one file in the zip, got "
                                     f"{names}")
            with zf.open(names[0]) as fh:
                for lineno, line in enumerate(fh, 1):
                    yield lineno, line.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise RecordingError(f"{path}: line {lineno + 1}: corrupt zip ({exc})") from exc


# ---- readers -------------------------------------------------------------------------------
def _read_hftbacktest(rec: Recording) -> Iterator[Record]:
    path = rec.path
    for lineno, line in _lines(path):
        if not line:
            continue
        ts, sep, message = line.partition(b" ")
        if not sep or not ts.isdigit():
            raise RecordingError(f"{path}: line {lineno}: expected '<recv_ns> <json>', got "
                                 f"{line[:60]!r}")
        yield Record(int(ts), message, "")


def _read_cryptofeed3(rec: Recording) -> Iterator[Record]:
    path = rec.path
    out: list[tuple[int, int, Record]] = []
    ws_conn = _ws_conn(rec)
    for lineno, line in _lines(path):
        if not line:
            continue
        try:
            obj = orjson.loads(line)
            kind = obj["t"]
            if kind == "recv":
                ts, data = obj["ts"], obj["data"]
                message = data.encode() if isinstance(data, str) else orjson.dumps(data)
                out.append((round(ts * 1e9), lineno, Record(round(ts * 1e9), message,
                                                            obj.get("conn", ""))))
            elif kind == "http":
                found = _DEPTH_URL.search(obj.get("url", ""))
                if found:
                    data = obj["data"]
                    body = data.encode() if isinstance(data, str) else orjson.dumps(data)
                    stream = found.group(1).lower().encode()
                    message = b'{"stream":"' + stream + b'@depthSnapshot","data":' + body + b"}"
                    ns = round(obj["ts"] * 1e9)
                    out.append((ns, lineno, Record(ns, message, ws_conn)))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RecordingError(f"{path}: line {lineno}: bad cryptofeed record ({exc!r})"
                                 ) from exc
    out.sort(key=lambda item: (item[0], item[1]))
    for _, _, record in out:
        yield record


def _read_cryptofeed2(rec: Recording) -> Iterator[Record]:
    path = rec.path
    conn = ""
    for lineno, line in _lines(path):
        if not line:
            continue
        if _URL_LINE.match(line):
            conn = line.split(b" ", 1)[0].decode(errors="replace")
            continue
        ts, sep, message = line.partition(b": ")
        try:
            ns = round(float(ts) * 1e9)
        except ValueError:
            ns = -1
        if not sep or ns < 0:
            raise RecordingError(f"{path}: line {lineno}: expected '<ts>: <json>', got "
                                 f"{line[:60]!r}")
        yield Record(ns, message, conn)


def _read_bybit_data(rec: Recording) -> Iterator[Record]:
    path = rec.path
    lines = _zip_lines(path) if zipfile.is_zipfile(path) else _lines(path)
    for lineno, line in lines:
        if not line:
            continue
        found = _TS_KEY.search(line, 0, 200)
        if found is None:
            raise RecordingError(f"{path}: line {lineno}: expected a v5 message with \"ts\", "
                                 f"got {line[:60]!r}")
        yield Record(int(found.group(1)) * 1_000_000, line, "")


def _read_bitfinex(rec: Recording) -> Iterator[Record]:
    path = rec.path
    chunks = [line for _, line in _lines(path)]
    try:
        messages = orjson.loads(b"\n".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{path}: line {exc.lineno}: bad JSON array ({exc.msg})") from exc
    if not isinstance(messages, list):
        raise RecordingError(f"{path}: line 1: expected a JSON array of messages")
    for message in messages:
        yield Record(0, orjson.dumps(message), "")


def _num(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def _read_tardis(rec: Recording) -> Iterator[Record]:
    path = rec.path
    reader = _csv_rows(path)
    header = next(reader)[1]
    cols = {name: i for i, name in enumerate(header)}
    if "is_snapshot" in cols:
        yield from _tardis_incremental(path, reader, cols)
    elif "id" in cols and "side" in cols:
        yield from _tardis_rows(path, reader, cols, "trade",
                                ("id", "side", "price", "amount"))
    elif "bid_price" in cols:
        yield from _tardis_rows(path, reader, cols, "quote",
                                ("bid_price", "bid_amount", "ask_price", "ask_amount"))
    elif "asks[0].price" in cols:
        yield from _tardis_snapshots(path, reader, cols)
    else:
        raise RecordingError(f"{path}: line 1: unknown Tardis CSV layout {header}")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    text = (line.decode() for _, line in _lines(path))
    for lineno, row in enumerate(csv.reader(text), 1):
        if row:
            yield lineno, row


def _tardis_base(row: list[str], cols: dict[str, int], kind: str) -> dict:
    return {"tardis": kind, "exchange": row[cols["exchange"]], "symbol": row[cols["symbol"]],
            "timestamp": int(row[cols["timestamp"]]),
            "local_timestamp": int(row[cols["local_timestamp"]])}


def _tardis_rows(path: Path, rows: Iterator[tuple[int, list[str]]], cols: dict[str, int],
                 kind: str, fields: tuple[str, ...]) -> Iterator[Record]:
    for lineno, row in rows:
        try:
            msg = _tardis_base(row, cols, kind)
            for name in fields:
                text = row[cols[name]]
                # an empty quote field (one side of the book empty) stays null
                msg[name] = text if name in ("id", "side") else _num(text) if text else None
        except (ValueError, IndexError) as exc:
            raise RecordingError(f"{path}: line {lineno}: bad Tardis {kind} row ({exc})"
                                 ) from exc
        yield Record(msg["local_timestamp"] * 1000, orjson.dumps(msg), "")


def _tardis_incremental(path: Path, rows: Iterator[tuple[int, list[str]]], cols: dict[str, int]
                        ) -> Iterator[Record]:
    group: dict | None = None
    i_snap, i_side, i_price, i_amount = (cols["is_snapshot"], cols["side"], cols["price"],
                                         cols["amount"])
    i_local, i_symbol = cols["local_timestamp"], cols["symbol"]
    for lineno, row in rows:
        try:
            snap = row[i_snap] == "true"
            side = row[i_side]
            level = [_num(row[i_price]), _num(row[i_amount])]
            local = int(row[i_local])
            if side not in ("bid", "ask"):
                raise ValueError(f"side {side!r}")
        except (ValueError, IndexError) as exc:
            raise RecordingError(f"{path}: line {lineno}: bad incremental_book_L2 row ({exc})"
                                 ) from exc
        same = group is not None and group["symbol"] == row[i_symbol] and (
            (snap and group["is_snapshot"]) or
            (not snap and not group["is_snapshot"] and group["local_timestamp"] == local))
        if not same:
            if group is not None:
                yield Record(group["local_timestamp"] * 1000, orjson.dumps(group), "")
            group = _tardis_base(row, cols, "book")
            group.update(is_snapshot=snap, bids=[], asks=[])
        group["bids" if side == "bid" else "asks"].append(level)
    if group is not None:
        yield Record(group["local_timestamp"] * 1000, orjson.dumps(group), "")


def _tardis_snapshots(path: Path, rows: Iterator[tuple[int, list[str]]], cols: dict[str, int]
                      ) -> Iterator[Record]:
    depth = sum(1 for name in cols if name.startswith("asks[") and name.endswith(".price"))
    for lineno, row in rows:
        try:
            msg = _tardis_base(row, cols, "book")
            msg["is_snapshot"] = True
            for side in ("bids", "asks"):
                msg[side] = [[_num(row[cols[f"{side}[{i}].price"]]),
                              _num(row[cols[f"{side}[{i}].amount"]])]
                             for i in range(depth) if row[cols[f"{side}[{i}].price"]]]
        except (ValueError, IndexError) as exc:
            raise RecordingError(f"{path}: line {lineno}: bad book_snapshot row ({exc})"
                                 ) from exc
        yield Record(msg["local_timestamp"] * 1000, orjson.dumps(msg), "")


_READERS = {
    "hftbacktest": _read_hftbacktest,
    "cryptofeed3": _read_cryptofeed3,
    "cryptofeed2": _read_cryptofeed2,
    "bybit-data": _read_bybit_data,
    "tardis": _read_tardis,
    "bitfinex-array": _read_bitfinex,
}


# ---- ReplayFeed ----------------------------------------------------------------------------
Source = str | Path | Recording | Iterable[str | Path]


@dataclass
class ReplayStats:
    """messages: yielded so far. max_lag_ns: the most a message was yielded behind its
    scheduled wall time (paced replay only; consumers slower than the schedule show here)."""

    messages: int = 0
    max_lag_ns: int = 0


class ReplayFeed:
    """Iterate a recording's `(recv_ns, message)` pairs in recorded order.

    source: a path, a list of paths (concatenated in order, e.g. the two days of a dump), or
    a `Recording`. speed: 1.0 replays in recorded time (message i is yielded when
    (recv_ns_i - recv_ns_0) / speed has elapsed since the first, or up to 0.2 ms before: the
    sleep granularity), N replays N times faster, None flat out. conn: only this connection's
    messages (multi-connection captures).
    The yielded recv_ns is the recorded one. Raises RecordingError (file and line) while
    iterating a missing or corrupt recording, ConfigError for a bad speed.
    """

    def __init__(self, source: Source, speed: float | None = 1.0, conn: str | None = None):
        if speed is not None and not (speed > 0 and speed != float("inf")):
            raise ConfigError(f"speed must be a positive finite number or None, got {speed!r}")
        if isinstance(source, (str, Path, Recording)):
            sources = [source]
        else:
            sources = list(source)
            if not sources:
                raise ConfigError("ReplayFeed needs at least one recording, got none")
        self.recordings = [s if isinstance(s, Recording) else open_recording(s)
                           for s in sources]
        self.speed = speed
        self.conn = conn
        self.stats = ReplayStats()

    def records(self) -> Iterator[Record]:
        """Records of every source in order (unpaced), filtered by `conn`."""
        for rec in self.recordings:
            for record in rec.records():
                if self.conn is None or record.conn == self.conn:
                    yield record

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        stats = self.stats
        if self.speed is None:
            for record in self.records():
                stats.messages += 1
                yield record.recv_ns, record.message
            return
        scale = 1.0 / self.speed
        clock = time.perf_counter_ns
        t0 = wall0 = -1
        for record in self.records():
            if t0 < 0:
                t0, wall0 = record.recv_ns, clock()
            due = wall0 + int(max(record.recv_ns - t0, 0) * scale)
            now = clock()
            if due - now > SLEEP_MIN_NS:
                time.sleep((due - now) / 1e9)
            elif now > due:
                stats.max_lag_ns = max(stats.max_lag_ns, now - due)
            stats.messages += 1
            yield record.recv_ns, record.message
