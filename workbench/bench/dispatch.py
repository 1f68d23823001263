"""Topic "dispatch": queue polling every 50 ms against busy polling, a blocking wait, and a
direct callback, on the whole engine path.

Input: the real Binance USD-M BTCUSDT recording (`binance/hftbacktest/usdm/btcusdt_20240808.gz`,
93,954 messages over 345 s) served by one SimExchange in its own process (a websocket server
on loopback, each connection from the start of the recording) at `SPEED` times its recorded
pace (a live-like feed, 50x: about 13,600 messages/s on average, in bursts; 100x with --quick,
3 s per run) into `Engine` with source `ws:`
(book, EmaCross, PaperBroker, positions, latency accounting; no journal). Each variant is one
engine run to the end of the recording; the figures are the engine's own HDR histograms:
tick-to-trade (receive -> ack) as `latencies_ns`, per stage P50/P99/P99.9/max, events/s,
messages (ticks)/s and process CPU (psutil).

`dispatch.flat_out` measures throughput instead: the same recording replayed flat out (source
`replay:`, no websocket, the feed thread as fast as it goes), polling every 50 ms against
callback, events/s.

The claim being tested comes from a Python trading-bot design that polled a queue every 50 ms
and reported, after moving to a direct callback, "70 -> 50 ms, 29% faster, 25% less CPU, 100+
vs 20 ticks/s". Check: every variant must produce identical fills (the strategy starts 60 s of
market time into the recording, after the book has synced, so the fills depend on the
recorded messages only).
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.engine.config import EngineConfig
from workbench.errors import FeedError, PhaseMismatch
from workbench.latency.stages import LOCAL_STAGES, Stage
from workbench.shared_data import shared_path

RECORDING = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
CLAIM = Claim("queue polling every 50 ms vs direct callback (claimed 70 -> 50 ms, 29% faster, "
              "25% less CPU, 100+ vs 20 ticks/s)", 1.4, 1.4)
FLAT_CLAIM = Claim(CLAIM.text, 5.0, None)
WARMUP_S = 60.0  # market seconds before the strategy trades (the book syncs meanwhile)
IDLE_END_S = 0.5
SPEED = {False: 20.0, True: 50.0}
QUICK_S = 3.0  # --quick: seconds of each run (the whole recording otherwise)
VARIANTS = {
    "polling_50ms": ("polling", 50.0),
    "busy_polling": ("polling", 0.0),
    "blocking": ("blocking", 50.0),
    "callback": ("callback", 50.0),
}


@dataclass(frozen=True)
class _Exchange:
    """A SimExchange in its own process (`python -m workbench.feed.simex`), as a real exchange
    would be: its Python work does not share the engine's GIL."""

    process: subprocess.Popen
    url: str

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


@lru_cache(maxsize=2)
def _exchange(quick: bool) -> _Exchange:
    """One SimExchange process per speed for every phase of the topic (stopped at exit),
    warmed by one short engine run (imports, numba caches, sockets)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.feed.simex", "--source", str(shared_path(RECORDING)),
         "--venue", "binance", "--speed", f"{SPEED[quick]:g}", "--no-resume"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise FeedError(f"SimExchange process did not start: expected 'READY <url>', got "
                        f"{line!r}")
    exchange = _Exchange(process, line.split()[1])
    atexit.register(exchange.close)
    run_variant({"simex": exchange}, "callback", duration_s=1.0)
    return exchange


def prepare(quick: bool) -> dict[str, Any]:
    """The shared SimExchange serving the recording at SPEED[quick]: the whole recording, or
    the first QUICK_S seconds of each run with --quick."""
    return {"simex": _exchange(quick), "duration_s": QUICK_S if quick else None}


def run_variant(prepared: dict[str, Any], name: str, duration_s: float | None = None
                ) -> Outcome:
    """One engine run of the recording in dispatch variant `name` (a key of VARIANTS), to the
    end or for `duration_s` (default: prepared["duration_s"]). Outcome.result is (fills,
    market time reached in ns)."""
    from workbench.engine.engine import Engine

    mode, poll_ms = VARIANTS[name]
    if duration_s is None:
        duration_s = prepared.get("duration_s")
    common = {"dispatch": mode, "poll_interval_ms": poll_ms, "out_dir": None,
              "duration_s": duration_s, "strategy_warmup_s": WARMUP_S, "gc_mode": "freeze"}
    if "simex" in prepared:
        simex = prepared["simex"]
        config = EngineConfig(source=f"ws:{simex.url}/stream", rest_url=simex.rest_url,
                              venue="binance-usdm", idle_end_s=IDLE_END_S, **common)
    else:
        config = EngineConfig(source=f"replay:{prepared['path']}", speed=0, **common)
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    t0 = time.perf_counter()
    engine = Engine(config).start()
    engine.wait(600.0)
    status = engine.stop(timeout_s=30.0)
    wall = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    if status["error"]:
        raise RuntimeError(f"dispatch {name}: engine failed: {status['error']}")
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    summary = engine.latency.summary()
    fills = tuple((f.seq, f.side, f.price, f.qty, f.liquidity, f.ts_ns)
                  for f in engine.executor.fills)
    idle = IDLE_END_S if duration_s is None and "simex" in prepared else 0.0
    active_s = status["elapsed_s"] - idle
    extra = {
        "events": status["events"], "messages": status["batches"],
        "events_per_s": status["events"] / max(active_s, 1e-9),
        "ticks_per_s": status["batches"] / max(active_s, 1e-9),
        "cpu_s": round(cpu_s, 3), "cpu_pct": round(100.0 * cpu_s / wall, 1),
        "fills": len(fills), "net_pnl": status["pnl"]["net_pnl"],
        "spikes": status["spikes"], "spike_causes": status["spike_causes"],
        "max_queue_depth": status["max_queue_depth"],
        "stages": {s.value: summary[s.value] for s in LOCAL_STAGES},
    }
    return Outcome(result=(fills, engine.market_time_ns), items=status["events"],
                   latencies_ns=engine.latency.values(Stage.TICK_TO_TRADE), extra=extra)


def check(baseline: tuple, optimized: tuple) -> None:
    """Identical fills (seq, side, price, qty, liquidity, market time) in the same order, up
    to the market time both runs reached (a --quick run stops after QUICK_S seconds)."""
    (base_fills, base_end), (opt_fills, opt_end) = baseline, optimized
    end = min(base_end, opt_end)
    base = [f for f in base_fills if f[-1] < end]
    opt = [f for f in opt_fills if f[-1] < end]
    for i, (a, b) in enumerate(zip(base, opt, strict=False)):
        if a != b:
            raise PhaseMismatch(f"fill {i} differs: baseline {a} vs optimized {b}")
    if len(base) != len(opt):
        raise PhaseMismatch(f"fill counts up to market time {end} differ: baseline {len(base)} "
                            f"vs optimized {len(opt)}")
    if not base:
        raise PhaseMismatch("no fills to compare: the runs never traded")


def _variant(name: str):
    def run(prepared: dict[str, Any]) -> Outcome:
        return run_variant(prepared, name)

    run.__name__ = f"run_{name}"
    return run


@lru_cache(maxsize=1)
def _warm_replay() -> str:
    """The recording's path, after one short flat-out engine run (imports, numba caches)."""
    path = str(shared_path(RECORDING))
    run_variant({"path": path}, "callback", duration_s=0.5)
    return path


def prepare_flat(quick: bool) -> dict[str, Any]:
    """The recording's path for flat-out replays (no websocket; the whole recording: a few
    seconds)."""
    return {"path": _warm_replay(), "duration_s": None}


for _name, _label in (("callback", "callback"), ("busy_polling", "polling (busy)"),
                      ("blocking", "blocking wait")):
    register(Phase(
        name=f"dispatch.{_name}", topic="dispatch", claim=CLAIM, prepare=prepare,
        baseline=_variant("polling_50ms"), optimized=_variant(_name), check=check,
        metric="latency", repeats=1, warmup=0, baseline_label="polling (50 ms)",
        optimized_label=_label,
    ))

register(Phase(
    name="dispatch.flat_out", topic="dispatch", claim=FLAT_CLAIM, prepare=prepare_flat,
    baseline=_variant("polling_50ms"), optimized=_variant("callback"), check=check,
    metric="throughput", repeats=1, warmup=0, baseline_label="polling (50 ms), flat out",
    optimized_label="callback, flat out",
))
