"""Recording readers and ReplayFeed: formats, order, errors naming file and line, pacing."""

from __future__ import annotations

import gzip
import itertools
import json
import time
import zipfile
from pathlib import Path

import pytest
import zstandard

from workbench.errors import ConfigError, RecordingError
from workbench.feed.replay import ReplayFeed, open_recording, url_venue
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import normalizer_for

EXPECTED = {  # path -> (format, records, venues)
    "binance/hftbacktest/usdm/btcusdt_20240808.gz": ("hftbacktest", 93954,
                                                     {"": "binance-usdm"}),
    "binance/hftbacktest/cm/btcusd_perp_20240809.gz": ("hftbacktest", 50116,
                                                       {"": "binance-coinm"}),
    "binance/hftbacktest/spot/ethusdt_20240808.gz": ("hftbacktest", 33618, {"": "binance"}),
    "binance/cryptofeed_v3/BINANCE.jsonl.zst": ("cryptofeed3", 265 + 4,
                                                {"BINANCE.ws.1": "binance"}),
    "bybit/BYBIT.jsonl.zst": ("cryptofeed3", 3227, {"BYBIT.ws.2": "bybit",
                                                    "BYBIT.ws.3": "bybit-spot"}),
    "coinbase/COINBASE.jsonl.zst": ("cryptofeed3", 1030, {"COINBASE.ws.2": "coinbase"}),
    "coinbase/COINBASE.ws.28.0.gz": ("cryptofeed2", 9946,
                                     {"wss://ws-feed.pro.coinbase.com": None}),
    "bybit/BYBIT.ws.26.0.gz": ("cryptofeed2", 1098, {"wss://stream.bybit.com/realtime": None}),
    "bybit/xrpusdt-ob500.data.zip": ("bybit-data", 50, {"": "bybit"}),
    "tardis_samples/bitmex_trades_XBTUSD.csv": ("tardis", 10, {"": "tardis"}),
    "binance/nautilus/tardis_quotes.csv.gz": ("tardis", 9999, {"": "tardis"}),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_formats_sniffed_and_counted(shared_data: Path, rel: str) -> None:
    fmt, count, venues = EXPECTED[rel]
    rec = open_recording(shared_data / rel)
    assert (rec.format, rec.venues) == (fmt, venues)
    # every connection is normalized or refused with the reason
    assert {c for c, v in rec.venues.items() if v is None} == set(rec.refused)
    assert all(rec.refused.values())
    records = list(rec.records())
    assert len(records) == count
    assert {r.conn for r in records} <= set(rec.venues)
    times = [r.recv_ns for r in records]
    if fmt in ("cryptofeed3", "bybit-data"):
        assert times == sorted(times)
    assert all(isinstance(r.message, bytes) and r.message[:1] in (b"{", b"[") for r in records)


def test_hftbacktest_lines_are_yielded_verbatim(shared_data: Path) -> None:
    path = shared_data / "binance/hftbacktest/spot/ethusdt_20240808.gz"
    with gzip.open(path) as fh:
        raw = fh.read().splitlines()[:500]
    got = [(ns, msg) for (ns, msg), _ in zip(ReplayFeed(path, speed=None), raw, strict=False)]
    assert got == [(int(line.split(b" ", 1)[0]), line.split(b" ", 1)[1]) for line in raw]


def test_cryptofeed3_recv_and_rest_depth(shared_data: Path) -> None:
    path = shared_data / "binance/cryptofeed_v3/BINANCE.jsonl.zst"
    lines = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().splitlines()
    recs = [json.loads(line) for line in lines]
    recv = [(r["ts"], r["data"].encode()) for r in recs if r["t"] == "recv"]
    depth = [r for r in recs if r["t"] == "http" and "/depth?" in r["url"]]
    got = list(open_recording(path).records())
    messages = [r.message for r in got]
    for _, data in recv:
        assert data in messages
    wrapped = [json.loads(m) for m in messages if b"@depthSnapshot" in m[:40]]
    assert len(wrapped) == len(depth) == 4
    assert {w["stream"] for w in wrapped} == {
        r["url"].split("symbol=")[1].split("&")[0].lower() + "@depthSnapshot" for r in depth}
    assert [w["data"] for w in wrapped] == [json.loads(r["data"]) for r in sorted(
        depth, key=lambda r: r["ts"])]


def test_tardis_incremental_rows_grouped(shared_data: Path) -> None:
    path = shared_data / "tardis_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    rows = path.read_text().splitlines()[1:]
    (record,) = list(open_recording(path).records())
    msg = json.loads(record.message)
    assert msg["tardis"] == "book" and msg["is_snapshot"] is True
    assert len(msg["bids"]) + len(msg["asks"]) == len(rows)
    assert record.recv_ns == int(rows[0].split(",")[3]) * 1000


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gz"
    with pytest.raises(RecordingError, match=r"nope\.gz"):
        open_recording(missing)


def _dump(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return path


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = _dump(tmp_path / "bad.gz", [b"1000000000000000000 {}", b"1000000000000000001 {}",
                                       b"oops {}"])
    feed = ReplayFeed(path, speed=None)
    with pytest.raises(RecordingError, match=r"bad\.gz: line 3"):
        list(feed)


def test_truncated_gzip_is_a_recording_error(tmp_path: Path) -> None:
    lines = [b"%d {\"x\":%d}" % (1_700_000_000_000_000_000 + i, i) for i in range(20000)]
    full = _dump(tmp_path / "full.gz", lines).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(RecordingError, match=r"cut\.gz: line \d+: corrupt"):
        list(ReplayFeed(cut, speed=None))


def test_unknown_format_and_bad_zip(tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("hello world\n")
    with pytest.raises(RecordingError, match=r"odd\.txt: line 1: unknown recording format"):
        open_recording(odd)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.data", '{"topic":"orderbook.1.X","ts":1}\n')
        zf.writestr("b.data", '{"topic":"orderbook.1.X","ts":1}\n')
    with pytest.raises(RecordingError, match="expected one file"):
        open_recording(two)


def test_speed_validation(tmp_path: Path) -> None:
    path = _dump(tmp_path / "ok.gz", [b"1000000000000000000 {}"])
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError):
            ReplayFeed(path, speed=bad)


def test_pacing_follows_recorded_time_scaled_by_speed(tmp_path: Path) -> None:
    """Recorded span 0.6 s: x1 takes about 0.6 s, x4 about 0.15 s, flat out no waiting; the
    inter-message gaps follow the recording (loose bounds: a lower bound, generous upper)."""
    t0 = 1_700_000_000_000_000_000
    offsets_ms = [0, 100, 150, 400, 600]
    path = _dump(tmp_path / "paced.gz",
                 [b"%d {\"i\":%d}" % (t0 + ms * 1_000_000, i) for i, ms in
                  enumerate(offsets_ms)])
    for speed, span_s in ((1.0, 0.6), (4.0, 0.15)):
        stamps = []
        for recv_ns, _ in ReplayFeed(path, speed=speed):
            stamps.append(time.perf_counter_ns())
            assert recv_ns >= t0
        elapsed = (stamps[-1] - stamps[0]) / 1e9
        assert span_s * 0.95 <= elapsed < span_s + 0.5, (speed, elapsed)
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
        want = [(b - a) / 1000 / speed for a, b in itertools.pairwise(offsets_ms)]
        for got, expect in zip(gaps, want, strict=True):
            assert got >= expect * 0.9 - 0.002
    feed = ReplayFeed(path, speed=None)
    start = time.perf_counter()
    assert [json.loads(m)["i"] for _, m in feed] == [0, 1, 2, 3, 4]
    assert time.perf_counter() - start < 0.6  # flat out never sleeps the recorded 0.6 s
    assert feed.stats.messages == 5


def test_list_of_files_concatenates(shared_data: Path) -> None:
    days = [shared_data / "bybit/xrpusdt-ob500.data.zip"] * 2
    feed = ReplayFeed(days, speed=None)
    assert len(list(feed)) == 100


def test_conn_filter(shared_data: Path) -> None:
    feed = ReplayFeed(shared_data / "bybit/BYBIT.jsonl.zst", speed=None, conn="BYBIT.ws.3")
    assert len(list(feed)) == 681


def cryptofeed2_from_v3(v3: Path, out: Path) -> tuple[str, list[bytes]]:
    """Write a cryptofeed v2 text log of a v3 capture's websocket records (connect, send and
    recv lines, as cryptofeed v2 wrote them); returns the connection URL and the messages."""
    with v3.open("rb") as fh:
        lines = zstandard.ZstdDecompressor().stream_reader(fh).read().splitlines()
    url = ""
    messages = []
    with gzip.open(out, "wb") as fh:
        for line in lines:
            rec = json.loads(line)
            if rec["t"] == "connect":
                url = rec["addr"]
                fh.write(f"{url} <-> {rec['ts']}\n".encode())
            elif rec["t"] == "send":
                fh.write(f"{rec['addr']} <- {rec['ts']}: {rec['data']}\n".encode())
            elif rec["t"] == "recv":
                messages.append(rec["data"].encode())
                fh.write(f"{rec['ts']}: {rec['data']}\n".encode())
    return url, messages


def test_cryptofeed2_binance_futures_sniffed_from_its_url(shared_data: Path,
                                                          tmp_path: Path) -> None:
    """A v2 log of Binance USD-M combined streams was read but counted unsupported."""
    path = tmp_path / "BINANCE_FUTURES.ws.1.0.gz"
    url, messages = cryptofeed2_from_v3(
        shared_data / "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", path)
    rec = open_recording(path)
    assert url.startswith("wss://fstream.binance.com/stream?streams=")
    assert (rec.format, rec.venues, rec.refused) == ("cryptofeed2", {url: "binance-usdm"}, {})
    records = list(rec.records())
    assert [r.message for r in records] == messages and {r.conn for r in records} == {url}
    norm = normalizer_for(rec.venues[url], SymbolRegistry())
    events = sum(len(norm.normalize(r.message, r.recv_ns)) for r in records)
    assert events > len(records) and not norm.stats.malformed


def test_cryptofeed2_messages_before_any_url_line(tmp_path: Path) -> None:
    path = tmp_path / "x.ws.1.0"
    path.write_text('1618677817.1: {"type":"x"}\n'
                    "wss://stream.binance.com:9443/ws <-> 1618677817.2\n"
                    '1618677817.3: {"e":"trade"}\n')
    rec = open_recording(path)
    assert rec.venues == {"": None, "wss://stream.binance.com:9443/ws": "binance"}
    assert "before any connection" in rec.refused[""]
    assert [r.conn for r in rec.records()] == ["", "wss://stream.binance.com:9443/ws"]


@pytest.mark.parametrize(("url", "venue", "why"), [
    ("wss://stream.binance.com:9443/stream?streams=btcusdt@depth", "binance", ""),
    ("wss://fstream.binance.com/ws/btcusdt@trade", "binance-usdm", ""),
    ("wss://dstream.binance.com/stream", "binance-coinm", ""),
    ("wss://stream.bybit.com/v5/public/linear", "bybit", ""),
    ("wss://stream.bybit.com/v5/public/spot", "bybit-spot", ""),
    ("wss://stream.bybit.com/v5/public/inverse/", "bybit-inverse", ""),
    ("wss://advanced-trade-ws.coinbase.com", "coinbase", ""),
    ("wss://stream.bybit.com/realtime_public", None, "Bybit's legacy feed /realtime_public"),
    ("wss://ws-feed.pro.coinbase.com", None, "Coinbase Pro"),
    ("wss://api-pub.bitfinex.com/ws/2", None, "no normalizer reads the feed at"),
])
def test_url_venue(url: str, venue: str | None, why: str) -> None:
    got, reason = url_venue(url)
    assert got == venue and (why in reason if why else reason == "")


def test_tardis_quote_with_an_empty_side(tmp_path: Path) -> None:
    """A quotes row with one side empty is read (null) and normalized to no events, not a
    RecordingError ending the replay."""
    path = tmp_path / "quotes.csv"
    path.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,"
                    "bid_amount\nbinance-futures,BTCUSDT,1582329601000000,1582329601100000,,,"
                    "9680.5,1.2\nbinance-futures,BTCUSDT,1582329602000000,1582329602100000,"
                    "0.5,9681,9680.5,1.2\n")
    records = list(open_recording(path).records())
    assert [json.loads(r.message)["ask_price"] for r in records] == [None, 9681]
    norm = normalizer_for("tardis", SymbolRegistry())
    assert [len(norm.normalize(r.message, r.recv_ns)) for r in records] == [0, 2]
    assert not norm.stats.malformed
