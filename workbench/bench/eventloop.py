"""Event-loop phase: uvloop vs the default asyncio loop on a websocket echo over loopback.

eventloop.ws_echo: a `websockets` server and client in one loop on 127.0.0.1 (random port, no
compression); the client sends the real Binance messages one at a time and awaits each echo
(request/response, the loop's hardest case). Each variant runs its loop in a fresh thread through
`asyncio.Runner(loop_factory=...)`, so it works even when the caller (a Jupyter kernel) already
has a running loop. Claimed: uvloop 2-4x the messages per second. The echoed messages are the
check; per-message round-trip P50/P99 go in the extras.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from workbench.bench import recorded
from workbench.bench.registry import Claim, Outcome, Phase, first_difference, register
from workbench.errors import FeedError

QUICK_MESSAGES = 1_500
FULL_MESSAGES = 10_000
TIMEOUT_S = 60.0


async def _echo_handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _echo_session(payloads: list[str]) -> tuple[list[str], np.ndarray]:
    rtt = np.empty(len(payloads), dtype=np.int64)
    echoed: list[str] = []
    async with asyncio.timeout(TIMEOUT_S), serve(
        _echo_handler, "127.0.0.1", 0, compression=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None, proxy=None) as ws:
            for i, payload in enumerate(payloads):
                t0 = time.perf_counter_ns()
                await ws.send(payload)
                echoed.append(await ws.recv())
                rtt[i] = time.perf_counter_ns() - t0
    return echoed, rtt


def _in_thread(loop_factory: Callable[[], asyncio.AbstractEventLoop], payloads: list[str]
               ) -> Outcome:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                box["out"] = runner.run(_echo_session(payloads))
        except BaseException as exc:  # handed to the caller's thread below
            box["exc"] = exc

    thread = threading.Thread(target=target, name="wb-bench-echo", daemon=True)
    thread.start()
    thread.join(TIMEOUT_S + 5)
    if thread.is_alive():
        raise FeedError(f"websocket echo did not finish within {TIMEOUT_S} s")
    if "exc" in box:
        raise box["exc"]
    echoed, rtt = box["out"]
    p50, p99 = np.percentile(rtt, [50, 99])
    return Outcome(echoed, items=len(payloads), latencies_ns=rtt,
                   extra={"rtt_p50_us": float(p50) / 1e3, "rtt_p99_us": float(p99) / 1e3})


def _prepare(quick: bool) -> list[str]:
    n = QUICK_MESSAGES if quick else FULL_MESSAGES
    return [raw.decode() for _, raw in recorded.messages(n)]


def _default_loop(payloads: list[str]) -> Outcome:
    return _in_thread(asyncio.new_event_loop, payloads)


def _uvloop(payloads: list[str]) -> Outcome:
    return _in_thread(uvloop.new_event_loop, payloads)


def _check(a: list[str], b: list[str]) -> None:
    first_difference(a, b, "echoed messages")


register(Phase(
    name="eventloop.ws_echo", topic="eventloop",
    claim=Claim("uvloop gives 2-4x the websocket messages/s of the default asyncio loop",
                2.0, 4.0),
    prepare=_prepare, baseline=_default_loop, optimized=_uvloop, check=_check,
    metric="throughput", baseline_label="asyncio loop", optimized_label="uvloop",
))
