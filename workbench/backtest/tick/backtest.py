"""Run a compiled strategy through the tick kernel over a converted recording, in chunks.

    from workbench.backtest.tick import TickConfig, tick_backtest
    from workbench.engine.compiled import Quoter
    result = tick_backtest("rec.gz", Quoter(0.001, 0.01), TickConfig(queue="power"))
    result.fills; result.stats()

`tick_backtest(data, strategy, config)`: data is a recording path (converted through the
cache, `events.events_for`), a converted `.npy`, or a `TickData`; strategy a compiled strategy
(`workbench.engine.compiled`). The rows are fed to the kernel window by window
(`config.chunk_events` rows, plus the rows between the two timelines' cursors), so memory is
bounded by the window, the books' ROI and the logs, not the file. Raises ConfigError for bad
settings (listed on TickConfig).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
from numba.experimental.structref import StructRefProxy

from workbench.backtest.tick import kernel as k
from workbench.backtest.tick.events import CHUNK_EVENTS, TickData, events_for
from workbench.backtest.tick.latency import ConstantLatency, InterpLatency
from workbench.backtest.tick.pyhost import PythonHost
from workbench.backtest.tick.results import TickResult
from workbench.engine.compiled import GF_POSITION, Gateway, gateway_arrays
from workbench.engine.queue_models import QueueModel
from workbench.errors import ConfigError

LOG_ROWS = 1 << 16  # fills / orders / records held before the kernel hands them over
BUS_ROWS = 1 << 14  # in-flight requests and responses
EXCHANGE_ORDERS = 4096  # resting orders at the simulated exchange
MAX_ROI_TICKS = 20_000_000
ROI_SPAN = 0.25  # default ROI: the median price +-25%


@dataclass(frozen=True)
class TickConfig:
    """Settings of a tick backtest.

    latency: ConstantLatency or InterpLatency (default 1 ms each way). queue: a QueueModel name
    (`risk_averse`, `power`, `log`, `power2`, `log2`, `power3`) and prob_n its exponent (power
    models). partial: partial fills (False: hftbacktest's no-partial exchange). maker_fee_bps /
    taker_fee_bps: fee rates (negative maker = rebate). symbol: name or id (None: the symbol
    with most events). tick_size / lot_size: None = found by the converter. roi: (low, high)
    price range the books keep; levels outside it are ignored, as hftbacktest's
    ROIVectorMarketDepth does (None: `default_roi`). record_every_ns: equity and
    inventory sampled at most this often (local time). progress: a progress bar on stderr.
    """

    latency: ConstantLatency | InterpLatency = field(
        default_factory=lambda: ConstantLatency(1_000_000, 1_000_000))
    queue: str = "risk_averse"
    prob_n: float = 3.0
    partial: bool = False
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    symbol: str | int | None = None
    tick_size: float | None = None
    lot_size: float | None = None
    roi: tuple[float, float] | None = None
    record_every_ns: int = 100_000_000
    chunk_events: int = CHUNK_EVENTS
    progress: bool = False

    def queue_model(self) -> QueueModel:
        try:
            return QueueModel[self.queue.upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in QueueModel)
            raise ConfigError(f"TickConfig: unknown queue model {self.queue!r} (one of "
                              f"{names})") from None


def default_roi(meta, symbol_id: int) -> tuple[float, float]:
    """The price range the books keep by default: the symbol's median price x [1 - ROI_SPAN,
    1 + ROI_SPAN], within the file's price range (stray prices far off, such as a 560 bid
    under a 61,800 market, would otherwise size the books)."""
    key = str(symbol_id)
    if key not in meta.price_median:
        return meta.price_min.get(key, 0.0), meta.price_max.get(key, 0.0)
    mid = meta.price_median[key]
    return (max(meta.price_min.get(key, 0.0), mid * (1 - ROI_SPAN)),
            min(meta.price_max.get(key, 0.0), mid * (1 + ROI_SPAN)))


def open_data(data: TickData | str) -> TickData:
    """`data` as TickData: a TickData, a converted .npy, or a recording (cached conversion)."""
    if isinstance(data, TickData):
        return data
    text = str(data)
    return TickData(text) if text.endswith(".npy") else events_for(text)


def tick_backtest(data: TickData | str, strategy, config: TickConfig | None = None,
                  gateway: Gateway | None = None) -> TickResult:
    """Run `strategy` over `data`; returns the TickResult. strategy: a compiled strategy
    (`compiled_class` or jitclass with on_feed/on_fill, `workbench.engine.compiled`) or an
    engine Strategy (`on_events(book, batch)`, run through `pyhost.PythonHost`, a Python call
    per feed).
    gateway: the Gateway to use (default a new one with the data's tick and lot size)."""
    cfg = config or TickConfig()
    data = open_data(data)
    meta = data.meta
    sid = meta.symbol_id(cfg.symbol)
    key = str(sid)
    tick = cfg.tick_size or meta.tick_size.get(key)
    lot = cfg.lot_size or meta.lot_size.get(key)
    if not tick or not lot or tick <= 0 or lot <= 0:
        raise ConfigError(f"tick_backtest: no tick/lot size for symbol {sid}: pass tick_size= "
                          f"and lot_size=")
    lo, hi = cfg.roi or default_roi(meta, sid)
    lb, ub = round(lo / tick), round(hi / tick)  # hftbacktest's ROI rounding
    if not 0 <= lb < ub or ub - lb > MAX_ROI_TICKS:
        raise ConfigError(f"tick_backtest: ROI {lo}..{hi} is {ub - lb} ticks of {tick} (at most "
                          f"{MAX_ROI_TICKS}): pass roi=(low, high)")
    if cfg.record_every_ns <= 0 or cfg.chunk_events < 1024:
        raise ConfigError("tick_backtest: record_every_ns must be > 0 and chunk_events >= 1024")
    mode, const_entry, const_resp, lat_rows = cfg.latency.as_arrays()
    hosted = not hasattr(strategy, "on_feed")  # an engine Strategy: on_events(book, batch)
    if hosted and not hasattr(strategy, "on_events"):
        raise ConfigError(f"tick_backtest: {type(strategy).__name__} is neither a compiled "
                          f"strategy (on_feed) nor an engine Strategy (on_events)")
    p_i = np.array([cfg.queue_model(), int(cfg.partial), mode, const_entry, const_resp,
                    cfg.record_every_ns, sid, lb, ub], np.int64)
    p_f = np.array([cfg.maker_fee_bps / 1e4, cfg.taker_fee_bps / 1e4, tick, lot, cfg.prob_n])
    gw_arrays = gateway_arrays(tick, lot) if gateway is None else gateway.state
    sim = _Sim(ub - lb + 1)
    sim.st[k.S_TARGET] = k.NO_TARGET
    sim.st[k.S_LNEXT] = sim.st[k.S_ENEXT] = -1
    host = PythonHost(strategy, data.rows, sim, sid, lb, tick) if hosted else None
    drive = k.drive if isinstance(strategy, StructRefProxy) else k.drive_jitclass
    out = _Logs()
    bar = _Progress(len(data)) if cfg.progress else None
    t0 = time.perf_counter()
    start = 0
    while True:
        end = min(len(data), max(sim.st[k.S_LCUR], sim.st[k.S_ECUR]) + cfg.chunk_events)
        window = np.asarray(data.rows[start:end])
        last = end >= len(data)
        arrays = (window, start, last, p_i, p_f, lat_rows, sim.depth, sim.bst, sim.xi, sim.xf,
                  sim.bx_i, sim.bx_f, sim.bl_i, sim.bl_f, sim.st, sim.sf, sim.fl_i, sim.fl_f,
                  sim.ol_i, sim.ol_f, sim.rc_i, sim.rc_f)
        if host is None:
            status = drive(strategy, *arrays, *gw_arrays)
        else:
            status = k.run(*arrays, *gw_arrays)
            if status == k.FEED:
                host.feed(*gw_arrays)
            if status in (k.FEED, k.FILL):  # an engine Strategy gets no fills (pyhost)
                continue
        out.take(sim)
        if bar is not None:
            bar.show(min(sim.st[k.S_LCUR], sim.st[k.S_ECUR]))
        if status == k.END:
            break
        if status == k.NEED_DATA:
            start = int(min(sim.st[k.S_LCUR], sim.st[k.S_ECUR]))
            if last:
                raise AssertionError("kernel asked for data past the end")  # unreachable
    if bar is not None:
        bar.done()
    return TickResult(out.fills(tick), out.orders(tick), out.records(),
                      events=int(sim.st[k.S_EVENTS]), feeds=int(sim.st[k.S_FEEDS]),
                      seconds=time.perf_counter() - t0, position=float(gw_arrays[1][GF_POSITION]),
                      balance=float(sim.sf[k.F_BALANCE]), fees=float(sim.sf[k.F_FEES]),
                      symbol=meta.symbols.get(key, ["", key])[1], tick_size=tick, lot_size=lot)


class _Sim:
    """The kernel's state arrays (kernel module: the slot constants)."""

    def __init__(self, roi_ticks: int) -> None:
        self.depth = np.zeros((2, 2, roi_ticks))
        self.bst = np.array([[k.INVALID_MIN, k.INVALID_MAX, k.INVALID_MAX, k.INVALID_MIN]] * 2,
                            np.int64)
        self.xi = np.zeros((EXCHANGE_ORDERS, 7), np.int64)
        self.xf = np.zeros((EXCHANGE_ORDERS, 4))
        self.bx_i = np.zeros((BUS_ROWS, 8), np.int64)
        self.bx_f = np.zeros((BUS_ROWS, 1))
        self.bl_i = np.zeros((BUS_ROWS, 8), np.int64)
        self.bl_f = np.zeros((BUS_ROWS, 3))
        self.st = np.zeros(k.STATE_SIZE, np.int64)
        self.sf = np.zeros(k.SF_SIZE)
        self.fl_i = np.zeros((LOG_ROWS, 7), np.int64)
        self.fl_f = np.zeros((LOG_ROWS, 3))
        self.ol_i = np.zeros((LOG_ROWS, 8), np.int64)
        self.ol_f = np.zeros((LOG_ROWS, 2))
        self.rc_i = np.zeros(LOG_ROWS, np.int64)
        self.rc_f = np.zeros((LOG_ROWS, 6))


class _Logs:
    """What the kernel logged, drained after each call."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {n: [] for n in
                                                   ("fl_i", "fl_f", "ol_i", "ol_f", "rc_i",
                                                    "rc_f")}

    def take(self, sim: _Sim) -> None:
        for name, count in (("fl", k.S_NF), ("ol", k.S_NO), ("rc", k.S_NR)):
            n = int(sim.st[count])
            if n:
                self.parts[f"{name}_i"].append(getattr(sim, f"{name}_i")[:n].copy())
                self.parts[f"{name}_f"].append(getattr(sim, f"{name}_f")[:n].copy())
                sim.st[count] = 0

    def _cat(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        parts = self.parts[name]
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    def fills(self, tick: float) -> dict[str, np.ndarray]:
        i, f = self._cat("fl_i", (0, 7), np.int64), self._cat("fl_f", (0, 3), np.float64)
        return {"order_id": i[:, k.FL_ID], "side": i[:, k.FL_SIDE],
                "price": i[:, k.FL_TICK] * tick, "qty": f[:, k.FLF_QTY],
                "fee": f[:, k.FLF_FEE], "maker": i[:, k.FL_MAKER] == 1,
                "ts_exch_ns": i[:, k.FL_EXCH], "ts_local_ns": i[:, k.FL_LOCAL],
                "ts_sent_ns": i[:, k.FL_SENT], "mid": f[:, k.FLF_MID]}

    def orders(self, tick: float) -> dict[str, np.ndarray]:
        i, f = self._cat("ol_i", (0, 8), np.int64), self._cat("ol_f", (0, 2), np.float64)
        return {"order_id": i[:, k.OL_ID], "side": i[:, k.OL_SIDE],
                "price": i[:, k.OL_TICK] * tick, "qty": f[:, k.OLF_QTY],
                "order_type": i[:, k.OL_TYPE], "tif": i[:, k.OL_TIF],
                "ts_sent_ns": i[:, k.OL_SENT], "ts_exch_ns": i[:, k.OL_EXCH],
                "status": i[:, k.OL_STATUS], "queue_ahead": f[:, k.OLF_FRONT]}

    def records(self) -> dict[str, np.ndarray]:
        i, f = self._cat("rc_i", (0,), np.int64), self._cat("rc_f", (0, 6), np.float64)
        return {"ts_ns": i, "mid": f[:, k.RCF_MID], "position": f[:, k.RCF_POS],
                "balance": f[:, k.RCF_BAL], "fees": f[:, k.RCF_FEES],
                "bid_queue_ahead": f[:, k.RCF_BID_FRONT], "ask_queue_ahead": f[:, k.RCF_ASK_FRONT]}


class _Progress:
    """A one-line progress bar on stderr (rows done of total), at most 10 redraws a second."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.t0 = self.last = time.perf_counter()

    def show(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.1:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rtick backtest [{bar:<30}] {frac:6.1%} {done:,} rows "
                         f"{now - self.t0:6.1f} s")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write(f"\rtick backtest [{'#' * 30}] 100.0% {self.total:,} rows "
                         f"{time.perf_counter() - self.t0:6.1f} s\n")
        sys.stderr.flush()
