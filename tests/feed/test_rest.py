"""DepthSnapshotClient against a real local HTTP server (SimExchange's REST depth endpoint)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from workbench.errors import ConfigError, FeedError
from workbench.feed.rest import DepthSnapshotClient
from workbench.feed.simex import Faults, SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.venues import get_venue

USDM = get_venue("binance-usdm").rest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_snapshot_is_the_simulators_book_and_weight_is_reported() -> None:
    with SimExchange(speed=None) as ex, DepthSnapshotClient(USDM, ex.rest_url) as client:
        body = client.fetch("btcusdt", limit=1000)
        assert body == MarketSimulator(SimConfig()).snapshot(1000)
        assert client.stats.used_weight == 20  # the weight of limit=1000, first call
        assert client.stats.requests == 1 and client.stats.retries == 0


def test_retry_after_is_honoured_then_the_snapshot_arrives() -> None:
    faults = Faults(rest_errors=2, rest_status=429, retry_after_s=1)
    with SimExchange(speed=None, faults=faults) as ex:
        client = DepthSnapshotClient(USDM, ex.rest_url, backoff_s=0.0)
        start = time.monotonic()
        body = client.fetch("BTCUSDT", limit=5)
        elapsed = time.monotonic() - start
        client.close()
        assert body.startswith(b'{"lastUpdateId":')
        assert client.stats.rate_limited == 2 and client.stats.retries == 2
        assert client.stats.waited_s == 2.0
        assert elapsed >= 2.0, "Retry-After: 1 twice must wait at least 2 s"
        assert ex.stats.rest_requests == {429: 2, 200: 1}


def test_ban_longer_than_max_wait_raises_at_once() -> None:
    faults = Faults(rest_errors=5, rest_status=418, retry_after_s=120)
    with SimExchange(speed=None, faults=faults) as ex:
        client = DepthSnapshotClient(USDM, ex.rest_url, max_wait_s=5.0)
        with pytest.raises(FeedError, match="418 Retry-After asks to wait 120"):
            client.fetch("BTCUSDT", limit=5)
        client.close()
        assert client.stats.requests == 1 and client.stats.waited_s == 0.0


def test_final_errors_are_not_retried() -> None:
    with SimExchange(speed=None) as ex, DepthSnapshotClient(USDM, ex.rest_url) as client:
        with pytest.raises(FeedError, match=r"HTTP 400.*Invalid symbol"):
            client.fetch("ETHUSDT", limit=5)
        with pytest.raises(FeedError, match=r"HTTP 400.*limit"):
            client.fetch("BTCUSDT", limit=7)  # futures accept 5, 10, 20, 50, 100, 500, 1000
        assert client.stats.requests == 2 and client.stats.retries == 0


def test_connection_errors_back_off_then_give_up() -> None:
    port = _free_port()  # nothing listens there
    client = DepthSnapshotClient(USDM, f"http://127.0.0.1:{port}", retries=3,
                                 backoff_s=0.01, backoff_max_s=0.05, timeout_s=1.0, seed=1)
    with pytest.raises(FeedError, match=r"ConnectError.*gave up after 4 attempts"):
        client.fetch("BTCUSDT", limit=5)
    client.close()
    assert client.stats.requests == 4 and client.stats.retries == 3
    assert 0.0 < client.stats.waited_s <= 0.01 + 0.02 + 0.04


def test_weight_budget_waits_for_the_next_minute() -> None:
    if time.time() % 60 > 58:  # keep both calls in one weight window
        time.sleep(61 - time.time() % 60)
    with SimExchange(speed=None) as ex:
        client = DepthSnapshotClient(USDM, ex.rest_url, weight_limit=30, max_wait_s=0.001)
        client.fetch("BTCUSDT", limit=1000)  # weight 20 of 30 used
        with pytest.raises(FeedError, match="the weight window asks to wait"):
            client.fetch("BTCUSDT", limit=1000)
        client.close()
        assert client.stats.requests == 1, "the over-budget request must not be sent"


def test_async_fetch_matches_sync() -> None:
    with SimExchange(speed=None) as ex, DepthSnapshotClient(USDM, ex.rest_url) as client:

        async def both() -> list[bytes]:
            try:
                return list(await asyncio.gather(client.afetch("BTCUSDT", 100),
                                                  client.afetch("BTCUSDT", 100)))
            finally:
                await client.aclose()

        bodies = asyncio.run(both())
        assert bodies[0] == bodies[1] == client.fetch("BTCUSDT", 100)


def test_spot_market_has_its_own_limits_and_weights() -> None:
    """Spot differs from futures (Binance docs, "Order Book"): any limit 1..5000, weight 5 up
    to 100 levels, 50 up to 1000; SimExchange charges each market its own window."""
    with SimExchange(speed=None) as ex, \
            DepthSnapshotClient(get_venue("binance").rest, ex.rest_url) as client:
        assert client.fetch("BTCUSDT", limit=7).startswith(b'{"lastUpdateId":')
        assert client.stats.used_weight == 5
        client.fetch("BTCUSDT", limit=1000)
        assert client.stats.used_weight == 55
        with DepthSnapshotClient(USDM, ex.rest_url) as futures:
            futures.fetch("BTCUSDT", limit=1000)
            assert futures.stats.used_weight == 20


@pytest.mark.parametrize("kwargs", [{"market": "options"}, {"market": USDM, "timeout_s": 0},
                                    {"market": USDM, "backoff_s": 2.0, "backoff_max_s": 1.0},
                                    {"market": USDM, "weight_limit": 19}])
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DepthSnapshotClient(**kwargs)
