"""Topic "backtest": the backtester's optimization phases measured, and backtrader beside them.

Input: the real 16-symbol Binance USD-M 1-minute set (`bars/binance_usdm_futures_1m`,
freqtrade feather), TrueBreakout with its defaults and the default execution model.

Phases (`workbench.backtest.phases`), each registered as a pair against phase 0 (the original
threaded design), on the same slice of the clock: 16 symbols x 6 hours with --quick, x 1 day
otherwise (phase 0 runs at thousands of bar-steps/s, so it cannot take 30 days in a benchmark);
the slice starts when the last symbol (ADA) starts, so all 16 trade. The labels and
Outcome.extra say which slice. The source claimed 2.5-4x after its phase 1 and 4-7x after its
phase 2. The phase-3 pair also records, in its extra, the warm throughput of phase 3 on
16 symbols x 30 days (target >= 50M bar-steps/s) and the first call in a fresh process with the
numba cache in place (target < 2 s). `backtest.backtrader` runs backtrader 1.9 (one Cerebro per
symbol, the same rules, market orders at the next open, the same percent slippage and fee)
against phase 3 on 16 symbols x 1 day (--quick) or 5 days, the issue's reference slice
(115,200 bar-steps); target >= 10,000x. Both sides are timed in steady state, each on
input built outside its timed call (backtrader's rows and clock indices, phase 3's `Bars`).
backtrader's call takes seconds; phase 3's takes under a millisecond and, right after
backtrader, runs cold: its inputs (4.6 MB for 5 days) come from DRAM, the branch predictors
were trained by backtrader, and its outputs (per-bar PnL 0.9 MB, trades) may land on fresh
pages (about 3 µs a page fault on this VM), 1.5-3x its warm time. So phase 3's sample there is
the median of STEADY_CALLS back-to-back calls, and the cold first call is kept in its extra
(`cold_call_ns`) for the ratio a single cold call gets. Every pair checks
identical trades. Each variant's extra carries its process CPU seconds (`cpu_s`) beside the
runner's wall time: on a shared machine the two differ, and the short numba calls suffer most
from waiting for a core.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from workbench.backtest import kernels as k
from workbench.backtest.bars import Bars, load_bars
from workbench.backtest.execution import ExecutionModel
from workbench.backtest.phases import PYTHON_PHASES, PyBars, RawRun, python_bars, run_phase
from workbench.backtest.strategies import TrueBreakout, pack_params
from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.errors import PhaseMismatch
from workbench.shared_data import shared_path

DATASET = "bars/binance_usdm_futures_1m"
SLICE_MINUTES = {True: 360, False: 1440}
FULL_DAYS = 30
STRATEGY = TrueBreakout()
EXECUTION = ExecutionModel()
FIELDS = ("symbol", "entry_t", "exit_t", "side", "entry_px", "exit_px", "reason", "held", "pnl")


@lru_cache(maxsize=1)
def full_bars() -> Bars:
    """16 symbols x the first 30 days of the clock (691,200 bar-steps)."""
    return load_bars(shared_path(DATASET)).days(0, FULL_DAYS)


def slice_bars(minutes: int) -> Bars:
    """`minutes` of the clock from the first minute where every symbol has data."""
    bars = full_bars()
    start = int(bars.first_t.max())
    return bars.window(start, start + minutes)


@dataclass
class Prepared:
    """A slice, its Python-side form, the parameters, and figures measured once."""

    bars: Bars
    pb: PyBars | None
    p: np.ndarray
    slice_text: str
    extra: dict[str, Any] = field(default_factory=dict)
    bt: list[BtSymbol] | None = None


def _slice_text(bars: Bars) -> str:
    t0 = dt.datetime.fromtimestamp(int(bars.ts_ns[0]) / 1e9, dt.UTC)
    return (f"{bars.n_symbols} symbols x {bars.n_bars} min from {t0:%Y-%m-%d %H:%M} UTC "
            f"({bars.bar_steps:,} bar-steps)")


def prepare(quick: bool) -> Prepared:
    bars = slice_bars(SLICE_MINUTES[quick])
    return Prepared(bars, python_bars(bars), pack_params(STRATEGY, EXECUTION), _slice_text(bars))


def prepare_with_targets(quick: bool) -> Prepared:
    """`prepare` plus phase 3's warm throughput on 30 days and its first call in a subprocess."""
    prep = prepare(quick)
    full = full_bars()
    run_phase(3, full, prep.p)
    wall, cpu = [], []
    for _ in range(5 if quick else 15):
        t0, c0 = time.perf_counter(), time.process_time()
        run_phase(3, full, prep.p)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    prep.extra = {
        "full_set": _slice_text(full),
        "phase3_full_median_s": statistics.median(wall),
        "phase3_full_bar_steps_per_s": full.bar_steps / statistics.median(wall),
        "phase3_full_bar_steps_per_cpu_s": full.bar_steps / statistics.median(cpu),
        "phase3_full_target_bar_steps_per_s": 50e6,
        "load_average_1min": os.getloadavg()[0],
        **first_call_in_subprocess(),
    }
    return prep


_FIRST_CALL = f"""
import json, time
from workbench.backtest.bars import load_bars
from workbench.shared_data import shared_path
bars = load_bars(shared_path({DATASET!r})).days(0, {FULL_DAYS})
t0, c0 = time.perf_counter(), time.process_time()
from workbench.backtest.results import backtest
from workbench.backtest.strategies import TrueBreakout
t1 = time.perf_counter()
backtest(bars, TrueBreakout())
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({{"first_call_s": t2 - t0, "import_s": t1 - t0, "call_s": t2 - t1,
                  "first_call_cpu_s": c2 - c0}}))
"""


def first_call_in_subprocess() -> dict[str, float]:
    """In a fresh interpreter with the numba cache in place (this process made it): the import
    of the backtester (numba, the cached kernels, their warm-up) plus the first backtest of
    16 symbols x 30 days, with the bars already loaded."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True,
                         check=True, timeout=120)
    total = time.perf_counter() - t0
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return {**figures, "first_call_target_s": 2.0, "subprocess_total_s": total}


def check_identical(a: RawRun, b: RawRun) -> None:
    """Identical trades (every field, exactly) and identical per-bar PnL; PhaseMismatch names
    the first differing trade and field."""
    if a.trades.shape != b.trades.shape:
        raise PhaseMismatch(f"trade count differs: {a.trades.shape[0]} vs {b.trades.shape[0]}")
    diff = np.argwhere(a.trades != b.trades)
    if diff.size:
        row, col = diff[0]
        raise PhaseMismatch(f"trade {row} field {FIELDS[col]}: {a.trades[row, col]!r} vs "
                            f"{b.trades[row, col]!r}")
    bad = np.argwhere(a.mtm != b.mtm)
    if bad.size:
        s, t = bad[0]
        raise PhaseMismatch(f"bar PnL of symbol {s} at bar {t}: {a.mtm[s, t]!r} vs "
                            f"{b.mtm[s, t]!r}")


def _variant(phase: int) -> Any:
    def run(prep: Prepared) -> Outcome:
        c0 = time.process_time()
        raw = run_phase(phase, prep.bars, prep.p, prep.pb if phase in PYTHON_PHASES else None)
        extra = {"slice": prep.slice_text, "trades": int(raw.trades.shape[0]),
                 "cpu_s": time.process_time() - c0}
        if phase == 3:
            extra.update(prep.extra)
        return Outcome(result=raw, items=prep.bars.bar_steps, extra=extra)

    return run


_CLAIMS = {
    1: Claim("source: 2.5-4x after phase 1 (precomputed timestamps, one merged loop)", 2.5, 4.0),
    2: Claim("source: 4-7x after phase 2 (double-buffered has-data bitmap, O(1) volume cache)",
             4.0, 7.0),
    3: Claim("not claimed by the source (one numba kernel over aligned arrays)"),
    4: Claim("not claimed by the source (numba kernel, prange over symbols)"),
}
_LABELS = {
    0: "phase 0 threads+barrier", 1: "phase 1 merged loop", 2: "phase 2 bitmap+O(1) vol",
    3: "phase 3 numba", 4: "phase 4 numba prange",
}

for _n in (1, 2, 3, 4):
    register(Phase(
        name=f"backtest.phase{_n}",
        topic="backtest",
        claim=_CLAIMS[_n],
        prepare=prepare_with_targets if _n == 3 else prepare,
        baseline=_variant(0),
        optimized=_variant(_n),
        check=check_identical,
        metric="time",
        repeats=3,
        warmup=0,
        baseline_label=f"{_LABELS[0]} (16 sym x 6 h quick / 1 day)",
        optimized_label=_LABELS[_n],
    ))


# ---- backtrader, the same TrueBreakout -------------------------------------------------------

BT_MINUTES = {True: 1440, False: 5 * 1440}
STEADY_CALLS = 5


@dataclass(frozen=True)
class BtSymbol:
    """One symbol's bars in the form backtrader's feed reads: rows (naive UTC datetime, open,
    high, low, close, volume) for its bars with data, and clock, their global clock indices."""

    rows: list[tuple]
    clock: list[int]


def bt_inputs(bars: Bars) -> list[BtSymbol]:
    """backtrader's input, built once outside its timed call (as `Bars` is for phase 3)."""
    out = []
    for s in range(bars.n_symbols):
        idx = np.flatnonzero(bars.has_data[s])
        times = [dt.datetime.fromtimestamp(int(ns) // 1_000_000_000, dt.UTC).replace(tzinfo=None)
                 for ns in bars.ts_ns[idx]]
        rows = list(zip(times, *(getattr(bars, f)[s, idx].tolist()
                                 for f in ("open", "high", "low", "close", "volume")),
                        strict=True))
        out.append(BtSymbol(rows, idx.tolist()))
    return out


def _bt_run(inputs: list[BtSymbol], p: np.ndarray) -> list[tuple]:
    """TrueBreakout in backtrader, one Cerebro per symbol. Returns closed trades as tuples in
    FIELDS order (pnl omitted: NaN), plus one ('open', symbol) row per position left open."""
    import backtrader as bt

    n_look, m = int(p[k.P_LOOKBACK]), int(p[k.P_VOL_WINDOW])

    class Feed(bt.feed.DataBase):
        params = (("rows", None),)

        def start(self) -> None:
            super().start()
            self._i = 0

        def _load(self) -> bool:
            if self._i >= len(self.p.rows):
                return False
            t, o, h, lo, c, v = self.p.rows[self._i]
            self._i += 1
            ln = self.lines
            ln.datetime[0] = bt.date2num(t)
            ln.open[0], ln.high[0], ln.low[0], ln.close[0] = o, h, lo, c
            ln.volume[0], ln.openinterest[0] = v, 0.0
            return True

    class Breakout(bt.Strategy):
        params = (("n_rows", 0), ("clock", None), ("sym", 0))

        def __init__(self) -> None:
            d = self.data
            self.hi = bt.ind.Highest(d.high(-1), period=n_look)
            self.lo = bt.ind.Lowest(d.low(-1), period=n_look)
            self.vsum = bt.ind.SumN(d.volume(-1), period=m)
            self.trades: list[tuple] = []
            self.held = 0
            self.side = 0.0
            self.reason = 0.0
            self.entry_t = 0
            self.entry_px = 0.0
            self.stop_px = self.tgt_px = 0.0

        def _t(self, order: Any) -> int:
            return self.p.clock[len(self) - 1]

        def notify_order(self, order: Any) -> None:
            if order.status != order.Completed:
                return
            px = order.executed.price
            if self.side == 0.0:
                self.side = 1.0 if order.isbuy() else -1.0
                self.entry_t, self.entry_px, self.held = self._t(order), px, 0
                self.stop_px = px * (1.0 - self.side * p[k.P_STOP])
                self.tgt_px = px * (1.0 + self.side * p[k.P_TARGET])
            else:
                self.trades.append((self.p.sym, self.entry_t, self._t(order), self.side,
                                    self.entry_px, px, self.reason, float(self.held), np.nan))
                self.side = 0.0

        def next(self) -> None:
            d = self.data
            c = d.close[0]
            is_last = len(self) == self.p.n_rows
            if self.side != 0.0:
                self.held += 1
                s = self.side
                if s * c <= s * self.stop_px:
                    self.reason = k.REASON_STOP
                elif s * c >= s * self.tgt_px:
                    self.reason = k.REASON_TARGET
                elif self.held >= p[k.P_MAX_HOLD]:
                    self.reason = k.REASON_TIME
                else:
                    return
                if not is_last:
                    self.close()
                return
            if is_last or d.volume[0] * p[k.P_VOL_WINDOW] < p[k.P_VOL_MULT] * self.vsum[0]:
                return
            if c > self.hi[0]:
                self.buy(size=1)
            elif c < self.lo[0]:
                self.sell(size=1)

    out: list[tuple] = []
    for s, sym in enumerate(inputs):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(Feed(rows=sym.rows))
        cerebro.addstrategy(Breakout, n_rows=len(sym.rows), clock=sym.clock, sym=s)
        cerebro.broker.setcash(1e12)
        cerebro.broker.setcommission(commission=float(p[k.P_FEE]))
        cerebro.broker.set_slippage_perc(float(p[k.P_SLIP]), slip_open=True, slip_match=True,
                                         slip_out=True)
        strat = cerebro.run()[0]
        out.extend(strat.trades)
        if strat.side != 0.0:
            out.append(("open", s))
    return out


def check_backtrader(bt_trades: list[tuple], raw: RawRun) -> None:
    """backtrader's closed trades equal ours without END exits (prices to 1e-12 relative), and
    its positions left open match our END exits symbol by symbol."""
    ours = raw.trades
    end = ours[:, 1 + k.T_REASON] == k.REASON_END
    closed = [t for t in bt_trades if t[0] != "open"]
    still_open = sorted(t[1] for t in bt_trades if t[0] == "open")
    if still_open != sorted(ours[end, 0].astype(int).tolist()):
        raise PhaseMismatch(f"open positions at the end: backtrader symbols {still_open}, "
                            f"ours (END exits) {sorted(ours[end, 0].astype(int).tolist())}")
    mine = ours[~end]
    if len(closed) != len(mine):
        raise PhaseMismatch(f"closed trade count: backtrader {len(closed)}, ours {len(mine)}")
    theirs = np.array(closed, dtype=float).reshape(-1, len(FIELDS))
    for col in range(len(FIELDS) - 1):
        a, b = theirs[:, col], mine[:, col]
        ok = np.isclose(a, b, rtol=1e-12, atol=0) if col in (4, 5) else a == b
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise PhaseMismatch(f"trade {row} field {FIELDS[col]}: backtrader {a[row]!r}, "
                                f"ours {b[row]!r}")


def prepare_bt(quick: bool) -> Prepared:
    """The backtrader slice and backtrader's input (no Python-side bars: only phase 3 runs on
    it)."""
    bars = slice_bars(BT_MINUTES[quick])
    return Prepared(bars, None, pack_params(STRATEGY, EXECUTION), _slice_text(bars),
                    bt=bt_inputs(bars))


def _bt_variant(prep: Prepared) -> Outcome:
    assert prep.bt is not None
    c0 = time.process_time()
    trades = _bt_run(prep.bt, prep.p)
    return Outcome(result=trades, items=prep.bars.bar_steps,
                   extra={"slice": prep.slice_text, "trades": len(trades),
                          "cpu_s": time.process_time() - c0})


def _phase3_steady(prep: Prepared) -> Outcome:
    """Phase 3 against backtrader: STEADY_CALLS back-to-back calls, timed as their median (the
    sample's wall_ns); every call's time is in extra, the first being the cold one."""
    c0 = time.process_time()
    walls = []
    for _ in range(STEADY_CALLS):
        t0 = time.perf_counter_ns()
        raw = run_phase(3, prep.bars, prep.p)
        walls.append(time.perf_counter_ns() - t0)
    return Outcome(result=raw, items=prep.bars.bar_steps, wall_ns=int(statistics.median(walls)),
                   extra={"slice": prep.slice_text, "trades": int(raw.trades.shape[0]),
                          "calls_ns": walls, "cold_call_ns": walls[0],
                          "cpu_s": time.process_time() - c0})


register(Phase(
    name="backtest.backtrader",
    topic="backtest",
    claim=Claim("target (issue 6): phase 3 >= 10,000x backtrader, same strategy and data",
                10_000.0, None),
    prepare=prepare_bt,
    baseline=_bt_variant,
    optimized=_phase3_steady,
    check=check_backtrader,
    metric="time",
    repeats=3,
    warmup=0,
    baseline_label="backtrader 1.9 (16 sym x 1 day quick / 5 days)",
    optimized_label=_LABELS[3],
))
