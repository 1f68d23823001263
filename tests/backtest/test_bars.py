"""Bar loading: every format, alignment on one clock, and bad input named by file/column/row."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.backtest.bars import MINUTE_NS, load_bars, read_bars
from workbench.errors import BarsError

FEATHER = "bars/binance_usdm_futures_1m/BTC_USDT_USDT-1m-futures.feather"


def test_binance_set_aligned_with_its_mask(binance_bars, shared_data: Path) -> None:
    bars = binance_bars
    assert bars.n_symbols == 16 and "ADA_USDT_USDT" in bars.symbols
    assert bars.open.flags.c_contiguous and bars.open.shape == bars.has_data.shape
    assert np.all(np.diff(bars.ts_ns) == MINUTE_NS)
    for sym in ("ADA_USDT_USDT", "ETH_USDT_USDT", "BTC_USDT_USDT"):
        s = bars.symbols.index(sym)
        raw = pl.read_ipc(shared_data / "bars/binance_usdm_futures_1m" /
                          f"{sym}-1m-futures.feather")
        traded = raw.filter(pl.col("volume") > 0)
        assert bars.has_data[s].sum() == traded.height
        assert bars.skipped[sym] == raw.height - traded.height
        idx = np.flatnonzero(bars.has_data[s])
        ts = traded["date"].dt.epoch("ns").to_numpy()
        np.testing.assert_array_equal(bars.ts_ns[idx], ts)
        np.testing.assert_array_equal(bars.close[s, idx], traded["close"].to_numpy())
        assert np.isnan(bars.close[s, ~bars.has_data[s]]).all()
    ada, eth = bars.symbols.index("ADA_USDT_USDT"), bars.symbols.index("ETH_USDT_USDT")
    # ADA starts days after the others; ETH runs to the end of the clock
    assert bars.first_t[ada] > 7000 and bars.last_t[eth] == bars.n_bars - 1


def test_csv_and_parquet_round_trip(shared_data: Path, tmp_path: Path) -> None:
    raw = pl.read_ipc(shared_data / FEATHER).head(500)
    csv_path, pq_path = tmp_path / "BTC.csv", tmp_path / "BTC.parquet"
    raw.with_columns(pl.col("date").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(csv_path)
    raw.with_columns(pl.col("date").dt.epoch("ms").alias("timestamp")).drop("date") \
        .write_parquet(pq_path)
    feather = read_bars(shared_data / FEATHER).head(500)
    for path in (csv_path, pq_path):
        assert read_bars(path).equals(feather), path
    bars = load_bars({"csv": csv_path, "pq": pq_path})
    np.testing.assert_array_equal(bars.close[0], bars.close[1])


def test_lean_zip_days(shared_data: Path) -> None:
    root = shared_data / "bars/lean_coinbase_minute"
    bars = load_bars({"btcusd": sorted((root / "btcusd").glob("2016100*_trade.zip"))})
    with zipfile.ZipFile(root / "btcusd/20161008_trade.zip") as zf:
        text = zf.read(zf.namelist()[0]).decode()
    first = next(csv.reader(io.StringIO(text)))
    day_ns = 1_475_884_800 * 1_000_000_000  # 2016-10-08 00:00 UTC
    t = (day_ns + int(first[0]) * 1_000_000 - bars.ts_ns[0]) // MINUTE_NS
    assert bars.has_data[0, t]
    assert bars.open[0, t] == float(first[1]) and bars.close[0, t] == float(first[4])
    assert bars.ts_ns[0] == day_ns - MINUTE_NS * 1440  # the clock starts on 2016-10-07
    whole = load_bars(root)
    assert set(whole.symbols) == {"btcusd", "btceur", "ethusd", "ltcusd"}


def _write(tmp_path: Path, df: pl.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    df.write_csv(path)
    return path


GOOD = {"date": ["2025-01-01 00:00:00", "2025-01-01 00:01:00", "2025-01-01 00:02:00"],
        "open": [1.0, 1.1, 1.2], "high": [1.2, 1.2, 1.3], "low": [0.9, 1.0, 1.1],
        "close": [1.1, 1.2, 1.25], "volume": [5.0, 6.0, 7.0]}


@pytest.mark.parametrize(("change", "match"), [
    ({"drop": "volume"}, r"bad\.csv: missing column 'volume'"),
    ({"date": [GOOD["date"][0], GOOD["date"][0], GOOD["date"][2]]},
     r"bad\.csv: column 'date' row 1: duplicate timestamp"),
    ({"date": [GOOD["date"][0], GOOD["date"][2], GOOD["date"][1]]},
     r"bad\.csv: column 'date' row 2: non-monotonic timestamp"),
    ({"date": [GOOD["date"][0], "2025-01-01 00:01:30", GOOD["date"][2]]},
     r"bad\.csv: column 'date' row 1: .* not on the 60 s bar grid"),
    ({"close": [1.1, None, 1.25]}, r"bad\.csv: column 'close' row 1: price"),
    ({"high": [1.2, 1.2, float("nan")]}, r"bad\.csv: column 'high' row 2: price nan"),
    ({"volume": [5.0, -1.0, 7.0]}, r"bad\.csv: column 'volume' row 1: volume -1.0"),
])
def test_bad_input_names_file_column_and_row(tmp_path: Path, change: dict, match: str) -> None:
    data = dict(GOOD)
    drop = change.pop("drop", None)
    data.update(change)
    df = pl.DataFrame(data)
    path = _write(tmp_path, df.drop(drop) if drop else df)
    with pytest.raises(BarsError, match=match):
        load_bars([path])


def test_zero_volume_bars_are_skipped_and_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, pl.DataFrame({**GOOD, "volume": [5.0, 0.0, 7.0]}), "Z.csv")
    bars = load_bars([path])
    assert bars.skipped == {"Z": 1}
    assert bars.has_data[0].tolist() == [True, False, True]
    assert np.isnan(bars.close[0, 1])
