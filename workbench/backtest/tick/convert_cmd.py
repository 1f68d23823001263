"""`workbench convert RECORDING OUT`: a recording to a tick event file (events.convert)."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", help="any recording workbench.feed.replay reads")
    parser.add_argument("out", help="the event file to write (.npy; its .json beside it)")
    parser.add_argument("--base-latency-ns", type=int, default=0,
                        help="added to local times when the recorder's clock lagged")
    parser.add_argument("--chunk-events", type=int, default=None,
                        help="rows merged per step (bounds memory)")


def main(args: argparse.Namespace) -> int:
    from workbench.backtest.tick.events import CHUNK_EVENTS, convert

    t0 = time.perf_counter()
    data = convert(args.recording, args.out, base_latency_ns=args.base_latency_ns,
                   chunk_events=args.chunk_events or CHUNK_EVENTS)
    meta = data.meta
    names = ", ".join(f"{n} ({meta.events[s]:,} events, tick {meta.tick_size.get(s)}, lot "
                      f"{meta.lot_size.get(s)})" for s, (_, n) in meta.symbols.items())
    print(f"{data.path}: {meta.rows:,} rows in {time.perf_counter() - t0:.1f} s; {names}; "
          f"local times +{meta.local_offset_ns / 1e6:.3f} ms, feed latency up to "
          f"{meta.max_feed_latency_ns / 1e6:.3f} ms")
    return 0
