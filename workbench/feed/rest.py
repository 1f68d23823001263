"""REST depth snapshots through one pooled httpx client: timeouts, retries, rate limits.

The client fetches from one venue's REST depth market (`Venue.rest`, a `RestMarket`: base URL,
path, legal limits, request weight), e.g. Binance `GET /api/v3/depth` (spot), `/fapi/v1/depth`
(USD-M), `/dapi/v1/depth` (COIN-M) with `symbol` and `limit` (Binance API docs, "Market Data
Endpoints: Order Book"). The body (`{"lastUpdateId":..,"bids":[[price, qty], ...],
"asks":[...]}`) is returned as raw bytes for the venue normalizer's `normalize_snapshot`.

Rate limits ("General Info: LIMITS"): every response carries `X-MBX-USED-WEIGHT-1M`, the
weight used in the current calendar minute; before a request that would pass `weight_limit`
the client waits for the next minute. HTTP 429 (limit hit) and 418 (IP banned) carry
`Retry-After` in seconds, which the client waits before retrying (418 longer than
`max_wait_s` raises at once). Transport errors, timeouts and 5xx are retried with exponential
backoff and full jitter (delay uniform in [0, min(backoff_max_s, backoff_s * 2**attempt)],
"Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass

import httpx

from workbench.errors import ConfigError, FeedError
from workbench.feed.tls import client_context
from workbench.feed.venues.record import RestMarket


@dataclass
class RestStats:
    """requests: HTTP requests sent; retries: re-sends after an error; rate_limited: 429/418
    answers; waited_s: seconds slept for backoff and rate limits; used_weight: the last
    X-MBX-USED-WEIGHT-1M seen (-1 before any)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    used_weight: int = -1


def full_jitter_s(rng: random.Random, attempt: int, base_s: float, max_s: float) -> float:
    """Delay in seconds before retry `attempt` (0-based): uniform in
    [0, min(max_s, base_s * 2**attempt)] ("full jitter", AWS Architecture Blog, "Exponential
    Backoff And Jitter", 2015). Shared by the REST client and WebSocketFeed reconnects."""
    return rng.uniform(0.0, min(max_s, base_s * 2**attempt))


class DepthSnapshotClient:
    """Fetch REST depth snapshots (raw JSON bytes) of one market with one connection pool.

    market: the venue's RestMarket (`get_venue(key).rest`): path, default base URL, limits,
    weights. base_url overrides the host (SimExchange.rest_url in tests). timeout_s:
    per-request connect/read timeout. retries: re-sends after a retryable failure.
    weight_limit: request weight allowed per minute (None: the market's). max_wait_s: longest
    single wait accepted (Retry-After or minute rollover); longer raises FeedError. Sync
    (`fetch`) and async (`afetch`) calls each keep their own pooled client; `close()` /
    `aclose()` release them. ca_file: a PEM file of the CA certificates trusted on https://
    (None: httpx's default, the certifi bundle).
    Raises ConfigError for bad arguments (weight_limit below the weight of the market's
    largest limit included).
    """

    def __init__(self, market: RestMarket, base_url: str | None = None, *,
                 timeout_s: float = 5.0, retries: int = 5, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, weight_limit: int | None = None,
                 max_wait_s: float = 65.0, seed: int | None = None,
                 ca_file: str | None = None) -> None:
        if not isinstance(market, RestMarket):
            raise ConfigError(f"market must be a venue's RestMarket (get_venue(key).rest), got "
                              f"{market!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or backoff_max_s < backoff_s:
            raise ConfigError("expected timeout_s > 0, retries >= 0, 0 <= backoff_s <= "
                              f"backoff_max_s; got {timeout_s}, {retries}, {backoff_s}, "
                              f"{backoff_max_s}")
        self.max_limit = max(market.limits)
        heaviest = market.weight(self.max_limit)
        weight_limit = market.weight_limit_1m if weight_limit is None else weight_limit
        if weight_limit < heaviest:
            raise ConfigError(f"weight_limit must be >= {heaviest} (the weight of limit="
                              f"{self.max_limit} on {market.path}), got {weight_limit}")
        self.market = market
        self.path = market.path
        self.base_url = (base_url or market.base_url).rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.weight_limit = weight_limit
        self.max_wait_s = max_wait_s
        self.ca_file = ca_file
        self.stats = RestStats()
        self._rng = random.Random(seed)
        self._minute = -1
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    # ---- decisions shared by sync and async -------------------------------------------------
    def _params(self, symbol: str, limit: int) -> dict[str, str | int]:
        if not symbol or not 1 <= limit <= self.max_limit:
            raise ConfigError(f"expected a symbol and 1 <= limit <= {self.max_limit}, got "
                              f"{symbol!r}, {limit!r}")
        return {"symbol": symbol.upper(), "limit": limit}

    def _verify(self) -> ssl.SSLContext | bool:
        """httpx's `verify`: a context trusting only `ca_file`, or True (httpx's default)."""
        return client_context(self.ca_file) if self.ca_file is not None else True

    def _pre_wait(self, limit: int) -> float:
        """Seconds to wait before a request of `limit` so the minute's weight stays under."""
        now = time.time()
        if int(now // 60) != self._minute or self.stats.used_weight < 0:
            return 0.0
        if self.stats.used_weight + self.market.weight(limit) <= self.weight_limit:
            return 0.0
        return self._bounded(60.0 - now % 60.0 + 0.05, "the weight window")

    def _bounded(self, wait: float, why: str) -> float:
        if wait > self.max_wait_s:
            raise FeedError(f"{self.base_url}{self.path}: {why} asks to wait {wait:.1f} s, "
                            f"more than max_wait_s={self.max_wait_s}")
        return wait

    def _backoff(self, attempt: int) -> float:
        return full_jitter_s(self._rng, attempt, self.backoff_s, self.backoff_max_s)

    def _judge(self, response: httpx.Response, attempt: int, what: str) -> float | None:
        """None if `response` is the snapshot; else the seconds to wait before retrying.
        Raises FeedError for a final answer (4xx other than 429/418, retries exhausted)."""
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self.stats.used_weight = int(used)
            self._minute = int(time.time() // 60)
        status = response.status_code
        if status == 200:
            return None
        detail = f"{what}: HTTP {status} {response.text[:200]!r}"
        if attempt >= self.retries:
            raise FeedError(f"{detail}; gave up after {attempt + 1} attempts")
        if status in (418, 429):
            self.stats.rate_limited += 1
            retry_after = response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else self._backoff(attempt)
            return self._bounded(wait, f"HTTP {status} Retry-After")
        if status >= 500:
            return self._backoff(attempt)
        raise FeedError(detail)

    def _transport_failed(self, exc: httpx.TransportError, attempt: int, what: str) -> float:
        if attempt >= self.retries:
            raise FeedError(f"{what}: {type(exc).__name__}: {exc}; gave up after "
                            f"{attempt + 1} attempts") from exc
        return self._backoff(attempt)

    # ---- sync ------------------------------------------------------------------------------
    def fetch(self, symbol: str, limit: int = 1000) -> bytes:
        """The REST depth body for `symbol` (top `limit` levels per side) as bytes.
        Raises FeedError when retries are exhausted or the answer is final (e.g. HTTP 400)."""
        params = self._params(symbol, limit)
        what = f"GET {self.base_url}{self.path}?symbol={params['symbol']}&limit={limit}"
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s,
                                        verify=self._verify())
        self._sleep(self._pre_wait(limit))
        attempt = 0
        while True:  # bounded: _judge / _transport_failed raise after `retries` re-sends
            self.stats.requests += 1
            try:
                response = self._client.get(self.path, params=params)
            except httpx.TransportError as exc:
                wait = self._transport_failed(exc, attempt, what)
            else:
                wait = self._judge(response, attempt, what)
                if wait is None:
                    return response.content
            self.stats.retries += 1
            attempt += 1
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited_s += seconds
            time.sleep(seconds)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DepthSnapshotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- async -----------------------------------------------------------------------------
    async def afetch(self, symbol: str, limit: int = 1000) -> bytes:
        """`fetch` as a coroutine on the running loop (its own pooled httpx.AsyncClient)."""
        params = self._params(symbol, limit)
        what = f"GET {self.base_url}{self.path}?symbol={params['symbol']}&limit={limit}"
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s,
                                              verify=self._verify())
        await self._asleep(self._pre_wait(limit))
        attempt = 0
        while True:  # bounded: _judge / _transport_failed raise after `retries` re-sends
            self.stats.requests += 1
            try:
                response = await self._aclient.get(self.path, params=params)
            except httpx.TransportError as exc:
                wait = self._transport_failed(exc, attempt, what)
            else:
                wait = self._judge(response, attempt, what)
                if wait is None:
                    return response.content
            self.stats.retries += 1
            attempt += 1
            await self._asleep(wait)

    async def _asleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited_s += seconds
            await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
