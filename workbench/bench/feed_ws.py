"""Feed topic, loopback phase: SimExchange -> WebSocketFeed -> BookSync/L2Book, msgs/s.

The real recording `binance/hftbacktest/usdm/btcusdt_20240808.gz` is served flat out by
SimExchange in its own process (`python -m workbench.feed.simex`, so the server does not share
the client's GIL), over a real websocket on 127.0.0.1. Each variant call opens a connection,
subscribes to depth, bookTicker and trade, takes the REST snapshot from the same server, and
runs every frame through a normalizer and BookSync into the L2Book until the N-th stream
message with a valid book. The server streams N messages per connection (quick: 10,000;
full: all 93,953), then sends nothing more, so a REST snapshot that arrives after the N-th
message (the server computes it for its stream position) still completes the book.
Throughput = N / wall time of the call (connect and snapshot included).

baseline: the default asyncio event loop + the `websockets` library's frame parser (pure
Python) + `json.loads` with one event row written per level (the usual Python client).
optimized: uvloop + picows (a compiled frame parser) + the msgspec-typed BinanceNormalizer with
the compiled level parser. The check: both books are valid and hold the same top 20 levels at the
same final update id. Issue 3's target: >= 100k msgs/s for the optimized pipeline
(`extra["msgs_per_s"]` and `extra["target_met"]`); `extra["client_cpu_us_per_msg"]` is the
client process's CPU time per message, which does not depend on what else runs on the
machine (1e6 / it is the rate one free core would sustain).

Registered under the topic "feed" when `workbench.bench.feed` imports this module.
"""

from __future__ import annotations

import gzip
import json
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.book.sync import BookSync
from workbench.errors import FeedError, PhaseMismatch
from workbench.events import (
    F_SNAPSHOT,
    K_ASK,
    K_BBO,
    K_BID,
    K_SNAP_BEGIN,
    K_SNAP_END,
    K_TRADE,
    M_BBO,
    M_DELTA,
    M_SNAPSHOT,
    M_TRADE,
    S_BUY,
    S_SELL,
)
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import get_venue
from workbench.feed.venues.base import Normalizer, begin_message
from workbench.feed.ws import WebSocketFeed
from workbench.shared_data import shared_path

RECORDING = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
VENUE = "binance-usdm"
CHANNELS = ("depth@0ms", "bookTicker", "trade")
QUICK_MESSAGES = 10_000
TARGET_MSGS_PER_S = 100_000
MS = 1_000_000


class JsonBinanceNormalizer(Normalizer):
    """Baseline: Binance USD-M combined-stream frames and REST snapshots parsed by
    `json.loads`, one event row written per level. Same events and MessageInfo as
    BinanceNormalizer for depthUpdate, bookTicker, trade and the REST depth snapshot."""

    venue = VENUE

    def normalize(self, message: bytes, recv_ns: int) -> np.ndarray:
        try:
            doc = json.loads(message)
        except ValueError as exc:
            begin_message(self, "?")
            return self._bad("json", message, str(exc))
        data = doc.get("data") if isinstance(doc, dict) else None
        if data is None:
            begin_message(self, "response")
            return self._batch[:0]
        kind = data.get("e")
        if kind == "depthUpdate":
            info = begin_message(self, kind)
            sid = self.symbol_id(data["s"])
            ts = data["E"] * MS
            info.kind, info.symbol_id, info.ts_event_ns = M_DELTA, sid, ts
            info.first_id, info.last_id, info.prev_id = data["U"], data["u"], data["pu"]
            n = 0
            self._reserve(len(data["b"]) + len(data["a"]))
            for levels, k in ((data["b"], K_BID), (data["a"], K_ASK)):
                for price, qty in levels:
                    self._put(n, ts, recv_ns, data["u"], sid, k, 0, 0, float(price), float(qty))
                    n += 1
            return self._finish(n)
        if kind == "bookTicker":
            info = begin_message(self, kind)
            sid = self.symbol_id(data["s"])
            ts = data["E"] * MS
            info.kind, info.symbol_id, info.ts_event_ns = M_BBO, sid, ts
            info.last_id = data["u"]
            self._put(0, ts, recv_ns, data["u"], sid, K_BBO, S_BUY, 0, float(data["b"]),
                      float(data["B"]))
            self._put(1, ts, recv_ns, data["u"], sid, K_BBO, S_SELL, 0, float(data["a"]),
                      float(data["A"]))
            return self._finish(2)
        if kind == "trade":
            info = begin_message(self, kind)
            sid = self.symbol_id(data["s"])
            ts = data["T"] * MS
            info.kind, info.symbol_id, info.ts_event_ns = M_TRADE, sid, ts
            info.last_id = data["t"]
            self._put(0, ts, recv_ns, data["t"], sid, K_TRADE, S_SELL if data["m"] else S_BUY, 0,
                      float(data["p"]), float(data["q"]))
            return self._finish(1)
        begin_message(self, "?")
        return self._bad("unknown_type", message)

    def normalize_snapshot(self, body: bytes, recv_ns: int, symbol: str) -> np.ndarray:
        snap = json.loads(body)
        info = begin_message(self, "depthSnapshot")
        sid = self.symbol_id(symbol)
        ts = snap.get("E", 0) * MS
        last = snap["lastUpdateId"]
        info.kind, info.symbol_id, info.ts_event_ns, info.last_id = (
            M_SNAPSHOT, sid, ts, last)
        self._reserve(len(snap["bids"]) + len(snap["asks"]) + 2)
        self._put(0, ts, recv_ns, last, sid, K_SNAP_BEGIN, 0, F_SNAPSHOT, 0.0, 0.0)
        n = 1
        for levels, k in ((snap["bids"], K_BID), (snap["asks"], K_ASK)):
            for price, qty in levels:
                self._put(n, ts, recv_ns, last, sid, k, 0, F_SNAPSHOT, float(price), float(qty))
                n += 1
        self._put(n, ts, recv_ns, last, sid, K_SNAP_END, 0, F_SNAPSHOT, 0.0, 0.0)
        return self._finish(n + 1)


@dataclass
class Loopback:
    """The prepared input: a SimExchange process serving the recording, and N."""

    url: str
    rest_url: str
    messages: int
    process: subprocess.Popen


def _stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def prepare(quick: bool) -> Loopback:
    """Start the SimExchange process (ends when the Loopback is collected or at exit)."""
    path = shared_path(RECORDING)
    with gzip.open(path, "rb") as fh:
        total = sum(1 for line in fh if b'{"stream"' in line[:40])
    n = min(QUICK_MESSAGES, total) if quick else total
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.feed.simex", "--source", str(path), "--speed",
         "flat", "--no-resume", "--quiet-after", str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("READY "):
        _stop_server(process)
        raise FeedError(f"SimExchange process did not start: expected 'READY <url>', got "
                        f"{line!r} (exit code {process.poll()})")
    url = line.split()[1]
    loopback = Loopback(url + "/stream", url.replace("ws://", "http://"), n, process)
    weakref.finalize(loopback, _stop_server, process)
    return loopback


def _run(lb: Loopback, loop: str, wire: str, make: Callable[[SymbolRegistry], Normalizer]
         ) -> Outcome:
    registry = SymbolRegistry()
    normalizer = make(registry)
    last = normalizer.last
    sync = BookSync(get_venue(VENUE).sequencing)
    n = lb.messages
    count = 0
    done = threading.Event()
    final: dict[str, object] = {}

    def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
        nonlocal count
        stream = message.startswith(b'{"stream"')
        if done.is_set() or (stream and count >= n):
            return
        sync.process(batch, last)
        if last.kind == M_DELTA:
            final["last_id"] = last.last_id
        count += stream
        if count >= n:  # the last message, or a snapshot that came after it
            book = sync.book(registry.id(VENUE, "BTCUSDT"))
            if book.valid:
                final.update(depth=book.depth(20), snapshots=sync.stats.snapshots,
                             gaps=sync.stats.gaps)
                done.set()

    feed = WebSocketFeed(lb.url, VENUE, ["BTCUSDT"], sink, normalizer=normalizer,
                         registry=registry, rest_url=lb.rest_url, channels=CHANNELS,
                         on_connect=sync.connection_reset, max_connects=3, wire=wire)
    sync.on_resync = feed.request_resync
    started, cpu_started = time.perf_counter(), time.process_time()
    feed.start(loop)
    finished = done.wait(120)
    rate = n / (time.perf_counter() - started)
    cpu_us = (time.process_time() - cpu_started) / n * 1e6
    feed.stop()
    if not finished:
        raise FeedError(f"loopback run got {count} of {n} messages and a valid book: "
                        f"{sync.is_valid(registry.id(VENUE, 'BTCUSDT'))} in 120 s "
                        f"(feed {feed.stats}, error {feed.error})")
    # valid after the n-th message: every delta up to the last one received is applied
    return Outcome(result=(True, final["last_id"], final["depth"]), items=n,
                   extra={"loop": loop, "wire": wire, "msgs_per_s": round(rate),
                          "client_cpu_us_per_msg": round(cpu_us, 2),
                          "target_met": rate >= TARGET_MSGS_PER_S,
                          "snapshots": final["snapshots"], "gaps": final["gaps"]})


def baseline(lb: Loopback) -> Outcome:
    return _run(lb, "asyncio", "websockets", lambda registry: JsonBinanceNormalizer(registry))


def optimized(lb: Loopback) -> Outcome:
    return _run(lb, "uvloop", "picows", get_venue(VENUE).normalizer)


def check(base: tuple, opt: tuple) -> None:
    """Both books valid, same final update id, same top 20 levels (prices and quantities)."""
    (b_valid, b_id, b_depth), (o_valid, o_id, o_depth) = base, opt
    if not (b_valid and o_valid):
        raise PhaseMismatch(f"book not valid at the end: baseline {b_valid}, optimized "
                            f"{o_valid}")
    if b_id != o_id:
        raise PhaseMismatch(f"final update id: baseline {b_id}, optimized {o_id}")
    names = ("bid prices", "bid qtys", "ask prices", "ask qtys")
    for name, b, o in zip(names, b_depth, o_depth, strict=True):
        if not np.array_equal(b, o):
            i = next((j for j in range(min(len(b), len(o))) if b[j] != o[j]), min(len(b), len(o)))
            raise PhaseMismatch(f"{name} differ at level {i}: baseline {b[i:i + 1]}, "
                                f"optimized {o[i:i + 1]}")


register(Phase(
    name="feed.ws_loopback",
    topic="feed",
    claim=Claim(
        "uvloop makes asyncio 2-4x faster (uvloop README, echo-server benchmark); here with "
        "picows frames and msgspec typed structs instead of websockets and json.loads. Issue 3 "
        f"target: SimExchange -> WebSocketFeed -> book >= {TARGET_MSGS_PER_S // 1000}k msgs/s "
        "over loopback.",
        2.0, 4.0),
    prepare=prepare,
    baseline=baseline,
    optimized=optimized,
    check=check,
    metric="throughput",
    repeats=3,
    warmup=1,
    baseline_label="asyncio + websockets + json.loads",
    optimized_label="uvloop + picows + msgspec normalizer",
))
