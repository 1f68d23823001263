"""`workbench inspect`: counts, span, gaps, malformed, final top 5 levels; table and JSON."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from workbench.errors import ConfigError, RecordingError
from workbench.feed.inspect import inspect_recording

CLI = [sys.executable, "-m", "workbench.cli", "inspect"]


def test_bybit_zip_counts_and_top5_against_plain_dicts(shared_data: Path) -> None:
    path = shared_data / "bybit/xrpusdt-ob500.data.zip"
    report = inspect_recording(path)
    with zipfile.ZipFile(path) as zf:
        lines = zf.read(zf.namelist()[0]).splitlines()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for line in lines:
        msg = json.loads(line)
        if msg["type"] == "snapshot":
            bids.clear()
            asks.clear()
        for book, key in ((bids, "b"), (asks, "a")):
            for p, q in msg["data"][key]:
                if float(q) == 0:
                    book.pop(float(p), None)
                else:
                    book[float(p)] = float(q)
    first, last = json.loads(lines[0])["ts"], json.loads(lines[-1])["ts"]
    assert report["format"] == "bybit-data" and report["venues"] == ["bybit"]
    assert report["symbols"] == ["XRPUSDT"] and report["messages"] == len(lines) == 50
    assert report["by_type"] == {"orderbook": 50}
    assert report["time_span"]["seconds"] == pytest.approx((last - first) / 1000)
    assert (report["gaps"], report["resyncs"], report["malformed"]) == (0, 0, {})
    book = report["books"]["XRPUSDT"]
    assert book["valid"] and not book["crossed"]
    assert book["bids"] == [[p, bids[p]] for p in sorted(bids, reverse=True)[:5]]
    assert book["asks"] == [[p, asks[p]] for p in sorted(asks)[:5]]


def test_cryptofeed_capture_counts(shared_data: Path) -> None:
    path = shared_data / "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst"
    report = inspect_recording(path)
    import zstandard

    with path.open("rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh).read().splitlines()
    counts: Counter = Counter()
    for line in raw:
        rec = json.loads(line)
        if rec["t"] == "recv":
            counts[json.loads(rec["data"])["data"]["e"]] += 1
        elif rec["t"] == "http" and "/depth?" in rec["url"]:
            counts["depthSnapshot"] += 1
    assert report["by_type"] == dict(counts)
    assert report["messages"] == sum(counts.values())
    assert report["symbols"] == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    assert report["gaps"] == 0 and all(b["valid"] for b in report["books"].values())
    for book in report["books"].values():
        prices = [p for p, _ in book["bids"]]
        assert prices == sorted(prices, reverse=True) and len(prices) == 5
        assert book["bids"][0][0] < book["asks"][0][0]


def test_legacy_protocol_counted_only(shared_data: Path) -> None:
    report = inspect_recording(shared_data / "coinbase/COINBASE.ws.28.0.gz")
    assert report["venues"] == ["unsupported"] and report["books"] == {}
    assert report["messages"] == 9946
    assert report["by_type"]["l2update"] == 9719 and report["by_type"]["snapshot"] == 10
    skipped = {r["type"]: r for r in report["not_normalized"]}  # every type, with why
    assert sum(r["count"] for r in skipped.values()) == 9946
    assert skipped["l2update"]["count"] == 9719
    assert all("Coinbase Pro" in r["why"] for r in skipped.values())
    assert "Coinbase Pro" in report["connections"][0]["note"]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _depth(ts: int, U: int, u: int, pu: int, bid: str, ask: str) -> str:
    data = {"e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": U, "u": u, "pu": pu,
            "b": [[bid, "1.0"]], "a": [[ask, "2.0"]]}
    return f"{ts} " + json.dumps({"stream": "btcusdt@depth@0ms", "data": data})


def test_gaps_and_malformed_reported(tmp_path: Path) -> None:
    t = 1_723_161_255_000_000_000
    lines = [
        _depth(t, 10, 20, 9, "100.0", "101.0"),
        f"{t + 1} " + json.dumps({"lastUpdateId": 15, "bids": [["99.5", "3"]],
                                  "asks": [["101.5", "4"]]}),
        _depth(t + 2, 21, 30, 20, "100.5", "102.0"),
        f"{t + 3} {{not json",
        _depth(t + 4, 31, 40, 30, "NaN", "102.0"),
        _depth(t + 5, 41, 50, 40, "100.2", "101.2"),  # pu 40 but 31..40 was skipped: a gap
        f"{t + 6} " + json.dumps({"stream": "btcusdt@weird", "data": {"e": "weird"}}),
    ]
    path = _write(tmp_path / "usdm" / "btcusdt_20240808.gz", lines)
    report = inspect_recording(path)
    assert report["venues"] == ["binance-usdm"]
    assert report["malformed"] == {"json": 1, "bad_price": 1, "unknown_type": 1}
    assert [(r["type"], r["count"], r["why"].split(":")[0]) for r in sorted(
        report["not_normalized"], key=lambda r: r["why"])] == [
        ("depthUpdate", 1, "bad_price"), ("?", 1, "json"), ("weird", 1, "unknown_type")]
    assert (report["gaps"], report["resyncs"]) == (1, 1)
    span = report["time_span"]
    assert (span["first_ns"], span["last_ns"]) == (t, t + 6)
    assert span["seconds"] == pytest.approx(6e-9)
    assert span["first_utc"] == "2024-08-08T23:54:15.000+00:00"
    book = report["books"]["BTCUSDT"]
    assert not book["valid"]  # nothing can fetch a snapshot during an inspection
    assert book["bids"] == [[100.5, 1.0], [100.0, 1.0], [99.5, 3.0]]
    assert book["asks"] == [[101.0, 2.0], [101.5, 4.0], [102.0, 2.0]]
    spot = inspect_recording(path, venue="binance")  # spot rules: U must be previous u + 1
    assert spot["venues"] == ["binance"] and spot["gaps"] == 1


def test_cryptofeed2_binance_futures_log(shared_data: Path, tmp_path: Path) -> None:
    """A v2 text log of Binance USD-M combined streams: normalized, not 'unsupported'."""
    from test_replay import cryptofeed2_from_v3

    path = tmp_path / "BINANCE_FUTURES.ws.1.0.gz"
    cryptofeed2_from_v3(shared_data / "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst", path)
    report = inspect_recording(path)
    assert report["format"] == "cryptofeed2" and report["venues"] == ["binance-usdm"]
    assert report["symbols"] == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    assert report["malformed"] == {} and report["not_normalized"] == []
    assert report["by_type"]["depthUpdate"] == 764


def test_table_names_what_was_not_normalized(shared_data: Path) -> None:
    path = shared_data / "bybit/BYBIT.ws.26.0.gz"
    table = subprocess.run([*CLI, str(path)], capture_output=True, text=True, check=True,
                           timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert "messages not normalized" in table.stdout
    assert "Bybit's legacy feed /realtime" in table.stdout


def test_cli_json_and_table(shared_data: Path) -> None:
    path = shared_data / "bybit/xrpusdt-ob500.data.zip"
    out = subprocess.run([*CLI, str(path), "--json"], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) == json.loads(json.dumps(inspect_recording(path)))
    table = subprocess.run([*CLI, str(path)], capture_output=True, text=True, check=True,
                           timeout=120, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})
    assert "XRPUSDT top 5 (valid)" in table.stdout and "orderbook" in table.stdout


def test_cli_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.gz", ["1723161255000000000 {}", "garbage line"])
    with pytest.raises(RecordingError, match=r"bad\.gz: line 2"):
        inspect_recording(bad)
    res = subprocess.run([*CLI, str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "bad.gz: line 2" in res.stderr
    res = subprocess.run([*CLI, str(tmp_path / "missing.gz")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1 and "missing.gz" in res.stderr
    with pytest.raises(ConfigError, match="unknown venue"):
        inspect_recording(bad, venue="nyse")
