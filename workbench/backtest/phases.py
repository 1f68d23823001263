"""The backtester's optimization phases, each a complete backtest giving identical trades.

The design being reproduced ran one thread per symbol with a barrier per minute and expected
2.5-4x from its phase 1 and 4-7x from its phase 2 without measuring them. Here each phase walks
the same bars through the same rules (`kernels.on_bar` and `on_break`; phases 0-2 run their
Python source):

- phase 0, the original: one thread per symbol, a `threading.Barrier` every minute, the minute's
  timestamp computed with datetime arithmetic, a lock around every has-data lookup (a dict keyed
  by timestamp), the N-bar high/low and the M-bar volume mean recomputed from history every bar.
- phase 1: timestamps precomputed once and one merged loop (minutes outer, symbols inner), no
  threads or barrier.
- phase 2: phase 1 with a double-buffered has-data bitmap (the next minute's flags are filled
  while the current one is used; no lock, no dict) and an O(1) volume cache (running sum).
- phase 3: one numba kernel over the aligned arrays (`kernels.run_serial`); it visits only the
  bars where something can happen (flags from a first pass, see `kernels`), same trades.
- phase 4: phase 3 parallel over symbols (`kernels.run_parallel`, `prange`).

Phases 0-2 take `PyBars` (Python structures built once from `Bars` by `python_bars`, outside
the timed call); phases 3-4 take `Bars`.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbench.backtest import kernels as k
from workbench.backtest.bars import Bars
from workbench.errors import ConfigError


def _interpreted(kernel: Callable[..., object]) -> Callable[..., object]:
    """A kernel's Python source (`.py_func`) with the kernels it calls (`_exit`, `hold_bar`, ...)
    bound to their Python source too, so the interpreted phases never call compiled code."""
    fn = kernel.py_func
    scope = {**fn.__globals__, **{name: getattr(obj, "py_func", obj)
                                  for name, obj in fn.__globals__.items()
                                  if name in fn.__code__.co_names}}
    return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)


_on_bar = _interpreted(k.on_bar)
_on_break = _interpreted(k.on_break)
_volume_confirmed = _interpreted(k.volume_confirmed)
_write_trade = _interpreted(k.write_trade)
_NAN = math.nan


@dataclass(frozen=True)
class RawRun:
    """A phase's raw output.

    trades: float64 [n, 1 + kernels.N_TRADE_FIELDS]: column 0 the symbol index, then the
      kernels' trade record (T_ENTRY ...), ordered by symbol then entry.
    mtm: float64 [S, T], PnL change of each symbol over each bar (capital units).
    """

    trades: np.ndarray
    mtm: np.ndarray


@dataclass(frozen=True)
class PyBars:
    """Python-side inputs of phases 0-2 (built by `python_bars`).

    start: datetime of clock bar 0; times: datetime per clock bar (phase 1+); by_time: per
    symbol, datetime -> (open, high, low, close, volume); rows: per symbol, a list of
    (clock index, open, high, low, close, volume) for its bars with data; last_t: per symbol, its
    last clock index with data; n_bars: T.
    """

    start: dt.datetime
    bar: dt.timedelta
    times: list[dt.datetime]
    by_time: list[dict[dt.datetime, tuple[float, float, float, float, float]]]
    rows: list[list[tuple[int, float, float, float, float, float]]]
    last_t: list[int]
    n_bars: int


def python_bars(bars: Bars) -> PyBars:
    """Build the Python structures phases 0-2 read."""
    times = [dt.datetime.fromtimestamp(int(ns) // 1_000_000_000, dt.UTC) for ns in bars.ts_ns]
    by_time, rows = [], []
    for s in range(bars.n_symbols):
        idx = np.flatnonzero(bars.has_data[s])
        cols = [getattr(bars, c)[s, idx].tolist() for c in ("open", "high", "low", "close",
                                                             "volume")]
        sym_rows = list(zip(idx.tolist(), *cols, strict=True))
        rows.append(sym_rows)
        by_time.append({times[r[0]]: r[1:] for r in sym_rows})
    return PyBars(times[0], dt.timedelta(seconds=bars.bar_ns // 1_000_000_000), times, by_time,
                  rows, bars.last_t.tolist(), bars.n_bars)


def _alloc(n_sym: int, n_bars: int, zeroed: bool = True
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh state, trade buffer and per-bar PnL (zeroed, or left for a kernel that writes
    every element: zeroing half a megabyte first costs a pass over cold memory)."""
    state = np.zeros((n_sym, k.N_STATE))
    trades = np.empty((n_sym, k.trade_capacity(n_bars), k.N_TRADE_FIELDS))
    return state, trades, (np.zeros if zeroed else np.empty)((n_sym, n_bars))


def _collect(state: np.ndarray, trades: np.ndarray, mtm: np.ndarray) -> RawRun:
    return RawRun(k.compact_trades(state, trades), mtm)


def _apply(t: int, o: float, c: float, v: float, vsum: float, hi: float, lo: float,
           ready: bool, is_last: bool, p: tuple[float, ...], st: tuple[float, ...],
           trades: np.ndarray, mtm: np.ndarray) -> tuple[float, ...]:
    """One bar of one symbol through the kernels' rules (interpreted): returns the state."""
    st, test, pnl, closed = _on_bar(t, o, c, _volume_confirmed(v, vsum, p), ready, is_last, p,
                                    st)
    mtm[t] = pnl
    if closed:
        _write_trade(trades, t, st)
    return _on_break(c, hi, lo, p, st) if test else st


def _as_tuple(p: np.ndarray) -> tuple[float, ...]:
    """Parameters as Python floats: what the interpreter indexes and multiplies fastest."""
    return tuple(p.tolist())


class _History:
    """A symbol's state and history lists; the range and volume sum recomputed from the lists
    every bar (phases 0-1)."""

    __slots__ = ("high", "low", "m", "n", "state", "vol", "warm")

    def __init__(self, p: tuple[float, ...]) -> None:
        self.n = int(p[k.P_LOOKBACK])
        self.m = int(p[k.P_VOL_WINDOW])
        self.warm = max(self.n, self.m)
        self.high: list[float] = []
        self.low: list[float] = []
        self.vol: list[float] = []
        self.state = k.initial_state()

    def step(self, t: int, bar: tuple[float, float, float, float, float], is_last: bool,
             p: tuple[float, ...], trades: np.ndarray, mtm: np.ndarray) -> None:
        o, h, lo, c, v = bar
        ready = len(self.vol) >= self.warm
        if ready:
            hi, low = max(self.high[-self.n:]), min(self.low[-self.n:])
            vsum = sum(self.vol[-self.m:])
        else:
            hi = low = vsum = _NAN
        self.state = _apply(t, o, c, v, vsum, hi, low, ready, is_last, p, self.state, trades, mtm)
        self.high.append(h)
        self.low.append(lo)
        self.vol.append(v)


def phase0(pb: PyBars, p: np.ndarray) -> RawRun:
    """The original design: a thread per symbol, a barrier per minute, locked lookups."""
    p = _as_tuple(p)
    n_sym = len(pb.rows)
    state, trades, mtm = _alloc(n_sym, pb.n_bars)
    lock = threading.Lock()
    barrier = threading.Barrier(n_sym)
    failures: list[BaseException] = []

    def worker(s: int) -> None:
        hist = _History(p)
        data, last = pb.by_time[s], pb.last_t[s]
        tr, mt = trades[s], mtm[s]
        try:
            for t in range(pb.n_bars):
                ts = pb.start + pb.bar * t
                with lock:
                    bar = data.get(ts)
                if bar is not None:
                    hist.step(t, bar, t == last, p, tr, mt)
                barrier.wait()
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        state[s] = hist.state

    threads = [threading.Thread(target=worker, args=(s,), name=f"bt-sym-{s}")
               for s in range(n_sym)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]
    return _collect(state, trades, mtm)


def phase1(pb: PyBars, p: np.ndarray) -> RawRun:
    """Precomputed timestamps, one merged loop (minutes outer, symbols inner)."""
    p = _as_tuple(p)
    n_sym = len(pb.rows)
    state, trades, mtm = _alloc(n_sym, pb.n_bars)
    lock = threading.Lock()
    hists = [_History(p) for _ in range(n_sym)]
    for t, ts in enumerate(pb.times):
        for s in range(n_sym):
            with lock:
                bar = pb.by_time[s].get(ts)
            if bar is not None:
                hists[s].step(t, bar, t == pb.last_t[s], p, trades[s], mtm[s])
    for s, hist in enumerate(hists):
        state[s] = hist.state
    return _collect(state, trades, mtm)


def phase2(pb: PyBars, p: np.ndarray) -> RawRun:
    """Phase 1 with a double-buffered has-data bitmap and an O(1) volume cache."""
    p = _as_tuple(p)
    n_sym = len(pb.rows)
    state, trades, mtm = _alloc(n_sym, pb.n_bars)
    n_look, m = int(p[k.P_LOOKBACK]), int(p[k.P_VOL_WINDOW])
    warm = max(n_look, m)
    states = [k.initial_state() for _ in range(n_sym)]
    cursor = [0] * n_sym
    highs: list[list[float]] = [[] for _ in range(n_sym)]
    lows: list[list[float]] = [[] for _ in range(n_sym)]
    rings = [[0.0] * m for _ in range(n_sym)]
    vsums = [0.0] * n_sym
    rows = pb.rows

    def fill(buf: bytearray, t: int) -> None:
        for s in range(n_sym):
            c = cursor[s]
            buf[s] = c < len(rows[s]) and rows[s][c][0] == t

    cur, nxt = bytearray(n_sym), bytearray(n_sym)
    fill(cur, 0)
    for t in range(pb.n_bars):
        for s in range(n_sym):
            if not cur[s]:
                continue
            j = cursor[s]
            _, o, h, lo, c, v = rows[s][j]
            cursor[s] = j + 1
            is_last = t == pb.last_t[s]
            ready = j >= warm
            if ready:
                hi, low, vsum = max(highs[s][-n_look:]), min(lows[s][-n_look:]), vsums[s]
            else:
                hi = low = vsum = _NAN
            states[s] = _apply(t, o, c, v, vsum, hi, low, ready, is_last, p, states[s],
                               trades[s], mtm[s])
            highs[s].append(h)
            lows[s].append(lo)
            ring, slot = rings[s], j % m
            vsum = vsums[s] + v
            if j >= m:
                vsum -= ring[slot]
            ring[slot] = v
            vsums[s] = vsum
        fill(nxt, t + 1)
        cur, nxt = nxt, cur
    for s, st in enumerate(states):
        state[s] = st
    return _collect(state, trades, mtm)


def phase3(bars: Bars, p: np.ndarray) -> RawRun:
    """Phase 3: one numba kernel over the aligned arrays (`kernels.run_serial`), which also
    lays the trades out (no `compact_trades` pass)."""
    mtm = np.empty((bars.n_symbols, bars.n_bars))
    trades = k.run_serial(bars.open, bars.high, bars.low, bars.close, bars.volume,
                          bars.has_data, bars.last_t, p, np.zeros((bars.n_symbols, k.N_STATE)),
                          mtm)
    return RawRun(trades, mtm)


def phase4(bars: Bars, p: np.ndarray) -> RawRun:
    """Phase 4: phase 3 parallel over symbols (`kernels.run_parallel`, `prange`)."""
    state, trades, mtm = _alloc(bars.n_symbols, bars.n_bars, zeroed=False)
    k.run_parallel(bars.open, bars.high, bars.low, bars.close, bars.volume, bars.has_data,
                   bars.last_t, p, state, trades, mtm)
    return _collect(state, trades, mtm)


PHASES: dict[int, Callable[..., RawRun]] = {0: phase0, 1: phase1, 2: phase2, 3: phase3, 4: phase4}
PYTHON_PHASES = frozenset({0, 1, 2})


def run_phase(phase: int, bars: Bars, p: np.ndarray, pb: PyBars | None = None) -> RawRun:
    """Run one phase on `bars` with the parameter vector `p` (strategies.pack_params).
    Phases 0-2 build `python_bars(bars)` when `pb` is not given; any other `phase` raises
    ConfigError."""
    if phase not in PHASES:
        raise ConfigError(f"phase must be one of {sorted(PHASES)}, got {phase!r}")
    if phase in PYTHON_PHASES:
        return PHASES[phase](pb if pb is not None else python_bars(bars), p)
    return PHASES[phase](bars, p)
