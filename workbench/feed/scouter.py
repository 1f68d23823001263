"""EndpointScouter: probe a venue's endpoints, rank them by handshake time, move a feed to the best.

A venue often serves market data from several endpoints (hosts, ports, regions; Binance USD-M
`wss://fstream.binance.com`, `wss://fstream-auth.binance.com`, ...) whose connect latency
differs and changes. The scouter probes each URL every `check_interval_s` and keeps, per
endpoint, the last `window` probes:

- probe: resolve the host (not timed), then time a real TCP connect plus, for wss://, the TLS
  handshake (certificate and hostname verified: the system's CAs or `ca_file`); for ws:// the
  TCP connect alone. The connection is then dropped (abort: no websocket upgrade, so nothing
  is subscribed and the venue's connection-rate limits are spent only on TCP/TLS). A probe
  that fails (refused, reset, certificate not trusted) or takes longer than `timeout_s`
  counts as a failure. The kernel answers a TCP connect itself, so on ws:// the time is about
  one network round trip; the TLS handshake adds the server's own response time.
- statistics over the window: success ratio, and the median (`statistics.median`) and P90
  (nearest rank) of the successful probes' handshake times.
- ranking: endpoints with at least MIN_PROBES probes in the window and a success ratio
  >= `min_success`, by median handshake time (ties: the order of `urls`). `top(n)` lists the
  fastest n, `best()` the first. An endpoint whose window ratio is below `min_success` is
  failing.

Switching: every `switch_interval_s` (the first time `switch_interval_s` after start(), never
more often) the scouter looks at the current endpoint (`current`, or the attached feed's URL):
it moves to `best()` when the current one is failing, is not one of `urls`, or (none yet)
when there is no current one; and when the current one is healthy but not in `top(top_n)`
only if the best is faster by the hysteresis margin: its median at most `(1 - margin)` times
the current's and at least `margin_s` seconds lower (both; defaults 20 % and 2 ms), so two
endpoints within noise of each other never make it flap. A move calls `on_switch(url)`; with
`attach(feed)` that is `feed.switch_endpoint(url)` (WebSocketFeed, the native feed handler:
anything with `switch_endpoint(url: str)` and `url`), which keeps the subscriptions. When no
endpoint is ranked the scouter stays where it is.

The probes and decisions run on one daemon thread with its own asyncio loop (`start()` /
`stop()`, or a `with` block); `on_switch` is called on that thread. `snapshot()` (any thread)
returns a typed `ScouterStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from workbench.errors import ConfigError, FeedError
from workbench.feed.tls import client_context

log = logging.getLogger("workbench.feed.scouter")

MIN_PROBES = 3  # probes in the window before an endpoint is ranked (at most `window`)
DEFAULT_PORTS = {"ws": 80, "wss": 443}


class Switchable(Protocol):
    """A feed the scouter can move: its current URL and a thread-safe switch."""

    url: str

    def switch_endpoint(self, url: str) -> None: ...


@dataclass(frozen=True)
class EndpointStats:
    """One endpoint's probes. probes, successes: since start. window: probes in the sliding
    window; success_ratio: successes / window over it (nan before any probe); median_ms,
    p90_ms: handshake time of the window's successful probes in milliseconds (None without
    one); last_ms: the last successful probe's; last_error: the last failure ('' for none);
    rank: 0-based place in the ranking, None when not ranked; failing: success ratio below
    min_success."""

    url: str
    probes: int
    successes: int
    window: int
    success_ratio: float
    median_ms: float | None
    p90_ms: float | None
    last_ms: float | None
    last_error: str
    rank: int | None
    failing: bool


@dataclass(frozen=True)
class Switch:
    """One move: when (time.monotonic() seconds), from which URL (None: none yet), to which,
    and why: 'start' (no current endpoint), 'failing', 'unlisted' (the current URL is not
    probed) or 'slower' (outside the top N and slower by the margin)."""

    at_s: float
    from_url: str | None
    to_url: str
    reason: str


@dataclass(frozen=True)
class ScouterStatus:
    """`EndpointScouter.snapshot()`: the current endpoint, each endpoint's stats in the order
    of `urls`, every switch made, the number of decisions taken, whether the thread runs."""

    current: str | None
    endpoints: tuple[EndpointStats, ...]
    switches: tuple[Switch, ...]
    decisions: int
    running: bool


class _Endpoint:
    """Probe results of one URL: totals and the sliding window of (ok, handshake ns)."""

    def __init__(self, url: str, window: int) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.tls = parts.scheme == "wss"
        self.results: deque[tuple[bool, int]] = deque(maxlen=window)
        self.probes = 0
        self.successes = 0
        self.last_ns: int | None = None
        self.last_error = ""

    def record(self, ok: bool, elapsed_ns: int, error: str = "") -> None:
        self.results.append((ok, elapsed_ns))
        self.probes += 1
        if ok:
            self.successes += 1
            self.last_ns = elapsed_ns
        else:
            self.last_error = error

    def ratio(self) -> float:
        n = len(self.results)
        return sum(ok for ok, _ in self.results) / n if n else math.nan

    def times_ns(self) -> list[int]:
        return sorted(ns for ok, ns in self.results if ok)

    def median_ns(self) -> float | None:
        times = self.times_ns()
        return statistics.median(times) if times else None


class EndpointScouter:
    """Probe `urls` (ws:// or wss://) every `check_interval_s` seconds, rank them, and every
    `switch_interval_s` seconds move the current endpoint to the best one when it is failing
    or, by the hysteresis margin, slower than the `top_n` fastest (see the module docstring).

    on_switch(url): called on the scouter's thread for each move (`attach(feed)` sets it to
    `feed.switch_endpoint`); None: decisions are only recorded (`current`, `snapshot()`).
    ca_file: PEM CA certificates trusted on wss:// (None: the system's). window: probes kept
    per endpoint. min_success: success ratio (0, 1] an endpoint needs to be ranked. margin,
    margin_s: the hysteresis (relative in [0, 1), absolute seconds >= 0). timeout_s: longest
    probe. current: the endpoint in use at start (None: the first decision moves to the best).
    Raises ConfigError for bad arguments (no urls, a repeated url, not ws:// or wss://, no
    host, a bad port, intervals or timeout <= 0, top_n < 1, window < 1, ratios out of range,
    a ca_file that is missing or holds no certificate).
    """

    def __init__(self, urls: Sequence[str], check_interval_s: float = 1.0,
                 switch_interval_s: float = 60.0, top_n: int = 1,
                 on_switch: Callable[[str], None] | None = None,
                 ca_file: str | None = None, *, window: int = 20, min_success: float = 0.8,
                 margin: float = 0.2, margin_s: float = 0.002, timeout_s: float = 2.0,
                 current: str | None = None) -> None:
        if isinstance(urls, str) or not urls:
            raise ConfigError(f"urls must be a non-empty sequence of ws:// or wss:// URLs, "
                              f"got {urls!r}")
        if len(set(urls)) != len(urls):
            raise ConfigError(f"urls must not repeat a URL, got {list(urls)!r}")
        for url in urls:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                raise ConfigError(f"each url must be ws://HOST[:PORT]/... or wss://..., got "
                                  f"{url!r}")
            try:
                port = parts.port
            except ValueError:  # not a number, or out of range
                port = 0
            if port == 0:
                raise ConfigError(f"url {url!r}: expected a port in 1..65535")
        if not (check_interval_s > 0 and switch_interval_s > 0 and timeout_s > 0):
            raise ConfigError("expected check_interval_s > 0, switch_interval_s > 0, "
                              f"timeout_s > 0; got {check_interval_s!r}, "
                              f"{switch_interval_s!r}, {timeout_s!r}")
        if top_n < 1 or window < 1:
            raise ConfigError(f"expected top_n >= 1 and window >= 1, got {top_n!r}, {window!r}")
        if not (0 < min_success <= 1 and 0 <= margin < 1 and margin_s >= 0):
            raise ConfigError("expected 0 < min_success <= 1, 0 <= margin < 1, margin_s >= 0; "
                              f"got {min_success!r}, {margin!r}, {margin_s!r}")
        self.urls = tuple(urls)
        self.check_interval_s = float(check_interval_s)
        self.switch_interval_s = float(switch_interval_s)
        self.top_n = top_n
        self.on_switch = on_switch
        self.ca_file = ca_file
        self.window = window
        self.min_success = min_success
        self.margin = margin
        self.margin_s = margin_s
        self.timeout_s = timeout_s
        self.current = current
        self._min_probes = min(MIN_PROBES, window)
        self._endpoints = {url: _Endpoint(url, window) for url in self.urls}
        try:
            self._ssl = (client_context(ca_file) if any(e.tls for e in self._endpoints.values())
                         else None)
        except OSError as exc:  # ssl.SSLError included
            raise ConfigError(f"ca_file {ca_file!r}: expected a PEM file of CA certificates: "
                              f"{exc}") from exc
        self._lock = threading.Lock()
        self._switches: list[Switch] = []
        self._decisions = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # ---- feed --------------------------------------------------------------------------
    def attach(self, feed: Switchable) -> EndpointScouter:
        """Move `feed` from now on: on_switch becomes `feed.switch_endpoint` and the current
        endpoint `feed.url`. Returns self."""
        with self._lock:
            self.on_switch = feed.switch_endpoint
            self.current = feed.url
        return self

    # ---- ranking (any thread) ----------------------------------------------------------
    def _ranked(self) -> list[_Endpoint]:
        """Ranked endpoints, fastest first (caller holds the lock)."""
        ranked = [(median, i, e) for i, e in enumerate(self._endpoints.values())
                  if len(e.results) >= self._min_probes and e.ratio() >= self.min_success
                  and (median := e.median_ns()) is not None]
        return [e for _, _, e in sorted(ranked, key=lambda item: item[:2])]

    def top(self, n: int) -> list[str]:
        """The URLs of the `n` fastest ranked endpoints (fewer if fewer are ranked)."""
        with self._lock:
            return [e.url for e in self._ranked()[:n]]

    def best(self) -> str | None:
        """The fastest ranked endpoint's URL, None while none is ranked."""
        best = self.top(1)
        return best[0] if best else None

    def _failing(self, endpoint: _Endpoint) -> bool:
        return bool(endpoint.results) and endpoint.ratio() < self.min_success

    def stats(self) -> dict[str, EndpointStats]:
        """Each endpoint's stats by URL (see EndpointStats)."""
        return {s.url: s for s in self.snapshot().endpoints}

    def snapshot(self) -> ScouterStatus:
        """The scouter's state now (a consistent copy; any thread)."""
        with self._lock:
            ranks = {e.url: i for i, e in enumerate(self._ranked())}
            endpoints = []
            for e in self._endpoints.values():
                times = e.times_ns()
                endpoints.append(EndpointStats(
                    url=e.url, probes=e.probes, successes=e.successes, window=len(e.results),
                    success_ratio=e.ratio(),
                    median_ms=statistics.median(times) / 1e6 if times else None,
                    p90_ms=times[math.ceil(0.9 * len(times)) - 1] / 1e6 if times else None,
                    last_ms=e.last_ns / 1e6 if e.last_ns is not None else None,
                    last_error=e.last_error, rank=ranks.get(e.url), failing=self._failing(e)))
            return ScouterStatus(current=self.current, endpoints=tuple(endpoints),
                                 switches=tuple(self._switches), decisions=self._decisions,
                                 running=self._thread is not None and self._thread.is_alive())

    # ---- decisions ---------------------------------------------------------------------
    def _choice(self) -> tuple[str, str] | None:
        """(url, reason) to move to now, or None to stay (caller holds the lock)."""
        ranked = self._ranked()
        if not ranked:
            return None
        best, current = ranked[0], self.current
        if current == best.url:
            return None
        if current is None:
            return best.url, "start"
        endpoint = self._endpoints.get(current)
        if endpoint is None:
            return best.url, "unlisted"
        if self._failing(endpoint):
            return best.url, "failing"
        if endpoint in ranked[:self.top_n]:
            return None
        now_ns, best_ns = endpoint.median_ns(), best.median_ns()
        if (now_ns is not None and best_ns <= now_ns * (1 - self.margin)
                and now_ns - best_ns >= self.margin_s * 1e9):
            return best.url, "slower"
        return None

    def _decide(self) -> None:
        with self._lock:
            self._decisions += 1
            choice = self._choice()
            if choice is None:
                return
            url, reason = choice
            previous, on_switch = self.current, self.on_switch
        log.info("scouter: %s -> %s (%s)", previous, url, reason)
        if on_switch is not None:
            try:
                on_switch(url)
            except Exception as exc:  # the callback's fault: stay, try again next time
                log.error("scouter: on_switch(%r) failed: %s", url, exc)
                return
        with self._lock:
            self.current = url
            self._switches.append(Switch(time.monotonic(), previous, url, reason))

    # ---- the thread --------------------------------------------------------------------
    def start(self) -> EndpointScouter:
        """Start probing and deciding on a daemon thread. Returns self. Raises FeedError if
        already started."""
        if self._thread is not None:
            raise FeedError("EndpointScouter already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="scouter", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop probing (probes in flight are cancelled) and join the thread. Raises FeedError
        if it does not end within `timeout_s`."""
        thread = self._thread
        if thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise FeedError(f"EndpointScouter thread did not stop within {timeout_s} s")
        self._thread = None

    def __enter__(self) -> EndpointScouter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        tasks = [asyncio.create_task(self._probe_loop(e)) for e in self._endpoints.values()]
        tasks.append(asyncio.create_task(self._decide_loop()))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _decide_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.switch_interval_s
            await asyncio.sleep(max(0.0, due - loop.time()))
            self._decide()

    async def _probe_loop(self, endpoint: _Endpoint) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            ok, elapsed_ns, error = await self._probe(endpoint)
            with self._lock:
                endpoint.record(ok, elapsed_ns, error)
            due = max(due + self.check_interval_s, loop.time())  # a late probe skips ticks
            await asyncio.sleep(due - loop.time())

    async def _probe(self, endpoint: _Endpoint) -> tuple[bool, int, str]:
        """One probe: (succeeded, handshake ns, error text)."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter_ns()
        try:
            async with asyncio.timeout(self.timeout_s):
                infos = await loop.getaddrinfo(endpoint.host, endpoint.port,
                                               type=socket.SOCK_STREAM)
                address = infos[0][4]
                start = time.perf_counter_ns()
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, address[0], address[1],
                    ssl=self._ssl if endpoint.tls else None,
                    server_hostname=endpoint.host if endpoint.tls else None)
                elapsed_ns = time.perf_counter_ns() - start
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            return False, time.perf_counter_ns() - start, f"{type(exc).__name__}: {exc}"
        transport.abort()
        return True, elapsed_ns, ""
