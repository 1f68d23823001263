"""Load 1-minute OHLCV bars of N symbols into aligned arrays on one global minute clock.

Formats (read with polars):
- freqtrade feather (`*.feather`, Arrow IPC): `date (datetime UTC), open, high, low, close,
  volume` (freqtrade `data/history/featherdatahandler.py`).
- CSV (`*.csv`, `*.csv.gz`) and Parquet (`*.parquet`): a time column named `date`,
  `timestamp`, `time` or `datetime` (a datetime, an ISO string taken as UTC, or an integer epoch
  in s, ms, µs or ns picked by magnitude), then `open, high, low, close, volume`.
- Lean zip (`YYYYMMDD_trade.zip`, QuantConnect Lean `Data/crypto/<venue>/minute/<symbol>/`): one
  headerless CSV `ms_since_midnight_utc, open, high, low, close, volume`; the day comes from the
  file name. `*_quote.zip` files are not bars of trades and are not read.

Bad input raises `BarsError` naming the file, the column and the (0-based data) row: a missing
column, a timestamp that is not after the previous one (duplicate or non-monotonic), a timestamp
off the bar grid, a NaN or non-positive price, a NaN or negative volume. Zero-volume bars carry
no trade (their OHLC repeats the last price), so they are skipped: left out of the has-data mask,
counted per symbol in `Bars.skipped` and logged.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from workbench.errors import BarsError

log = logging.getLogger(__name__)

MINUTE_NS = 60_000_000_000
PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")
TIME_COLUMNS = ("date", "timestamp", "time", "datetime")
_LEAN_NAME = re.compile(r"^(\d{8})_trade\.zip$")
_SUFFIXES = (".feather", ".arrow", ".ipc", ".csv", ".csv.gz", ".parquet", ".zip")


@dataclass(frozen=True)
class Bars:
    """Aligned bars: S symbols on one clock of T bars of `bar_ns` each.

    ts_ns: int64 [T], bar open times (ns since the epoch, UTC), step `bar_ns`.
    open, high, low, close, volume: float64 [S, T], C-contiguous; NaN where has_data is False.
    has_data: bool [S, T]; False before a symbol starts, after it ends, in its pauses and on
      skipped zero-volume bars.
    first_t, last_t: int64 [S], index of each symbol's first and last bar with data (-1: none).
    skipped: symbol -> zero-volume bars skipped.
    """

    symbols: tuple[str, ...]
    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    has_data: np.ndarray
    bar_ns: int = MINUTE_NS
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def n_bars(self) -> int:
        return int(self.ts_ns.shape[0])

    @property
    def bar_steps(self) -> int:
        """Symbols x clock bars: the unit of backtest throughput (bar-steps/s)."""
        return self.n_symbols * self.n_bars

    @cached_property
    def first_t(self) -> np.ndarray:
        any_data = self.has_data.any(axis=1)
        return np.where(any_data, self.has_data.argmax(axis=1), -1).astype(np.int64)

    @cached_property
    def last_t(self) -> np.ndarray:
        any_data = self.has_data.any(axis=1)
        rev = self.has_data[:, ::-1].argmax(axis=1)
        return np.where(any_data, self.n_bars - 1 - rev, -1).astype(np.int64)

    def window(self, start: int = 0, stop: int | None = None) -> Bars:
        """Bars [start, stop) of the clock (indices), copied to C-contiguous arrays."""
        sl = slice(start, stop)
        cut = {k: np.ascontiguousarray(getattr(self, k)[:, sl]) for k in (*OHLCV, "has_data")}
        return Bars(self.symbols, self.ts_ns[sl].copy(), bar_ns=self.bar_ns,
                    skipped=dict(self.skipped), **cut)

    def days(self, start_day: float, n_days: float) -> Bars:
        """A window of `n_days` days starting `start_day` days after the first bar."""
        per_day = 86_400_000_000_000 // self.bar_ns
        a = round(start_day * per_day)
        return self.window(a, a + round(n_days * per_day))

    def select(self, symbols: Sequence[str]) -> Bars:
        """The named symbols only, in that order (KeyError-like BarsError if one is absent)."""
        missing = [s for s in symbols if s not in self.symbols]
        if missing:
            raise BarsError(f"symbols {missing} not loaded; loaded: {list(self.symbols)}")
        rows = [self.symbols.index(s) for s in symbols]
        cut = {k: np.ascontiguousarray(getattr(self, k)[rows]) for k in (*OHLCV, "has_data")}
        return Bars(tuple(symbols), self.ts_ns.copy(), bar_ns=self.bar_ns,
                    skipped={s: self.skipped.get(s, 0) for s in symbols}, **cut)

    def frame(self, symbol: str) -> pl.DataFrame:
        """One symbol's bars with data as a polars DataFrame (time UTC, open..volume)."""
        s = self.symbols.index(symbol)
        m = self.has_data[s]
        return pl.DataFrame(
            {"time": pl.Series(self.ts_ns[m]).cast(pl.Datetime("ns", "UTC")),
             **{k: getattr(self, k)[s, m] for k in OHLCV}}
        )


def read_bars(path: str | Path, bar_ns: int = MINUTE_NS) -> pl.DataFrame:
    """One file as a validated polars DataFrame: `ts_ns` (Int64, ns UTC) and open..volume
    (Float64), zero-volume bars included. Raises BarsError (file, column, row) on bad input."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".feather", ".arrow", ".ipc")):
            raw = pl.read_ipc(path)
        elif name.endswith((".csv", ".csv.gz")):
            raw = pl.read_csv(path, try_parse_dates=False)
        elif name.endswith(".parquet"):
            raw = pl.read_parquet(path)
        elif name.endswith(".zip"):
            raw = _read_lean_zip(path)
        else:
            raise BarsError(f"{path}: unknown bar format; expected one of {_SUFFIXES}")
    except (OSError, pl.exceptions.PolarsError, zipfile.BadZipFile) as exc:
        raise BarsError(f"{path}: cannot read bars: {exc}") from exc
    return _validate(_normalize(raw, path), path, bar_ns)


def _read_lean_zip(path: Path) -> pl.DataFrame:
    match = _LEAN_NAME.match(path.name)
    if match is None:
        raise BarsError(f"{path}: a Lean trade-bar zip is named YYYYMMDD_trade.zip")
    day = dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
    day_ns = int(day.timestamp()) * 1_000_000_000
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith(".csv")]
        if len(members) != 1:
            raise BarsError(f"{path}: expected one CSV inside the Lean zip, found {members}")
        data = zf.read(members[0])
    df = pl.read_csv(io.BytesIO(data), has_header=False,
                     new_columns=["ms", *OHLCV], schema_overrides={"ms": pl.Int64})
    return df.with_columns((pl.col("ms") * 1_000_000 + day_ns).alias("ts_ns")).drop("ms")


def _normalize(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    if "ts_ns" in raw.columns:
        ts = raw["ts_ns"]
    else:
        tcol = next((c for c in TIME_COLUMNS if c in raw.columns), None)
        if tcol is None:
            raise BarsError(f"{path}: missing column 'date' (a time column, one of "
                            f"{list(TIME_COLUMNS)}); found columns {raw.columns}")
        ts = _to_ns(raw[tcol], path, tcol)
    for col in OHLCV:
        if col not in raw.columns:
            raise BarsError(f"{path}: missing column {col!r}; expected a time column and "
                            f"{list(OHLCV)}, found {raw.columns}")
    try:
        values = {c: raw[c].cast(pl.Float64) for c in OHLCV}
    except pl.exceptions.PolarsError as exc:
        raise BarsError(f"{path}: a price/volume column is not numeric: {exc}") from exc
    return pl.DataFrame({"ts_ns": ts.cast(pl.Int64), **values})


def _to_ns(col: pl.Series, path: Path, name: str) -> pl.Series:
    if col.dtype == pl.String:
        try:
            col = col.str.to_datetime(time_unit="ns")
        except pl.exceptions.PolarsError as exc:
            raise BarsError(f"{path}: column {name!r} is not a date/time: {exc}") from exc
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        return col.dt.epoch("ns")
    if col.dtype.is_integer():
        top = int(col.abs().max() or 0)
        scale = 10**9 if top < 10**11 else 10**6 if top < 10**14 else 10**3 if top < 10**17 else 1
        return col.cast(pl.Int64) * scale
    raise BarsError(f"{path}: column {name!r} has dtype {col.dtype}; expected a datetime, an "
                    "ISO string or an integer epoch")


def _first_row(mask: pl.Series) -> int | None:
    hits = mask.arg_true()
    return int(hits[0]) if len(hits) else None


def _validate(df: pl.DataFrame, path: Path, bar_ns: int) -> pl.DataFrame:
    ts = df["ts_ns"]
    if ts.null_count():
        row = _first_row(ts.is_null())
        raise BarsError(f"{path}: column 'date' row {row}: missing timestamp")
    row = _first_row(ts.diff() <= 0)
    if row is not None:
        kind = "duplicate" if ts[row] == ts[row - 1] else "non-monotonic"
        raise BarsError(f"{path}: column 'date' row {row}: {kind} timestamp "
                        f"{_iso(ts[row])} after {_iso(ts[row - 1])}; expected strictly increasing")
    row = _first_row(ts % bar_ns != 0)
    if row is not None:
        raise BarsError(f"{path}: column 'date' row {row}: {_iso(ts[row])} is not on the "
                        f"{bar_ns // 1_000_000_000} s bar grid")
    for col in PRICE_COLUMNS:
        bad = df[col].is_nan() | df[col].is_null() | (df[col] <= 0)
        row = _first_row(bad)
        if row is not None:
            raise BarsError(f"{path}: column {col!r} row {row}: price {df[col][row]} at "
                            f"{_iso(ts[row])}; expected a positive number")
    vol = df["volume"]
    row = _first_row(vol.is_nan() | vol.is_null() | (vol < 0))
    if row is not None:
        raise BarsError(f"{path}: column 'volume' row {row}: volume {vol[row]} at "
                        f"{_iso(ts[row])}; expected a number >= 0")
    return df


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


def symbol_of(path: Path) -> str:
    """Symbol named by a file: freqtrade `ADA_USDT_USDT-1m-futures.feather` -> `ADA_USDT_USDT`,
    `btc-perp-..._1m.csv.gz` -> its stem; a Lean day zip -> its directory (`btcusd`)."""
    if _LEAN_NAME.match(path.name):
        return path.parent.name
    stem = path.name
    for suffix in _SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.split("-")[0] if path.name.endswith(".feather") else stem


def discover(directory: str | Path) -> dict[str, list[Path]]:
    """Symbol -> files in a directory: one bar file per symbol (feather, CSV, Parquet), or the
    Lean layout of one subdirectory per symbol holding `YYYYMMDD_trade.zip` days."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BarsError(f"{directory}: not a directory of bar files")
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            days = sorted(p for p in path.iterdir() if _LEAN_NAME.match(p.name))
            if days:
                found[path.name] = days
        elif path.name.lower().endswith(_SUFFIXES) and not path.name.endswith("_quote.zip"):
            found.setdefault(symbol_of(path), []).append(path)
    if not found:
        raise BarsError(f"{directory}: no bar files ({', '.join(_SUFFIXES)}) or Lean folders")
    return found


def load_bars(
    source: str | Path | Mapping[str, str | Path | Sequence[str | Path]] | Sequence[str | Path],
    *,
    symbols: Sequence[str] | None = None,
    bar_ns: int = MINUTE_NS,
) -> Bars:
    """Load bars of N symbols and align them on one clock.

    source: a directory (see `discover`), a list of files (symbol from each name, see
      `symbol_of`; files of one symbol are concatenated in time order), or a mapping
      symbol -> file or files.
    symbols: keep only these (in this order).
    bar_ns: bar length in ns (1 minute by default); timestamps must sit on that grid.

    The clock runs from the earliest first bar to the latest last bar of all symbols.
    Raises BarsError naming file, column and row for bad input (see the module docstring).
    """
    files = _files_by_symbol(source)
    if symbols is not None:
        missing = [s for s in symbols if s not in files]
        if missing:
            raise BarsError(f"symbols {missing} not found; available: {sorted(files)}")
        files = {s: files[s] for s in symbols}
    frames: dict[str, pl.DataFrame] = {}
    for sym, paths in files.items():
        parts = [read_bars(p, bar_ns) for p in sorted(paths, key=lambda p: p.name)]
        df = pl.concat(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            row = _first_row(df["ts_ns"].diff() <= 0)
            if row is not None:
                raise BarsError(f"{sym} ({', '.join(p.name for p in paths)}): column 'date' "
                                f"row {row} of the joined files: overlapping days")
        frames[sym] = df
    return align(frames, bar_ns)


def _files_by_symbol(source: object) -> dict[str, list[Path]]:
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            return discover(path)
        return {symbol_of(path): [path]}
    if isinstance(source, Mapping):
        out: dict[str, list[Path]] = {}
        for sym, val in source.items():
            out[str(sym)] = [Path(val)] if isinstance(val, str | Path) else [Path(v) for v in val]
        return out
    out = {}
    for val in source:  # type: ignore[attr-defined]
        p = Path(val)
        out.setdefault(symbol_of(p), []).append(p)
    return out


def align(frames: Mapping[str, pl.DataFrame], bar_ns: int = MINUTE_NS) -> Bars:
    """Put validated frames (`ts_ns`, open..volume; see `read_bars`) on one clock.

    Zero-volume bars are skipped (has_data False) and counted in `Bars.skipped`.
    """
    if not frames:
        raise BarsError("no symbols to align")
    starts = [int(df["ts_ns"][0]) for df in frames.values() if df.height]
    if not starts:
        raise BarsError(f"every symbol is empty: {list(frames)}")
    t0 = min(starts)
    t1 = max(int(df["ts_ns"][-1]) for df in frames.values() if df.height)
    n = (t1 - t0) // bar_ns + 1
    s_count = len(frames)
    arrays = {k: np.full((s_count, n), np.nan) for k in OHLCV}
    has = np.zeros((s_count, n), dtype=np.bool_)
    skipped: dict[str, int] = {}
    for s, (sym, df) in enumerate(frames.items()):
        idx = ((df["ts_ns"].to_numpy() - t0) // bar_ns).astype(np.int64)
        traded = df["volume"].to_numpy() > 0
        for k in OHLCV:
            arrays[k][s, idx[traded]] = df[k].to_numpy()[traded]
        has[s, idx[traded]] = True
        skipped[sym] = int((~traded).sum())
        if skipped[sym]:
            log.warning("%s: skipped %d zero-volume bars", sym, skipped[sym])
    ts = t0 + np.arange(n, dtype=np.int64) * bar_ns
    return Bars(tuple(frames), ts, has_data=has, bar_ns=bar_ns, skipped=skipped, **arrays)
