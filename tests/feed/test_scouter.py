"""EndpointScouter against real loopback SimExchanges over TLS whose accept delays make them
slower (each new connection is held before its TLS handshake), one stopped (refused) and one
that never answers the handshake (timeout); and moving a running WebSocketFeed.

Delays are tens of milliseconds apart, far above loopback TLS handshake noise (~1-5 ms on a
loaded machine); time is asserted only as lower bounds (a switch never comes before
switch_interval_s)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest

from workbench.errors import ConfigError, FeedError
from workbench.feed.scouter import EndpointScouter, ScouterStatus
from workbench.feed.simex import SimExchange
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.tls import TlsFiles, self_signed, server_context
from workbench.feed.ws import WebSocketFeed


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def exchanges(tls: TlsFiles, *delays_s: float, speed: float | None = None
              ) -> Iterator[list[SimExchange]]:
    """Started TLS SimExchanges with these accept delays (stopped on exit)."""
    context = server_context(tls.cert_file, tls.key_file)
    with ExitStack() as stack:
        yield [stack.enter_context(SimExchange(speed=speed, ssl_context=context,
                                               accept_delay_s=d)) for d in delays_s]


def url(ex: SimExchange) -> str:
    return ex.url + "/stream"


def ranked_all(scouter: EndpointScouter, n: int, probes: int = 8) -> Callable[[], bool]:
    """True once n endpoints are ranked with at least `probes` probes in their window."""
    return lambda: sum(s.rank is not None and s.window >= probes
                       for s in scouter.stats().values()) >= n


def test_ranking_follows_handshake_time_and_failing_endpoints_are_not_ranked(
        tls: TlsFiles) -> None:
    dead = SimExchange(ssl_context=server_context(tls.cert_file, tls.key_file)).start()
    refused = url(dead)
    dead.stop()
    with exchanges(tls, 0.0, 0.04, 0.12) as (fast, mid, slow), \
            socket.create_server(("127.0.0.1", 0)) as mute:  # accepts TCP, never speaks TLS
        silent = f"wss://127.0.0.1:{mute.getsockname()[1]}/stream"
        urls = [url(slow), refused, url(fast), silent, url(mid)]
        with EndpointScouter(urls, check_interval_s=0.1, switch_interval_s=600,
                             ca_file=tls.ca_file, timeout_s=0.3) as scouter:
            wait_until(ranked_all(scouter, 3), 30, "three ranked endpoints")
            status = scouter.snapshot()
            assert scouter.top(5) == [url(fast), url(mid), url(slow)]
            assert scouter.top(1) == [scouter.best()] == [url(fast)]
    assert status.running and not scouter.snapshot().running
    assert [s.url for s in status.endpoints] == urls
    stats = {s.url: s for s in status.endpoints}
    for ex, rank, delay_ms in ((fast, 0, 0.0), (mid, 1, 40.0), (slow, 2, 120.0)):
        s = stats[url(ex)]
        assert s.rank == rank and not s.failing and s.success_ratio == 1.0
        assert s.successes == s.probes >= s.window >= 8
        assert delay_ms <= s.median_ms <= s.p90_ms
        assert ex.stats.connections == 0  # probes never open a websocket
    for bad, error in ((refused, "ConnectionRefusedError"), (silent, "TimeoutError")):
        s = stats[bad]
        assert s.rank is None and s.failing and s.successes == 0 and s.probes >= 1
        assert s.success_ratio == 0.0 and s.median_ms is None and s.p90_ms is None
        assert s.last_error.startswith(error)
    # no decision before switch_interval_s: nothing was moved
    assert status.current is None and status.switches == () and status.decisions == 0


def test_an_endpoint_that_stops_drops_out_of_the_ranking(tls: TlsFiles) -> None:
    with exchanges(tls, 0.0, 0.04) as (fast, mid), \
            EndpointScouter([url(fast), url(mid)], check_interval_s=0.05,
                            switch_interval_s=600, ca_file=tls.ca_file) as scouter:
        wait_until(ranked_all(scouter, 2), 30, "two ranked endpoints")
        assert scouter.top(2) == [url(fast), url(mid)]
        fast.stop()
        wait_until(lambda: scouter.stats()[url(fast)].failing, 30, "the stopped one failing")
        assert scouter.top(2) == [url(mid)] and scouter.best() == url(mid)
        assert scouter.stats()[url(fast)].rank is None


def test_a_running_feed_is_moved_to_the_best_endpoint_and_keeps_its_subscriptions(
        tls: TlsFiles) -> None:
    seen: set[tuple[int, bytes]] = set()  # (connection number, stream name)
    with exchanges(tls, 0.0, 0.12, speed=2.0) as (fast, slow):
        def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
            if message.startswith(b'{"stream"'):
                seen.add((feed.stats.connects, message[11:message.index(b'"', 11)]))

        feed = WebSocketFeed(url(slow), "binance-usdm", ["BTCUSDT"], sink,
                             registry=SymbolRegistry(), channels=("depth@0ms", "trade"),
                             snapshots=False, ca_file=tls.ca_file)
        feed.start()
        try:
            wait_until(lambda: feed.stats.messages > 100, 20, "messages from the slow endpoint")
            scouter = EndpointScouter([url(slow), url(fast)], check_interval_s=0.1,
                                      switch_interval_s=1.0, ca_file=tls.ca_file).attach(feed)
            assert scouter.current == url(slow)
            started = time.monotonic()
            with scouter:
                wait_until(lambda: feed.url == url(fast) and fast.stats.messages > 100, 30,
                           "the feed on the fast endpoint, receiving")
                before = feed.stats.messages
                wait_until(lambda: feed.stats.messages > before + 100, 20, "more messages")
                status = scouter.snapshot()
        finally:
            feed.stop()
    assert feed.error is None
    assert feed.stats.switches == 1 and feed.stats.reconnects == 0 and feed.stats.connects == 2
    assert slow.stats.connections == fast.stats.connections == 1
    (switch,) = status.switches
    assert (switch.from_url, switch.to_url, switch.reason) == (url(slow), url(fast), "slower")
    assert switch.at_s >= started + 1.0
    assert status.current == url(fast)
    streams = {b"btcusdt@depth@0ms", b"btcusdt@trade"}
    assert {s for c, s in seen if c == 1} == streams == {s for c, s in seen if c == 2}


def test_switches_come_at_most_every_switch_interval_and_follow_a_slowed_endpoint(
        tls: TlsFiles) -> None:
    moves: list[tuple[float, str]] = []
    with exchanges(tls, 0.0, 0.12) as (a, b):
        scouter = EndpointScouter([url(a), url(b)], check_interval_s=0.1,
                                  switch_interval_s=1.5, ca_file=tls.ca_file, current=url(b),
                                  on_switch=lambda u: moves.append((time.monotonic(), u)))
        started = time.monotonic()
        with scouter:
            wait_until(lambda: len(moves) == 1, 30, "the move to the fast endpoint")
            a.accept_delay_s = 0.3  # now the slower one by far
            wait_until(lambda: len(moves) == 2, 30, "the move back")
            status = scouter.snapshot()
    assert [u for _, u in moves] == [url(a), url(b)]
    assert moves[0][0] >= started + 1.5
    assert moves[1][0] - moves[0][0] >= 1.5 - 0.01  # the loop's clock rounds to ~1 ms
    assert [s.reason for s in status.switches] == ["slower", "slower"]
    assert status.decisions >= 2 and status.current == url(b)


def run_for(scouter: EndpointScouter, seconds: float) -> ScouterStatus:
    with scouter:
        time.sleep(seconds)
        return scouter.snapshot()


def test_equal_endpoints_do_not_flap(tls: TlsFiles) -> None:
    with exchanges(tls, 0.08, 0.08) as (a, b):
        status = run_for(EndpointScouter([url(a), url(b)], check_interval_s=0.05,
                                         switch_interval_s=0.3, ca_file=tls.ca_file,
                                         current=url(a)), 4.0)
    assert status.decisions >= 8
    assert status.switches == () and status.current == url(a)
    assert all(s.rank is not None for s in status.endpoints)


def test_the_margin_keeps_a_feed_on_an_endpoint_within_it(tls: TlsFiles) -> None:
    """B is ~10 % faster than A: without a margin the scouter moves (B ranks first), with the
    default 20 % it stays on A."""
    with exchanges(tls, 0.10, 0.09) as (a, b):
        def scouter(**margins: float) -> EndpointScouter:
            return EndpointScouter([url(a), url(b)], check_interval_s=0.05,
                                   switch_interval_s=0.5, ca_file=tls.ca_file, current=url(a),
                                   **margins)

        with scouter() as kept, scouter(margin=0.0, margin_s=0.0) as moved:
            wait_until(lambda: len(moved.snapshot().switches) == 1, 30, "the margin-less move")
            time.sleep(1.5)  # a few more decisions
            kept_status, moved_status = kept.snapshot(), moved.snapshot()
    assert [(s.to_url, s.reason) for s in moved_status.switches] == [(url(b), "slower")]
    assert moved_status.current == url(b)
    assert kept_status.decisions >= 3 and kept_status.switches == ()
    assert kept_status.current == url(a)


def test_plain_ws_probes_tcp_and_a_failing_on_switch_keeps_the_current_endpoint() -> None:
    calls: list[str] = []

    def on_switch(target: str) -> None:
        calls.append(target)
        if len(calls) == 1:
            raise RuntimeError("the feed refused")

    with SimExchange(speed=None) as ex, \
            EndpointScouter([url(ex)], check_interval_s=0.05, switch_interval_s=0.3,
                            on_switch=on_switch) as scouter:
        wait_until(lambda: len(calls) == 2, 20, "a second attempt")
        status = scouter.snapshot()
    assert calls == [url(ex), url(ex)]
    (switch,) = status.switches
    assert (switch.from_url, switch.to_url, switch.reason) == (None, url(ex), "start")
    (stats,) = status.endpoints
    assert stats.successes >= 3 and stats.median_ms is not None and stats.rank == 0
    assert ex.stats.connections == 0


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ([], {}, "non-empty"),
    ("ws://127.0.0.1:1", {}, "non-empty sequence"),
    (["http://127.0.0.1:1"], {}, "ws://HOST"),
    (["wss:///stream"], {}, "ws://HOST"),
    (["ws://127.0.0.1:99999"], {}, "port"),
    (["ws://127.0.0.1:1", "ws://127.0.0.1:1"], {}, "repeat"),
    (["ws://127.0.0.1:1"], {"check_interval_s": 0}, "check_interval_s"),
    (["ws://127.0.0.1:1"], {"switch_interval_s": -1}, "switch_interval_s"),
    (["ws://127.0.0.1:1"], {"timeout_s": 0}, "timeout_s"),
    (["ws://127.0.0.1:1"], {"top_n": 0}, "top_n"),
    (["ws://127.0.0.1:1"], {"window": 0}, "window"),
    (["ws://127.0.0.1:1"], {"min_success": 0}, "min_success"),
    (["ws://127.0.0.1:1"], {"margin": 1.0}, "margin"),
    (["wss://127.0.0.1:1"], {"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
])
def test_bad_arguments_raise_config_error(args: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EndpointScouter(args, **kwargs)  # type: ignore[arg-type]


def test_start_twice_raises_and_stop_is_idempotent() -> None:
    scouter = EndpointScouter(["ws://127.0.0.1:9/x"], check_interval_s=0.1).start()
    try:
        with pytest.raises(FeedError, match="already started"):
            scouter.start()
    finally:
        scouter.stop()
    scouter.stop()
    assert not scouter.snapshot().running
