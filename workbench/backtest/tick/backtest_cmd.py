"""`workbench backtest DATA`: a compiled strategy through the tick backtester, stats printed.

DATA is a recording (converted through the cache) or a converted .npy. Strategies: `quoter`
(compiled.Quoter: --qty, --max-position) and `ema` (compiled.CompiledEmaCross: --fast, --slow,
--qty, --limit for post-only limits instead of market orders). `--l3`: DATA is a Bitfinex
raw-book (R0) recording, run through the L3 FIFO queue backtest (l3_backtest.py) with its
quoter (--qty, --max-position), the constant latency, the fees, --infer-trades and
--interval-us (the recording's synthetic clock).
"""

from __future__ import annotations

import argparse
import json
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="a recording or a converted .npy event file")
    parser.add_argument("--strategy", choices=("quoter", "ema"), default="quoter")
    parser.add_argument("--qty", type=float, default=0.001)
    parser.add_argument("--max-position", type=float, default=0.01)
    parser.add_argument("--fast", type=int, default=20)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--limit", action="store_true", help="ema: post-only limits at the touch")
    parser.add_argument("--symbol", default=None)
    parser.add_argument("--entry-us", type=float, default=1000.0, help="order entry latency")
    parser.add_argument("--response-us", type=float, default=1000.0)
    parser.add_argument("--from-run", default=None,
                        help="runs/<run-id>: interpolate latency from its order stage")
    parser.add_argument("--queue", default="risk_averse",
                        help="risk_averse | power | log | power2 | log2 | power3")
    parser.add_argument("--prob-n", type=float, default=3.0)
    parser.add_argument("--partial", action="store_true")
    parser.add_argument("--maker-bps", type=float, default=0.0)
    parser.add_argument("--taker-bps", type=float, default=0.0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", default=None, help="write the stats to this file")
    parser.add_argument("--l3", action="store_true",
                        help="DATA is a Bitfinex raw-book (R0) recording: L3 FIFO queue backtest")
    parser.add_argument("--infer-trades", action="store_true",
                        help="l3: also fill on removals at the best behind our order")
    parser.add_argument("--interval-us", type=float, default=1000.0,
                        help="l3: synthetic time between the recording's messages")


def make_strategy(args: argparse.Namespace):
    """The compiled strategy the arguments name."""
    from workbench.engine.compiled import CompiledEmaCross, Quoter

    if args.strategy == "ema":
        return CompiledEmaCross(args.fast, args.slow, args.qty, 0 if args.limit else 1)
    return Quoter(args.qty, args.max_position)


def run(args: argparse.Namespace):
    """The TickResult of the backtest the arguments describe (`%hft backtest` returns it)."""
    from workbench.backtest.tick.backtest import TickConfig, open_data, tick_backtest
    from workbench.backtest.tick.latency import ConstantLatency, InterpLatency

    if args.l3:
        from workbench.backtest.tick.l3_backtest import L3Config, L3Quoter, l3_backtest

        cfg = L3Config(latency=ConstantLatency(int(args.entry_us * 1000),
                                               int(args.response_us * 1000)),
                       interval_ns=int(args.interval_us * 1000), maker_fee_bps=args.maker_bps,
                       taker_fee_bps=args.taker_bps, infer_trades=args.infer_trades)
        return l3_backtest(args.data, L3Quoter(args.qty, args.max_position), cfg)
    data = open_data(args.data)
    if args.from_run:
        first = int(data.rows[0]["ts_recv_ns"]) if len(data) else 0
        latency = InterpLatency.from_run(args.from_run, start_ns=first)
    else:
        latency = ConstantLatency(int(args.entry_us * 1000), int(args.response_us * 1000))
    cfg = TickConfig(latency=latency, queue=args.queue, prob_n=args.prob_n,
                     partial=args.partial, maker_fee_bps=args.maker_bps,
                     taker_fee_bps=args.taker_bps, symbol=args.symbol, progress=args.progress)
    return tick_backtest(data, make_strategy(args), cfg)


def main(args: argparse.Namespace) -> int:
    stats = run(args).stats()
    for name, value in stats.items():
        text = f"{value:,.6g}" if isinstance(value, float) and math.isfinite(value) else value
        print(f"{name:>18}  {text}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()},
                      fh, indent=1, default=str)
    return 0
