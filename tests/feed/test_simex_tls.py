"""SimExchange over TLS (wss:// and https:// on one port) and its injected accept delay, with
the real clients: WebSocketFeed (both wires), DepthSnapshotClient and plain ssl sockets, and
a CA and server certificate made for the test (`workbench.feed.tls`)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from workbench.book.sync import BookSync
from workbench.errors import ConfigError, FeedError
from workbench.feed.rest import DepthSnapshotClient
from workbench.feed.simex import SimExchange
from workbench.feed.simulator import MarketSimulator, SimConfig
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.tls import TlsFiles, client_context, self_signed, server_context
from workbench.feed.venues import get_venue
from workbench.feed.wires import WIRES
from workbench.feed.ws import WebSocketFeed

USDM = get_venue("binance-usdm")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def tls_connect_s(port: int, ca_file: str) -> float:
    """Seconds for a TCP connect plus TLS handshake to 127.0.0.1:port, verified by the CA."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_context(ca_file).wrap_socket(raw, server_hostname="127.0.0.1"):
        return time.perf_counter() - start


def test_self_signed_writes_a_ca_and_a_server_certificate_it_verifies(tls: TlsFiles) -> None:
    assert os.stat(tls.key_file).st_mode & 0o777 == 0o600
    server = server_context(tls.cert_file, tls.key_file)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve_one() -> None:
            accepted, _ = listener.accept()
            with server.wrap_socket(accepted, server_side=True) as conn:
                conn.recv(1)  # until the client closes

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with client_context(tls.ca_file).wrap_socket(raw, server_hostname="localhost") as c:
            cert = c.getpeercert()
        thread.join(10)
    assert dict(x[0] for x in cert["subject"])["commonName"] == "127.0.0.1"
    assert {("IP Address", "127.0.0.1"), ("DNS", "localhost")} <= set(cert["subjectAltName"])
    with pytest.raises(ConfigError, match="at least one host"):
        self_signed(tls.ca_file + ".d", hosts=())


@pytest.mark.parametrize("wire", WIRES)
def test_feed_over_wss_with_the_ca_syncs_its_book_from_https_snapshots(
        tls: TlsFiles, wire: str) -> None:
    sync = BookSync(USDM.sequencing)
    streams: set[bytes] = set()
    with SimExchange(speed=5.0, ssl_context=server_context(tls.cert_file, tls.key_file)) as ex:
        assert ex.url.startswith("wss://") and ex.rest_url.startswith("https://")

        def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
            sync.process(batch, feed.normalizer.last)
            if message.startswith(b'{"stream"'):
                streams.add(message[11:message.index(b'"', 11)])

        feed = WebSocketFeed(ex.url + "/stream", "binance-usdm", ["BTCUSDT"], sink,
                             registry=SymbolRegistry(), rest_url=ex.rest_url, wire=wire,
                             channels=("depth@0ms", "trade"), on_connect=sync.connection_reset,
                             ca_file=tls.ca_file, max_connects=3)
        sync.on_resync = feed.request_resync
        sid = feed.registry.id("binance-usdm", "BTCUSDT")
        feed.start()
        try:
            wait_until(lambda: feed.stats.messages > 500 and sync.is_valid(sid), 20,
                       "500 messages and a synced book over wss/https")
        finally:
            feed.stop()
    assert feed.error is None
    assert feed.stats.connects == 1 and feed.stats.snapshots >= 1
    assert ex.stats.rest_requests.get(200, 0) == feed.stats.snapshots
    assert streams == {b"btcusdt@depth@0ms", b"btcusdt@trade"}
    assert ex.stats.tls_failures == 0 and ex.stats.connections == 1


@pytest.mark.parametrize("wire", WIRES)
def test_feed_without_the_ca_is_refused_and_ends_failed(tls: TlsFiles, wire: str) -> None:
    with SimExchange(speed=None, ssl_context=server_context(tls.cert_file, tls.key_file)) as ex:
        feed = WebSocketFeed(ex.url + "/stream", "binance-usdm", ["BTCUSDT"], lambda *a: None,
                             registry=SymbolRegistry(), wire=wire, snapshots=False,
                             max_connects=2, backoff_s=0.01, backoff_max_s=0.02)
        feed.start()
        assert feed.wait(20)
        feed.stop()
        wait_until(lambda: ex.stats.tls_failures == 2, 10, "the server to see both refusals")
    assert isinstance(feed.error, FeedError)
    assert "2 connection attempts" in str(feed.error)
    assert "CERTIFICATE_VERIFY_FAILED" in str(feed.error)
    assert feed.stats.connects == 0 and feed.stats.messages == 0
    assert ex.stats.connections == 0 and ex.stats.messages == 0


def test_rest_depth_snapshot_over_https(tls: TlsFiles) -> None:
    with SimExchange(speed=None, ssl_context=server_context(tls.cert_file, tls.key_file)) as ex:
        with DepthSnapshotClient(USDM.rest, ex.rest_url, ca_file=tls.ca_file) as client:
            assert client.fetch("BTCUSDT", limit=100) == MarketSimulator(SimConfig()).snapshot(100)
        with DepthSnapshotClient(USDM.rest, ex.rest_url, retries=0) as untrusting, \
                pytest.raises(FeedError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.fetch("BTCUSDT", limit=100)
        wait_until(lambda: ex.stats.tls_failures == 1, 10, "the server to see the refusal")
    assert ex.stats.rest_requests == {200: 1}


def test_accept_delay_holds_the_tls_handshake_and_can_change_while_running(
        tls: TlsFiles) -> None:
    with SimExchange(speed=None, ssl_context=server_context(tls.cert_file, tls.key_file),
                     accept_delay_s=0.25) as ex:
        assert tls_connect_s(ex.port, tls.ca_file) >= 0.25
        ex.accept_delay_s = 0.6
        assert tls_connect_s(ex.port, tls.ca_file) >= 0.6
        with DepthSnapshotClient(USDM.rest, ex.rest_url, ca_file=tls.ca_file) as client:
            start = time.perf_counter()
            client.fetch("BTCUSDT", limit=5)
            assert time.perf_counter() - start >= 0.6
        with pytest.raises(ConfigError, match="accept_delay_s"):
            ex.accept_delay_s = -1.0
        assert ex.accept_delay_s == 0.6


def test_accept_delay_on_plain_ws_holds_the_opening_handshake() -> None:
    with SimExchange(speed=None, accept_delay_s=0.4) as ex:
        assert ex.url.startswith("ws://")
        feed = WebSocketFeed(ex.url + "/stream", "binance-usdm", ["BTCUSDT"], lambda *a: None,
                             registry=SymbolRegistry(), snapshots=False)
        start = time.perf_counter()
        feed.start()
        try:
            assert feed.connected.wait(10)
            assert time.perf_counter() - start >= 0.4
            wait_until(lambda: feed.stats.messages > 100, 10, "messages after the delay")
        finally:
            feed.stop()
    with pytest.raises(ConfigError, match="accept_delay_s"):
        SimExchange(accept_delay_s=-0.1)


def test_stop_drops_connections_still_held() -> None:
    ex = SimExchange(speed=None, accept_delay_s=60.0).start()
    held = socket.create_connection(("127.0.0.1", ex.port), timeout=10)
    with held:
        time.sleep(0.2)  # accepted and held by the server
        ex.stop(timeout_s=5.0)
        held.settimeout(5.0)
        assert held.recv(1) == b""  # the server closed it
    assert ex.stats.connections == 0
