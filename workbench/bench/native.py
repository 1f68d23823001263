"""Topic "native": the C++ feed handler (`csrc/native/`, `workbench.feed.native`) against the
Python websocket path (issue 15, "Benchmark"). Input: the real Binance USD-M BTCUSDT recording
`binance/hftbacktest/usdm/btcusdt_20240808.gz` (93,954 messages, 599,014 events).

native.normalize (throughput, messages/s): the recording in memory (quick: its first
  QUICK_MESSAGES). Baseline: the Python normalizer (`get_venue("binance-usdm").normalizer()`,
  msgspec + the compiled level scanner), one call per message; optimized: `NativeParser.
  parse_many`, every message in one C call (simdjson On-Demand; the join of the messages into
  one padded buffer is timed with it). extra["one_message"] times the C parser called once per
  message from Python. Check: the events of all three are equal in every field. Target:
  >= 3M msgs/s and >= 8x.
native.live (latency, tick-to-trade): a SimExchange process of its own serves the recording's
  window as topic "dispatch" does (`dispatch._exchange`: 70 s fast-forwarded so the book syncs
  and EmaCross warms up, a pause, then LIVE_S seconds at the recorded pace, the only part
  measured; quick: LIVE_QUICK_S). One engine run per variant, callback dispatch, the default
  EmaCross, gc frozen, the best Python settings (feed_spin, feed_warm_us=WARM_US) given to both
  (a source applies what it supports: `Engine.source.tuning` in extra says what it did).
  Baseline: `ws:URL` (WebSocketFeed: picows + the Python normalizer on the engine's feed
  thread, `source="sim"`'s path); optimized: `native:URL` (the C++ handler reads the socket
  and publishes into the ring, the feed thread consumes the ring, `source="native"`'s path).
  SimExchange runs in its own process for both, so its Python does not share the engine's
  GIL (the engine's own `sim`/`native` sources start it in-process). Tick-to-trade is the
  engine's: socket-read stamp -> broker ack (-> decision when no order went out). Targets:
  P50 <= 1/2 (the table's "P50" ratio >= 2), P99 <= 1/3 (ratio >= 3) of the Python path's,
  and the order stage (decision -> broker ack) <= 10 µs P50 (extra["order_us"]; a live window
  has few orders, so native.flat_out reports it too). The machine's hiccup rate and the
  window's bursts are in extra and printed under the table.
native.flat_out (throughput, events/s): the engine flat out, the whole recording (quick: its
  first `feed_ws.QUICK_MESSAGES`) served as fast as SimExchange sends (`feed_ws.prepare`: its
  own process, `--speed flat`). Rate = events between the first and the last event the
  engine processed, over that wall time (sampled every POLL_S). Baseline `ws:URL`, optimized
  `native:URL`, callback, no spin. Each path counts the events its engine processed (the
  handler drops the deltas older than its snapshot itself; the Python path hands them to
  BookSync, which drops them), so msgs/s is in extra too. Check: both books valid at the end
  with the same top 20 levels. Target: >= 1M events/s (no ratio claimed).
native.pinning (latency, read-to-publish): two `native:URL` runs of the live window, the
  handler thread unpinned vs pinned (`native_cpu` = the highest CPU this process may use; it
  also tries SCHED_FIFO, reported in extra). Latencies: the engine's parse stage of the
  measured part (socket read -> ring push, the handler's own stamps); tick-to-trade beside
  them. The source design claimed 50-90% less jitter from pinning: P99 ratio 2-10x.

Check of the live and pinning phases: identical fills (side, price, qty, liquidity, market
time) up to the market time both runs reached (`dispatch.check`); fill sequence numbers are
not compared (the ring numbers events, the websocket path messages).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from workbench.bench import dispatch, feed_ws
from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.errors import EngineError, PhaseMismatch
from workbench.events import EVENT_DTYPE
from workbench.feed.native_parser import NativeParser
from workbench.feed.replay import ReplayFeed
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues import get_venue
from workbench.feed.venues.base import Normalizer
from workbench.latency.hiccups import measure_hiccups
from workbench.latency.stages import LOCAL_STAGES, Stage
from workbench.shared_data import shared_path

RECORDING = dispatch.RECORDING
VENUE = "binance-usdm"
SYMBOL = "BTCUSDT"
QUICK_MESSAGES = 20_000
TARGET_MSGS_PER_S = 3_000_000
TARGET_EVENTS_PER_S = 1_000_000
TARGET_ORDER_P50_US = 10.0
LIVE_S, LIVE_QUICK_S = 20.0, 2.0
HICCUP_S = 2.0
WARM_US = dispatch.WARM_US
POLL_S = 0.005  # how often the flat-out run's event count is sampled
RUN_TIMEOUT_S = 600.0


# ---- native.normalize ------------------------------------------------------------------------
@dataclass
class NormalizeInput:
    """The recording in memory: messages (bytes), their receive stamps (int64 ns, shape (n,))
    and one normalizer per path sharing one symbol registry (so the symbol ids agree)."""

    messages: list[bytes]
    recv_ns: np.ndarray
    registry: SymbolRegistry
    python: Normalizer
    native: NativeParser


def _parser(registry: SymbolRegistry) -> NativeParser:
    return NativeParser(VENUE, registry, symbols=[SYMBOL], default_symbol=SYMBOL)


def prepare_normalize(quick: bool) -> NormalizeInput:
    pairs = list(ReplayFeed(shared_path(RECORDING), speed=None))
    if quick:
        pairs = pairs[:QUICK_MESSAGES]
    registry = SymbolRegistry()
    return NormalizeInput([m for _, m in pairs], np.array([r for r, _ in pairs], np.int64),
                          registry, get_venue(VENUE).normalizer(registry), _parser(registry))


def _rates(n: int, wall_ns: int) -> dict[str, float]:
    return {"msgs_per_s": round(n / (wall_ns / 1e9)), "ns_per_msg": round(wall_ns / n, 1)}


def normalize_python(inp: NormalizeInput) -> Outcome:
    normalize = inp.python.normalize
    events = 0
    t0 = time.perf_counter_ns()
    for recv_ns, message in zip(inp.recv_ns.tolist(), inp.messages, strict=True):
        events += len(normalize(message, recv_ns))
    wall = time.perf_counter_ns() - t0
    n = len(inp.messages)
    return Outcome(result=(inp, events), items=n, wall_ns=wall,
                   extra={"events": events, **_rates(n, wall)})


def normalize_native(inp: NormalizeInput) -> Outcome:
    """parse_many (timed: the variant's figure), then the one-message path (extra)."""
    parser = inp.native
    t0 = time.perf_counter_ns()
    events = len(parser.parse_many(inp.messages, inp.recv_ns)[0])
    wall = time.perf_counter_ns() - t0
    parse = parser.parse
    t1 = time.perf_counter_ns()
    for recv_ns, message in zip(inp.recv_ns.tolist(), inp.messages, strict=True):
        parse(message, recv_ns)
    one = time.perf_counter_ns() - t1
    n = len(inp.messages)
    rates = _rates(n, wall)
    return Outcome(result=(inp, events), items=n, wall_ns=wall, extra={
        "events": events, **rates, "target_msgs_per_s": TARGET_MSGS_PER_S,
        "target_met": rates["msgs_per_s"] >= TARGET_MSGS_PER_S,
        "malformed": parser.stats()["malformed"], "one_message": _rates(n, one)})


def _first_difference(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if len(a) != len(b):
        raise PhaseMismatch(f"{what}: {len(a)} events vs {len(b)}")
    for name in EVENT_DTYPE.names:
        differ = np.flatnonzero(a[name] != b[name])
        if len(differ):
            i = int(differ[0])
            raise PhaseMismatch(f"{what}: event {i} field {name}: {a[i]} vs {b[i]}")


def check_normalize(base: tuple, opt: tuple) -> None:
    """Same event count, then the events of fresh normalizers collected in full: Python vs
    parse_many and Python vs the one-message C path, every field."""
    inp, n_base = base
    if n_base != opt[1]:
        raise PhaseMismatch(f"events written: Python {n_base}, native {opt[1]}")
    recv = inp.recv_ns.tolist()
    python = get_venue(VENUE).normalizer(inp.registry)
    want = np.concatenate([python.normalize(m, r).copy() for r, m in zip(
        recv, inp.messages, strict=True)])
    _first_difference(want, _parser(inp.registry).parse_many(inp.messages, inp.recv_ns)[0],
                      "Python normalizer vs parse_many")
    parser = _parser(inp.registry)  # a fresh one: seq counts the parser's messages
    one = np.concatenate([parser.parse(m, r)[0].copy() for r, m in zip(
        recv, inp.messages, strict=True)])
    _first_difference(want, one, "Python normalizer vs NativeParser.parse")


# ---- engine runs: native.live and native.pinning -------------------------------------------------
@lru_cache(maxsize=2)
def _live_input(window_s: float, hiccup_s: float) -> dict[str, Any]:
    dispatch._warm_replay()
    return {"exchange": dispatch._exchange(1.0, window_s, 50.0),
            "hiccups": asdict(measure_hiccups(hiccup_s)), "bursts": dispatch._bursts(window_s)}


def prepare_live(quick: bool) -> dict[str, Any]:
    """The live-pace SimExchange process (shared with topic "dispatch" when it runs too), the
    engine code warmed, the machine's hiccups (HICCUP_S) and the window's bursts."""
    return _live_input(LIVE_QUICK_S if quick else LIVE_S, HICCUP_S)


def _us(stats: dict[str, int], *keys: str) -> dict[str, float]:
    out = {k.removesuffix("_ns"): round(stats[k] / 1e3, 1) for k in keys}
    return {**out, "count": stats["count"]}


def _fills(engine: Engine) -> tuple:
    return tuple((f.side, f.price, f.qty, f.liquidity, f.ts_ns) for f in engine.executor.fills)


def _native_figures(status_feed: dict[str, Any]) -> dict[str, Any]:
    """The handler's counters that say whether the run was clean, its read-to-publish (µs,
    whole run) and what became of pinning and SCHED_FIFO."""
    st = status_feed.get("native")
    if st is None:
        return {}
    c = st["counters"]
    return {"read_to_publish_us": {k: round(v / 1e3, 1) if k != "count" else v
                                   for k, v in st["read_to_publish_ns"].items()},
            **{k: c[k] for k in ("messages", "dropped", "malformed", "gaps", "reconnects")},
            "pinned_cpu": st["pinned_cpu"], "pin_error": st["pin_error"],
            "rt_priority": st["rt_priority"], "rt_error": st["rt_error"]}


def live_run(prepared: dict[str, Any], kind: str, cpu: int | None = None,
             stage: Stage = Stage.TICK_TO_TRADE) -> Outcome:
    """One engine run of the live window from source `kind` (`ws` or `native`), the handler
    pinned to `cpu` (native). latencies_ns: `stage` of the measured part. Raises EngineError
    when the handler dropped events (its ring was full)."""
    ex = prepared["exchange"]
    engine, status = dispatch._engine_run(EngineConfig(
        source=f"{kind}:{ex.url}/stream", rest_url=ex.rest_url, venue=VENUE,
        idle_end_s=dispatch.IDLE_END_S, dispatch="callback", out_dir=None,
        strategy_warmup_s=dispatch.WARMUP_S,
        latency_warmup_s=dispatch.FF_S + dispatch.MEASURE_AFTER_S, gc_mode="freeze",
        feed_spin=True, feed_warm_us=WARM_US, native_cpu=cpu))
    summary = engine.latency.summary()
    measured = status.measured
    order = summary[Stage.ORDER.value]
    extra = {
        "source": kind,
        "tick_to_trade_us": _us(summary[Stage.TICK_TO_TRADE.value], "p50_ns", "p99_ns",
                                "p999_ns", "max_ns"),
        "order_us": _us(order, "p50_ns", "p99_ns"),
        "order_target_met": bool(order["count"]) and order["p50_ns"] <= TARGET_ORDER_P50_US * 1e3,
        "stages_us": {s.value: _us(summary[s.value], "p50_ns", "p99_ns") for s in LOCAL_STAGES},
        "cpu_pct": round(100.0 * measured.cpu_s / max(measured.wall_s - dispatch.IDLE_END_S,
                                                      1e-9), 1),
        "fills": engine.executor.fill_count, "spikes": status.spikes,
        "spike_causes": status.spike_causes, "tuning": dict(engine.source.tuning),
        **_native_figures(status.feed),
        "hiccups": prepared["hiccups"], "bursts": prepared["bursts"],
    }
    if extra.get("dropped"):
        raise EngineError(f"native handler dropped {extra['dropped']} events (ring full)")
    return Outcome(result=(("live", _fills(engine), engine.market_time_ns),),
                   items=summary[stage.value]["count"], latencies_ns=engine.latency.values(stage),
                   extra=extra)


def pin_cpu() -> int:
    """The CPU the pinned variant uses: the highest one this process may run on."""
    return max(os.sched_getaffinity(0))


# ---- native.flat_out -----------------------------------------------------------------------------
def flat_run(lb: feed_ws.Loopback, kind: str) -> Outcome:
    """One engine run from source `kind` on the flat-out server; events/s between the first
    and the last event processed (the engine's event count sampled every POLL_S)."""
    engine = Engine(EngineConfig(
        source=f"{kind}:{lb.url}", rest_url=lb.rest_url, venue=VENUE,
        idle_end_s=dispatch.IDLE_END_S, dispatch="callback", out_dir=None,
        strategy_warmup_s=dispatch.WARMUP_S, gc_mode="freeze")).start()
    first = last = None  # (perf_counter ns, events)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not engine.wait(POLL_S):
            events, now = engine.events, time.perf_counter_ns()
            if events and first is None:
                first = (now, events)
            if last is None or events != last[1]:
                last = (now, events)
            if time.monotonic() > deadline:
                raise EngineError(f"flat out {kind}: not done in {RUN_TIMEOUT_S} s")
    finally:
        status = engine.stop(timeout_s=30.0)
    if status.error:
        raise EngineError(f"flat out {kind}: the run failed: {status.error}")
    if first is None or last is None or last[0] <= first[0]:
        raise EngineError(f"flat out {kind}: expected events over more than {POLL_S} s, got "
                          f"{status.events} events")
    events = last[1] - first[1]
    wall = last[0] - first[0]
    rate = events / (wall / 1e9)
    summary = engine.latency.summary()
    book = engine.sync.book(SYMBOLS.id(VENUE, SYMBOL))
    extra = {"source": kind, "events": status.events, "messages": status.batches,
             "events_per_s": round(rate), "msgs_per_s": round(status.batches / (wall / 1e9)),
             "target_events_per_s": TARGET_EVENTS_PER_S, "target_met": rate >= TARGET_EVENTS_PER_S,
             "fills": engine.executor.fill_count,
             "order_us": _us(summary[Stage.ORDER.value], "p50_ns", "p99_ns"),
             "book_sync": status.book_sync, **_native_figures(status.feed)}
    if extra.get("dropped"):
        raise EngineError(f"native handler dropped {extra['dropped']} events (ring full)")
    return Outcome(result=(book.valid, book.depth(20)), items=events, wall_ns=wall, extra=extra)


def check_books(base: tuple, opt: tuple) -> None:
    """Both books valid at the end, the same top 20 levels (prices and quantities)."""
    feed_ws.check((base[0], 0, base[1]), (opt[0], 0, opt[1]))


# ---- the phases ----------------------------------------------------------------------------------
register(Phase(
    name="native.normalize", topic="native",
    claim=Claim("issue 15: C++ normalize (simdjson On-Demand) of the in-memory USD-M recording "
                f">= {TARGET_MSGS_PER_S / 1e6:g}M msgs/s and >= 8x the Python normalizer "
                "(prototype: ~370 ns vs 3.8 µs a message)", 8.0),
    prepare=prepare_normalize, baseline=normalize_python, optimized=normalize_native,
    check=check_normalize, metric="throughput", repeats=5, warmup=1,
    baseline_label="Python normalizer (msgspec + compiled levels), one call a message",
    optimized_label="NativeParser.parse_many (C++, one call)",
))

register(Phase(
    name="native.live", topic="native",
    claim=Claim("issue 15: at the live pace, the native handler's tick-to-trade P50 <= 1/2 and "
                "P99 <= 1/3 of the best Python websocket path (callback + spin + warm); order "
                f"stage <= {TARGET_ORDER_P50_US:g} µs P50", 3.0),
    prepare=prepare_live, baseline=lambda p: live_run(p, "ws"),
    optimized=lambda p: live_run(p, "native"), check=dispatch.check, metric="latency",
    repeats=2, warmup=0, quick_repeats=1,
    baseline_label="ws: picows + Python normalizer, callback + spin + warm, live pace",
    optimized_label="native: C++ handler -> ring, callback, live pace",
))

register(Phase(
    name="native.flat_out", topic="native",
    claim=Claim(f"issue 15: the whole engine flat out on the native source >= "
                f"{TARGET_EVENTS_PER_S / 1e6:g}M events/s (no ratio claimed)"),
    prepare=feed_ws.prepare, baseline=lambda lb: flat_run(lb, "ws"),
    optimized=lambda lb: flat_run(lb, "native"), check=check_books, metric="throughput",
    repeats=3, warmup=1, quick_repeats=1,
    baseline_label="ws: picows + Python normalizer, flat out",
    optimized_label="native: C++ handler -> ring, flat out",
))

register(Phase(
    name="native.pinning", topic="native",
    claim=Claim("source design: pinning the feed handler's thread to a CPU gives 50-90% less "
                "jitter (read-to-publish P99 2-10x lower)", 2.0, 10.0),
    prepare=prepare_live,
    baseline=lambda p: live_run(p, "native", None, Stage.PARSE),
    optimized=lambda p: live_run(p, "native", pin_cpu(), Stage.PARSE),
    check=dispatch.check, metric="latency", repeats=2, warmup=0, quick_repeats=1,
    baseline_label="native, handler thread not pinned: read -> ring push",
    optimized_label="native, handler pinned (native_cpu) + SCHED_FIFO if permitted",
))
