"""`make demo`: the engine once in each dispatch mode, side by side.

Source: the real Binance USD-M BTCUSDT recording (`binance/hftbacktest/usdm/btcusdt_20240808.gz`)
served by SimExchange over a loopback websocket at 20x its recorded pace when the shared data
is on this machine, otherwise SimExchange's built-in market simulator. Each mode runs
`DURATION_S` seconds (about half a minute in all); the table shows per-stage P50/P99 (µs),
events/s, process CPU, orders, fills and PnL for polling every 50 ms against direct callback.

    python -m workbench.engine.demo [--duration S] [--speed X]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.errors import SharedDataMissing
from workbench.latency.stages import LOCAL_STAGES
from workbench.shared_data import shared_path

RECORDING = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
DURATION_S = 12.0
SPEED = 20.0
MODES = (("polling (50 ms)", "polling"), ("callback", "callback"))


def run_mode(dispatch: str, recording: str | None, duration_s: float, speed: float
             ) -> dict[str, Any]:
    """One engine run; returns its RunStatus and CPU share."""
    config = EngineConfig(source="sim", recording=recording, speed=speed,
                          duration_s=duration_s, dispatch=dispatch, out_dir=None,
                          strategy_warmup_s=30.0)
    proc = psutil.Process()
    cpu0, t0 = proc.cpu_times(), time.perf_counter()
    engine = Engine(config).start()
    engine.wait(duration_s + 60)
    status = engine.stop(timeout_s=20)
    cpu1, wall = proc.cpu_times(), time.perf_counter() - t0
    cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall * 100
    return {"status": status, "cpu_pct": cpu}


def side_by_side(results: dict[str, dict[str, Any]]) -> Table:
    """rich Table: one column pair (P50, P99) per mode, one row per stage, then totals."""
    table = Table(title="dispatch modes side by side (µs)")
    table.add_column("")
    for label in results:
        table.add_column(f"{label} P50", justify="right")
        table.add_column(f"{label} P99", justify="right")
    for stage in LOCAL_STAGES:
        row = [stage.value]
        for res in results.values():
            s = res["status"].latency[stage]
            row += ([f"{s.p50_ns / 1e3:,.1f}", f"{s.p99_ns / 1e3:,.1f}"] if s.count
                    else ["-", "-"])
        table.add_row(*row)

    def line(name: str, fmt) -> None:
        row = [name]
        for res in results.values():
            row += [fmt(res), ""]
        table.add_row(*row)

    line("events/s", lambda r: f"{r['status'].events_per_s:,.0f}")
    line("messages", lambda r: f"{r['status'].batches:,}")
    line("CPU %", lambda r: f"{r['cpu_pct']:.0f}")
    line("orders / fills", lambda r: f"{r['status'].orders} / {r['status'].fills}")
    line("net PnL", lambda r: f"{r['status'].pnl.net_pnl:+,.4f}")
    line("spikes > 1 ms", lambda r: f"{r['status'].spikes:,}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.engine.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds per mode")
    parser.add_argument("--speed", type=float, default=SPEED, help="recording pace")
    args = parser.parse_args(argv)
    console = Console()
    try:
        recording: str | None = str(shared_path(RECORDING))
        source = f"the real recording {RECORDING} served by SimExchange at {args.speed:g}x"
    except SharedDataMissing:
        recording = None
        source = "SimExchange's built-in simulator (shared recordings not found)"
    console.print(f"engine demo: {source}, {args.duration:g} s per dispatch mode")
    results = {}
    for label, mode in MODES:
        console.print(f"  running {label} ...")
        results[label] = run_mode(mode, recording, args.duration, args.speed)
        if results[label]["status"].error:
            console.print(f"[red]{label}: {results[label]['status'].error}[/red]")
            return 1
    console.print(side_by_side(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
