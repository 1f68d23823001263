"""Topic "dispatch": queue polling every 50 ms against busy polling, a blocking wait, and a
direct callback, on the whole engine path.

Input: the real Binance USD-M BTCUSDT recording (`binance/hftbacktest/usdm/btcusdt_20240808.gz`,
93,954 messages over 345 s) served by SimExchange processes of their own (websocket servers on
loopback; their Python work does not share the engine's GIL) into `Engine` with source `ws:`
(book, EmaCross, PaperBroker, positions, latency accounting; no journal). Every connection
gets the same `Window` of the recording: the first `FF_S` seconds fast-forwarded at FF_SPEED x
(the book syncs from a REST snapshot, and the strategy, trading from `WARMUP_S`, warms up on
real messages; flat out, the snapshot could land after WARMUP_S at a timing-dependent stream
position and the fills would differ), a pause of `PAUSE_S` so the engine drains what it
queued, then a paced part, the only part measured (`latency_warmup_s`).

- headline, `live`: the paced part at the recording's own pace (speed 1: what a live feed
  looks like, ~270 messages/s in bursts: half of the messages have another one less than
  100 µs before them) for LIVE_S seconds (quick: LIVE_QUICK_S);
- stress, `extra["stress"]`: the paced part at STRESS_SPEED x the recorded pace for
  STRESS_S seconds of the recording (not run with --quick): bursts 20x denser than any live
  feed, a stress figure, not the live figure.

Each variant call is one engine run per pace; its figures are the engine's own HDR histograms
of the measured part: tick-to-trade (receive -> ack, or -> decision when no order went out) of
the live run as `latencies_ns`, per stage P50/P99/P99.9/max, messages (ticks)/s, process CPU
(`Engine.status().measured`). The polling (50 ms) run is made once per topic run and is the
baseline of the three phases.

`dispatch.flat_out` measures throughput instead: the same recording replayed flat out (source
`replay:`, no websocket, the feed thread as fast as it goes), polling every 50 ms against
callback, events/s; twice in a row (1.2M events; once with --quick), with the spikes over
1 ms and how many of them a housekeeping job of ours overlapped (issue 4: none in 1M events
with gc frozen).

The callback runs three times: as configured by default (the feed thread sleeps in epoll
between reads), with `feed_spin` (it busy-polls its socket, `tuning.SpinSelector`: a core at
100%, and a read is taken by a running CPU rather than one woken from idle), and with
`feed_spin` plus `feed_warm_us=WARM_US` (while polling, a shadow of the path runs one recent
message every WARM_US µs, `workbench.engine.warm.PathWarmer`, so the first message of a read
finds the path warm).

The claim being tested comes from a Python trading-bot design that polled a queue every 50 ms
and reported, after moving to a direct callback, "70 -> 50 ms, 29% faster, 25% less CPU, 100+
vs 20 ticks/s". Check: every variant must produce identical fills in both paces (the fills
depend on the recorded messages only, never on timing).
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.engine.config import EngineConfig
from workbench.engine.status import RunStatus
from workbench.errors import FeedError, PhaseMismatch
from workbench.feed.replay import ReplayFeed
from workbench.latency.hiccups import measure_hiccups
from workbench.latency.stages import LOCAL_STAGES, Stage
from workbench.shared_data import shared_path

if TYPE_CHECKING:
    from workbench.engine.engine import Engine

RECORDING = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
CLAIM = Claim("queue polling every 50 ms vs direct callback (claimed 70 -> 50 ms, 29% faster, "
              "25% less CPU, 100+ vs 20 ticks/s)", 1.4, 1.4)
FLAT_CLAIM = Claim(CLAIM.text, 5.0, None)
WARMUP_S = 60.0  # market seconds before the strategy trades (the book syncs meanwhile)
FF_S = 70.0  # recording seconds fast-forwarded before the paced part
FF_SPEED = 50.0  # its pace: the REST snapshot lands long before WARMUP_S in every variant
PAUSE_S = 0.25  # wall seconds of silence after the fast-forward
MEASURE_AFTER_S = 0.25  # market seconds into the paced part before measuring (clock offsets)
IDLE_END_S = 0.6  # silence that ends a run (longer than the pause)
LIVE_S, LIVE_QUICK_S = 30.0, 2.0
STRESS_SPEED = 20.0
HICCUP_S = 2.0  # seconds of the machine-hiccup probe in prepare
BURST_GAP_US = 10.0  # recorded messages this close together count as one burst
STRESS_S = 150.0
WARM_US = 300.0  # feed_warm_us of the callback_warm variant
# name -> (dispatch mode, poll interval ms, feed_spin, feed_warm_us)
VARIANTS = {
    "polling_50ms": ("polling", 50.0, False, 0.0),
    "busy_polling": ("polling", 0.0, False, 0.0),
    "blocking": ("blocking", 50.0, False, 0.0),
    "callback": ("callback", 50.0, False, 0.0),
    "callback_spin": ("callback", 50.0, True, 0.0),
    "callback_warm": ("callback", 50.0, True, WARM_US),
}


@dataclass(frozen=True)
class _Exchange:
    """A SimExchange in its own process (`python -m workbench.feed.simex`) serving the
    window at `speed`."""

    process: subprocess.Popen
    url: str
    speed: float
    window_s: float

    @property
    def rest_url(self) -> str:
        return "http://" + self.url.removeprefix("ws://")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # the server exits when stdin closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@lru_cache(maxsize=4)
def _exchange(speed: float, window_s: float, spin_us: float) -> _Exchange:
    """One SimExchange process per pace for every phase of the topic (stopped at exit).
    spin_us: its paced waits spin for their last spin_us µs (precise pacing at the live pace;
    0 at the stress pace, where gaps are mostly shorter than that and the spin would take a
    core from the engine on this 2-core machine)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.feed.simex", "--source", str(shared_path(RECORDING)),
         "--venue", "binance", "--speed", f"{speed:g}", "--no-resume",
         "--window-start-s", f"{FF_S:g}", "--pause-s", f"{PAUSE_S:g}",
         "--window-s", f"{window_s:g}", "--ff-speed", f"{FF_SPEED:g}",
         "--spin-us", f"{spin_us:g}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise FeedError(f"SimExchange process did not start: expected 'READY <url>', got "
                        f"{line!r}")
    exchange = _Exchange(process, line.split()[1], speed, window_s)
    atexit.register(exchange.close)
    return exchange


@lru_cache(maxsize=2)
def prepare(quick: bool) -> dict[str, Any]:
    """The two SimExchange processes (live pace, stress pace; --quick: live pace only), the
    engine code warmed by a short flat-out replay, the cache of the baseline run (one per
    topic run: the phases share it), and two facts every live figure stands on: the
    machine's hiccups (`measure_hiccups`, HICCUP_S seconds) and the live window's bursts."""
    _warm_replay()
    window_s = LIVE_QUICK_S if quick else LIVE_S
    return {"live": _exchange(1.0, window_s, 50.0),
            "stress": None if quick else _exchange(STRESS_SPEED, STRESS_S, 0.0),
            "runs": {}, "hiccups": asdict(measure_hiccups(HICCUP_S)),
            "bursts": _bursts(window_s)}


def _bursts(window_s: float) -> dict[str, float]:
    """Where the live window's messages sit in their bursts (runs of recorded receive times
    at most BURST_GAP_US apart, which SimExchange sends in one write and the feed takes in
    one read, under one receive stamp): position (0 = first) P50/P90/P99 and the largest
    burst. A message at position k waits for the k before it, so k times the per-message
    cost is a floor under its tick-to-trade."""
    stamps = np.fromiter((ns for ns, _ in ReplayFeed(shared_path(RECORDING), None)),
                         dtype=np.int64)
    start = stamps[0] + int(FF_S * 1e9)
    live = stamps[(stamps >= start) & (stamps < start + int(window_s * 1e9))]
    new = np.r_[True, np.diff(live) > BURST_GAP_US * 1000]
    firsts = np.flatnonzero(new)
    position = np.arange(len(live)) - firsts[np.cumsum(new) - 1]
    p50, p90, p99 = np.percentile(position, (50, 90, 99))
    return {"gap_us": BURST_GAP_US, "messages": len(live), "bursts": len(firsts),
            "position_p50": float(p50), "position_p90": float(p90),
            "position_p99": float(p99), "largest": int(np.diff(np.r_[firsts, len(live)]).max())}


def _engine_run(config: EngineConfig) -> tuple[Engine, RunStatus]:
    from workbench.engine.engine import Engine

    engine = Engine(config).start()
    engine.wait(600.0)
    status = engine.stop(timeout_s=30.0)
    if status.error:
        raise RuntimeError(f"dispatch {config.dispatch}: engine failed: {status.error}")
    return engine, status


def _paced_run(exchange: _Exchange, name: str) -> tuple[Engine, dict[str, Any]]:
    """One engine run through the exchange's window in variant `name`; figures of the
    measured (paced) part."""
    mode, poll_ms, spin, warm_us = VARIANTS[name]
    config = EngineConfig(
        source=f"ws:{exchange.url}/stream", rest_url=exchange.rest_url, venue="binance-usdm",
        idle_end_s=IDLE_END_S, dispatch=mode, poll_interval_ms=poll_ms, out_dir=None,
        strategy_warmup_s=WARMUP_S, latency_warmup_s=FF_S + MEASURE_AFTER_S,
        gc_mode="freeze", feed_spin=spin, feed_warm_us=warm_us)
    engine, status = _engine_run(config)
    summary = engine.latency.summary()
    measured = status.measured
    paced_s = exchange.window_s / exchange.speed  # wall seconds of the paced part
    ticks = summary[Stage.TICK_TO_TRADE.value]["count"]
    busy_s = max(measured.wall_s - IDLE_END_S, 1e-9)
    extra = {
        "speed": exchange.speed, "window_s": exchange.window_s, "messages": ticks,
        "ticks_per_s": round(ticks / paced_s, 1),
        "cpu_s": round(measured.cpu_s, 3),
        "cpu_pct": round(100.0 * measured.cpu_s / busy_s, 1),
        "fills": engine.executor.fill_count, "net_pnl": status.pnl.net_pnl,
        "spikes": status.spikes, "spike_causes": status.spike_causes,
        "max_queue_depth": status.max_queue_depth, "warm_runs": status.warm_runs,
        "stages": {s.value: summary[s.value] for s in LOCAL_STAGES},
        # for the report's per-stage CDFs and spike attribution (issue 17)
        "histograms": engine.latency.to_json()["histograms"],
        "spike_summary": status.spike_summary.to_dict(worst=5),
    }
    return engine, extra


def _fills(engine: Any) -> tuple:
    return tuple((f.seq, f.side, f.price, f.qty, f.liquidity, f.ts_ns)
                 for f in engine.executor.fills)


def run_variant(prepared: dict[str, Any], name: str) -> Outcome:
    """Variant `name` (a key of VARIANTS) at the live pace, then at the stress pace (not with
    --quick). Outcome.result is ((pace, fills, market time reached in ns) per pace)."""
    runs = prepared["runs"]
    if name in runs:
        return runs[name]
    live, extra = _paced_run(prepared["live"], name)
    extra["hiccups"], extra["bursts"] = prepared["hiccups"], prepared["bursts"]
    result = [("live", _fills(live), live.market_time_ns)]
    if prepared["stress"] is not None:
        stress, extra["stress"] = _paced_run(prepared["stress"], name)
        result.append(("stress", _fills(stress), stress.market_time_ns))
    outcome = Outcome(result=tuple(result), items=extra["messages"],
                      latencies_ns=live.latency.values(Stage.TICK_TO_TRADE), extra=extra)
    if name == "polling_50ms":
        runs[name] = outcome
    return outcome


def check(baseline: tuple, optimized: tuple) -> None:
    """Per run (pace): identical fills (seq, side, price, qty, liquidity, market time) in the
    same order, up to the market time both runs reached."""
    for (pace, base_fills, base_end), (_, opt_fills, opt_end) in zip(
            baseline, optimized, strict=True):
        end = min(base_end, opt_end)
        base = [f for f in base_fills if f[-1] < end]
        opt = [f for f in opt_fills if f[-1] < end]
        for i, (a, b) in enumerate(zip(base, opt, strict=False)):
            if a != b:
                raise PhaseMismatch(f"{pace}: fill {i} differs: baseline {a} vs optimized {b}")
        if len(base) != len(opt):
            raise PhaseMismatch(f"{pace}: fill counts up to market time {end} differ: "
                                f"baseline {len(base)} vs optimized {len(opt)}")
        if not base:
            raise PhaseMismatch(f"{pace}: no fills to compare: the runs never traded")


def _variant(name: str):
    def run(prepared: dict[str, Any]) -> Outcome:
        return run_variant(prepared, name)

    run.__name__ = f"run_{name}"
    return run


@lru_cache(maxsize=1)
def _warm_replay() -> str:
    """The recording's path, after one short flat-out engine run (imports, numba caches)."""
    path = str(shared_path(RECORDING))
    _engine_run(EngineConfig(source=f"replay:{path}", speed=0, out_dir=None, duration_s=0.5))
    return path


def prepare_flat(quick: bool) -> dict[str, Any]:
    """The recording's path for flat-out replays (no websocket: a few seconds a pass), and
    the passes: 2 (1.2M events, issue 4's spike check is over 1M) or 1 with --quick."""
    return {"path": _warm_replay(), "passes": 1 if quick else 2}


def run_flat(prepared: dict[str, Any], name: str) -> Outcome:
    """The recording replayed flat out `prepared["passes"]` times (one engine run each) in
    variant `name`; events/s over the runs, and the spikes over 1 ms (gc frozen) with their
    causes: `housekeeping_spikes` counts those that a housekeeping job of ours overlapped."""
    mode, poll_ms, _, _ = VARIANTS[name]
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    t0 = time.perf_counter()
    events = elapsed = spikes = ours = 0
    causes: dict[str, int] = {}
    for _ in range(prepared["passes"]):
        engine, status = _engine_run(EngineConfig(
            source=f"replay:{prepared['path']}", speed=0, dispatch=mode,
            poll_interval_ms=poll_ms, out_dir=None, strategy_warmup_s=WARMUP_S,
            gc_mode="freeze"))
        events += status.events
        elapsed += status.elapsed_s
        spikes += status.spikes
        ours += engine.spikes.housekeeping_spikes  # exact (spikes() keeps the worst only)
        for cause, count in status.spike_causes.items():
            causes[cause] = causes.get(cause, 0) + count
    wall = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    summary = engine.latency.summary()
    extra = {
        "passes": prepared["passes"], "events": events, "events_per_s": events / elapsed,
        "cpu_s": round(cpu_s, 3), "cpu_pct": round(100.0 * cpu_s / wall, 1),
        "fills": engine.executor.fill_count, "max_queue_depth": status.max_queue_depth,
        "spikes": spikes, "housekeeping_spikes": ours, "spike_causes": causes,
        "housekeeping": {name: asdict(job)
                         for name, job in status.housekeeping.items()},
        "stages": {s.value: summary[s.value] for s in LOCAL_STAGES},
    }
    end = engine.market_time_ns
    return Outcome(result=(("flat out", _fills(engine), end),), items=events,
                   latencies_ns=engine.latency.values(Stage.TICK_TO_TRADE), extra=extra)


def _flat(name: str):
    def run(prepared: dict[str, Any]) -> Outcome:
        return run_flat(prepared, name)

    run.__name__ = f"flat_{name}"
    return run


for _name, _label in (("callback", "callback"),
                      ("callback_spin", "callback, feed thread spinning"),
                      ("callback_warm", "callback, spinning, path kept warm"),
                      ("busy_polling", "polling (busy)"), ("blocking", "blocking wait")):
    register(Phase(
        name=f"dispatch.{_name}", topic="dispatch", claim=CLAIM, prepare=prepare,
        baseline=_variant("polling_50ms"), optimized=_variant(_name), check=check,
        metric="latency", repeats=1, warmup=0, baseline_label="polling (50 ms), live pace",
        optimized_label=f"{_label}, live pace",
    ))

register(Phase(
    name="dispatch.flat_out", topic="dispatch", claim=FLAT_CLAIM, prepare=prepare_flat,
    baseline=_flat("polling_50ms"), optimized=_flat("callback"), check=check,
    metric="throughput", repeats=1, warmup=0, baseline_label="polling (50 ms), flat out",
    optimized_label="callback, flat out",
))
