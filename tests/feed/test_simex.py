"""SimExchange protocols, REST endpoint, pacing and faults, seen from a plain websockets client.

The client here is bare `websockets` (not WebSocketFeed) so the server is checked on its own:
what goes over the wire is compared byte for byte with the recording (read by ReplayFeed) or
with a same-seed simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from workbench.errors import ConfigError, FeedError, RecordingError
from workbench.feed.replay import ReplayFeed
from workbench.feed.simex import Faults, SimExchange, Window
from workbench.feed.simulator import MarketSimulator, SimConfig

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"


def talk(url: str, script: Callable[[ClientConnection], Awaitable[Any]],
         timeout_s: float = 20.0) -> Any:
    """Open a websocket to `url`, run `script(ws)` under a timeout, return its result."""

    async def main() -> Any:
        async with asyncio.timeout(timeout_s):
            async with connect(url, max_size=None, compression=None, max_queue=None,
                               close_timeout=2) as ws:
                return await script(ws)

    return asyncio.run(main())


async def take(ws: ClientConnection, n: int) -> list[bytes]:
    return [await ws.recv(decode=False) for _ in range(n)]


def stream_of(message: bytes) -> bytes:
    return json.loads(message)["stream"].encode()


# ---- Binance protocol on the simulator --------------------------------------------------------

def test_combined_stream_and_subscribe_methods() -> None:
    with SimExchange(speed=None) as ex:

        async def script(ws: ClientConnection) -> None:
            first = await take(ws, 50)
            assert {stream_of(m) for m in first} == {b"btcusdt@trade"}
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}')
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
            await ws.send("not json")
            replies, streams = [], set()
            while len(replies) < 3:
                m = await ws.recv(decode=False)
                if m.startswith(b'{"stream"'):
                    streams.add(stream_of(m))
                else:
                    replies.append(json.loads(m))
            assert replies[0] == {"result": None, "id": 7}
            assert replies[1] == {"result": ["btcusdt@trade", "btcusdt@bookTicker"], "id": 8}
            assert replies[2]["error"]["code"] == 2
            rest = await take(ws, 300)
            assert {stream_of(m) for m in rest if m.startswith(b'{"stream"')} == {
                b"btcusdt@trade", b"btcusdt@bookTicker"}

        talk(ex.url + "/stream?streams=btcusdt@trade", script)
        assert ex.stats.bad_requests == 1


def test_raw_ws_path_sends_the_data_part_of_the_same_messages() -> None:
    sim = MarketSimulator(SimConfig())
    want = []
    while len(want) < 500:
        want.extend(m for _, stream, m in sim.step() if stream == "btcusdt@depth@0ms")
    with SimExchange(speed=None) as ex:

        async def script(ws: ClientConnection) -> list[bytes]:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}')
            assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            return await take(ws, 500)

        got = talk(ex.url + "/ws", script)
    assert [json.loads(m) for m in got] == [json.loads(m)["data"] for m in want[:500]]


def test_unknown_path_is_refused() -> None:
    with SimExchange(speed=None) as ex:

        async def script(ws: ClientConnection) -> None:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1008

        talk(ex.url + "/v5/public/linear", script)


def test_rest_snapshot_follows_the_stream() -> None:
    """Mid-stream, the REST snapshot's lastUpdateId is the u of a delta on the stream and its
    book is the same-seed simulator's book at that update id."""
    with SimExchange(speed=None) as ex:

        async def script(ws: ClientConnection) -> tuple[int, bytes, set[int]]:
            await take(ws, 2000)
            async with httpx.AsyncClient(base_url=ex.rest_url) as http:
                response = await http.get("/fapi/v1/depth",
                                          params={"symbol": "BTCUSDT", "limit": 50})
            body = response.content
            last_id = json.loads(body)["lastUpdateId"]
            seen: set[int] = set()
            while last_id not in seen:
                seen.add(json.loads(await ws.recv())["data"]["u"])
            return last_id, body, seen

        last_id, body, _ = talk(ex.url + "/stream?streams=btcusdt@depth@0ms", script)
    sim = MarketSimulator(SimConfig())
    while sim.last_update_id < last_id:
        sim.step()
    assert json.loads(sim.snapshot(50))["bids"] == json.loads(body)["bids"]
    assert json.loads(sim.snapshot(50))["asks"] == json.loads(body)["asks"]


def _streamed(frames: list[dict]) -> list[dict]:
    """The stream frames among decoded `frames` (replies to requests left out)."""
    return [f for f in frames if "result" not in f and "error" not in f]


async def _until_reply(ws: ClientConnection, request_id: int) -> tuple[list[dict], Any]:
    """The frames received before the reply to request `request_id`, and its result."""
    frames = []
    while (frame := json.loads(await ws.recv())).get("id") != request_id:
        frames.append(frame)
    return _streamed(frames), frame["result"]


def test_frames_carry_the_stream_name_as_subscribed() -> None:
    """The simulator writes `btcusdt@depth@0ms`; a client gets each depth message under every
    name it subscribed (`@depth@100ms`, then also `@depth`), as Binance sends each
    subscribed stream; unsubscribing one name leaves the other. A raw `/ws/<stream>` lists the
    stream as asked and gets the data parts."""
    with SimExchange(speed=None) as ex:

        async def combined(ws: ClientConnection) -> tuple[list[dict], list[dict], Any]:
            first = _streamed([json.loads(m) for m in await take(ws, 100)])
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":2}')
            await _until_reply(ws, 2)  # frames queued before the SUBSCRIBE was read
            both = _streamed([json.loads(m) for m in await take(ws, 600)])
            await ws.send('{"method":"UNSUBSCRIBE","params":["btcusdt@depth@100ms"],"id":3}')
            await _until_reply(ws, 3)
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":4}')
            after, listed = await _until_reply(ws, 4)
            after += [json.loads(m) for m in await take(ws, 600)]
            return first, both, (after, listed)

        first, both, (after, listed) = talk(
            ex.url + "/stream?streams=btcusdt@depth@100ms", combined)
        assert {f["stream"] for f in first} == {"btcusdt@depth@100ms"}
        names: dict[int, list[str]] = {}
        for f in both:
            names.setdefault(f["data"]["u"], []).append(f["stream"])
        ids = list(names)
        start = next(i for i, u in enumerate(ids) if len(names[u]) == 2)
        assert start < len(ids) - 100
        # every message from the SUBSCRIBE on goes out under both names (the last one may be
        # cut between its two frames)
        assert all(names[u] == ["btcusdt@depth@100ms", "btcusdt@depth"]
                   for u in ids[start:-1])
        assert listed == ["btcusdt@depth"]
        tail = _streamed(after)[-300:]
        assert {f["stream"] for f in tail} == {"btcusdt@depth"}
        assert all(b["data"]["pu"] == a["data"]["u"] for a, b in itertools.pairwise(tail))

        async def raw(ws: ClientConnection) -> tuple[list[dict], Any]:
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":9}')
            return await _until_reply(ws, 9)

        data, listed = talk(ex.url + "/ws/btcusdt@depth@500ms", raw)
    assert listed == ["btcusdt@depth@500ms"]
    assert {f["e"] for f in data} == {"depthUpdate"} and "stream" not in data[0]


def test_now_moves_event_times_to_the_clock_and_keeps_their_gaps(
        shared_data: Path, usdm: list[tuple[int, bytes]]) -> None:
    """now=True: one offset, fixed by the first thing served (here the REST snapshot), moves
    every E and T (stream and futures REST) near the current clock; the spot REST body has no
    E/T; the gaps between times are the recording's to the millisecond."""
    path = shared_data / USDM
    snapshot = json.loads(next(m for _, m in usdm if m.startswith(b'{"lastUpdateId"')))
    n = 120
    trades = [json.loads(m)["data"] for _, m in usdm
              if m.startswith(b'{"stream":"btcusdt@trade"')][:n]
    with SimExchange(path, speed=1.0, now=True) as ex:
        with httpx.Client(base_url=ex.rest_url) as http:
            asked_ms = time.time() * 1000
            futures = http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})
            spot = http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1000})

        async def script(ws: ClientConnection) -> list[tuple[dict, float]]:
            return [(json.loads(await ws.recv())["data"], time.time() * 1000)
                    for _ in range(n)]

        got = talk(ex.url + "/stream?streams=btcusdt@trade", script)
    body = futures.json()
    offset = body["E"] - snapshot["E"]
    assert abs(body["E"] - asked_ms) < 1000 and body["T"] - snapshot["T"] == offset
    assert offset > 60_000  # the recording is from 2024
    assert list(body) == list(snapshot) and body["bids"] == snapshot["bids"]
    assert list(spot.json()) == ["lastUpdateId", "bids", "asks"]
    for (data, at_ms), want in zip(got, trades, strict=True):
        assert data["E"] - want["E"] == offset and data["T"] - want["T"] == offset
        assert abs(data["E"] - at_ms) < 1000
        assert {k: v for k, v in data.items() if k not in "ET"} == {
            k: v for k, v in want.items() if k not in "ET"}


def test_rest_depth_bodies_and_weights_follow_each_market() -> None:
    """Spot `/api/v3/depth`: lastUpdateId, bids, asks (no E/T) and spot weights; USD-M adds
    E and T; COIN-M also symbol and pair (Binance docs, "Order Book" of each API)."""
    with SimExchange(speed=None) as ex, httpx.Client(base_url=ex.rest_url) as http:
        params = {"symbol": "BTCUSDT", "limit": 500}
        spot = http.get("/api/v3/depth", params=params)
        usdm = http.get("/fapi/v1/depth", params=params)
        coinm = http.get("/dapi/v1/depth", params=params)
    assert list(spot.json()) == ["lastUpdateId", "bids", "asks"]
    assert list(usdm.json()) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert list(coinm.json()) == ["lastUpdateId", "E", "T", "symbol", "pair", "bids", "asks"]
    assert (coinm.json()["symbol"], coinm.json()["pair"]) == ("BTCUSDT", "BTCUSDT")
    for body in (spot.json(), coinm.json()):
        assert (body["lastUpdateId"], body["bids"], body["asks"]) == (
            usdm.json()["lastUpdateId"], usdm.json()["bids"], usdm.json()["asks"])
    assert spot.headers["X-MBX-USED-WEIGHT-1M"] == "25"  # spot: 101-500 levels weigh 25
    assert usdm.headers["X-MBX-USED-WEIGHT-1M"] == "10"  # futures: 500 levels weigh 10
    assert coinm.headers["X-MBX-USED-WEIGHT-1M"] == "10"


def test_stop_closes_connected_clients_with_1001_within_its_timeout() -> None:
    """A subscribed client mid-stream and one that never subscribed: stop() sends both a
    close (1001 going away) and returns within its timeout."""
    ex = SimExchange(speed=1.0).start()

    async def script(ws: ClientConnection) -> tuple[float, list[int]]:
        await take(ws, 5)
        async with connect(ex.url + "/ws", close_timeout=2) as idle:
            started = time.monotonic()
            await asyncio.to_thread(ex.stop, 4.0)
            took = time.monotonic() - started
            codes = []
            for conn in (ws, idle):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await conn.recv()
                codes.append(closed.value.rcvd.code)
        return took, codes

    took, codes = talk(ex.url + "/stream?streams=btcusdt@trade", script)
    assert codes == [1001, 1001]
    assert took < 4.0


# ---- faults -----------------------------------------------------------------------------------

def test_disconnect_gap_and_malformed_faults_on_the_first_connection_only() -> None:
    faults = Faults(gap_after=100, malformed_after=150, disconnect_after=400)
    with SimExchange(speed=None, faults=faults) as ex:

        async def until_closed(ws: ClientConnection) -> tuple[list[bytes], int]:
            got = []
            try:
                while True:
                    got.append(await ws.recv(decode=False))
            except ConnectionClosed as closed:
                return got, closed.rcvd.code

        url = ex.url + "/stream?streams=btcusdt@depth@0ms"
        got, code = talk(url, until_closed)
        assert code == 1001
        data = [json.loads(m)["data"] for m in got if m.startswith(b'{"stream":"btcusdt')]
        assert len(data) == 400
        assert sum(1 for m in got if not m.startswith(b'{"stream":"btcusdt')) == 1
        with pytest.raises(json.JSONDecodeError):
            json.loads(next(m for m in got if not m.startswith(b'{"stream":"btcusdt')))
        breaks = [i for i in range(1, 400) if data[i]["pu"] != data[i - 1]["u"]]
        assert breaks == [100], "exactly the delta after message 100 is missing"
        # the second connection resumes where the first stopped, without faults
        again = talk(url, lambda ws: take(ws, 1000))
        chain = [json.loads(m)["data"] for m in again]
        assert chain[0]["pu"] == data[-1]["u"]
        assert all(chain[i]["pu"] == chain[i - 1]["u"] for i in range(1, 1000))
        assert ex.stats.faults == {"gap": 1, "malformed": 1, "disconnect": 1}
        assert ex.stats.connections == 2


def test_stall_sends_nothing_for_its_duration() -> None:
    with SimExchange(speed=None, faults=Faults(stall_after=50, stall_s=1.0)) as ex:

        async def script(ws: ClientConnection) -> float:
            await take(ws, 50)
            start = time.monotonic()
            await ws.recv()
            return time.monotonic() - start

        assert talk(ex.url + "/stream?streams=btcusdt@trade", script) >= 0.9


# ---- recordings -------------------------------------------------------------------------------

def _recorded(path: Path, conn: str | None = None) -> list[tuple[int, bytes]]:
    return list(ReplayFeed(path, speed=None, conn=conn))


@pytest.fixture(scope="module")
def usdm(shared_data: Path) -> list[tuple[int, bytes]]:
    return _recorded(shared_data / USDM)


def test_recording_rest_snapshot_is_the_recorded_line_until_the_stream_passes_it(
        shared_data: Path, usdm: list[tuple[int, bytes]]) -> None:
    path = shared_data / USDM
    recorded = [m for _, m in usdm if m.startswith(b'{"lastUpdateId"')]
    assert len(recorded) == 1
    with SimExchange(path, speed=None) as ex, httpx.Client(base_url=ex.rest_url) as http:
        full = http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})
        assert full.status_code == 200 and full.content == recorded[0]
        top = http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5}).json()
        want = json.loads(recorded[0])
        assert top["bids"] == want["bids"][:5] and top["asks"] == want["asks"][:5]
        assert top["lastUpdateId"] == want["lastUpdateId"]
        missing = http.get("/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": 5})
        assert missing.status_code == 400 and missing.json()["code"] == -1121


def test_paced_replay_keeps_the_recorded_spacing(shared_data: Path,
                                                usdm: list[tuple[int, bytes]]) -> None:
    path = shared_data / USDM
    times = [t for t, m in usdm if m.startswith(b'{"stream":"btcusdt@trade"')]
    n = 300
    speed = (times[n - 1] - times[0]) / 1e9 / 0.6  # those n trades take 0.6 s of wall time
    with SimExchange(path, speed=speed) as ex:

        async def script(ws: ClientConnection) -> float:
            await ws.recv()
            start = time.monotonic()
            await take(ws, n - 1)
            return time.monotonic() - start

        elapsed = talk(ex.url + "/stream?streams=btcusdt@trade", script)
    assert elapsed >= 0.6 * 0.9


def test_window_serves_the_recorded_slice_fast_forward_then_pause_then_paced(
        shared_data: Path, usdm: list[tuple[int, bytes]]) -> None:
    """Window(start_s=30, pause_s=1.0, duration_s=1.5) at speed 1: exactly the subscribed
    recorded messages received in [first, first + 31.5 s), in order; the first 30 s of them
    arrive flat out (far faster than recorded), then nothing for the pause, then the last
    1.5 s paced as recorded; nothing after the window. With ff_speed=60 the same first 30 s
    take at least their recorded span / 60."""
    path = shared_data / USDM
    stream = [(t, m) for t, m in usdm if m.startswith(b'{"stream"')]
    first = stream[0][0]
    ff_end, end = first + 30 * 10**9, first + 31_500_000_000
    want = [(t, m) for t, m in stream if t < end and stream_of(m) == b"btcusdt@trade"]
    n_ff = sum(1 for t, _ in want if t < ff_end)
    assert 100 < n_ff < len(want)
    with SimExchange(path, speed=1.0, window=Window(30.0, 1.0, 1.5)) as ex:

        async def script(ws: ClientConnection) -> tuple[list[bytes], list[float]]:
            got, at = [], []
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(await asyncio.wait_for(ws.recv(decode=False), 1.5))
                    at.append(time.perf_counter())
            return got, at

        got, at = talk(ex.url + "/stream?streams=btcusdt@trade", script)
    assert got == [m for _, m in want]
    assert at[n_ff - 1] - at[0] < 3.0  # 30 s of recording, fast-forwarded
    # the pause: nothing for 1 s after the fast-forward was sent (the client may still be
    # reading its tail, so the gap it sees can be shorter)
    assert at[n_ff] - at[0] >= 0.95 and at[n_ff] - at[n_ff - 1] >= 0.5
    paced_wall = at[-1] - at[n_ff]
    paced_recorded = (want[-1][0] - want[n_ff][0]) / 1e9
    assert paced_recorded * 0.9 <= paced_wall <= paced_recorded + 0.3
    with SimExchange(path, speed=1.0, window=Window(30.0, 0.0, 0.01, ff_speed=60.0)) as ex:
        paced_ff, at = talk(ex.url + "/stream?streams=btcusdt@trade", script)
    assert paced_ff[:n_ff] == got[:n_ff]
    assert at[n_ff - 1] - at[0] >= (want[n_ff - 1][0] - want[0][0]) / 1e9 / 60 * 0.9
    with pytest.raises(ConfigError):
        Window(start_s=-1.0)
    with pytest.raises(ConfigError):
        Window(ff_speed=0.0)


def test_bybit_v5_protocol_serves_the_recorded_topics(shared_data: Path) -> None:
    path = shared_data / "bybit/BYBIT.jsonl.zst"
    want = [m for _, m in _recorded(path, "BYBIT.ws.3")
            if m.startswith((b'{"topic":"orderbook.200.BTCUSDT"',
                             b'{"topic":"publicTrade.BTCUSDT"'))]
    with SimExchange(path, venue="bybit", speed=None, conn="BYBIT.ws.3") as ex:

        async def script(ws: ClientConnection) -> list[bytes]:
            await ws.send('{"op":"subscribe","args":["orderbook.50.BTCUSDT",'
                          '"publicTrade.BTCUSDT"],"req_id":"a1"}')
            reply = json.loads(await ws.recv())
            assert reply["success"] is True and reply["op"] == "subscribe"
            assert reply["req_id"] == "a1" and reply["conn_id"]
            got = await take(ws, len(want))
            await ws.send('{"op":"ping","req_id":"p"}')
            assert json.loads(await ws.recv())["ret_msg"] == "pong"
            return got

        got = talk(ex.url + "/v5/public/spot", script)
    assert got == want


def test_coinbase_protocol_numbers_its_own_sequence(shared_data: Path) -> None:
    path = shared_data / "coinbase/COINBASE.jsonl.zst"
    want = [json.loads(m) for _, m in _recorded(path)
            if b'"l2_data"' in m[:40] and b'"product_id":"BTC-USD"' in m]
    with SimExchange(path, venue="coinbase", speed=None) as ex:

        async def script(ws: ClientConnection) -> list[dict]:
            await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}')
            reply = json.loads(await ws.recv())
            assert reply["channel"] == "subscriptions"
            assert reply["events"][0]["subscriptions"] == {"level2": ["BTC-USD"]}
            return [json.loads(m) for m in await take(ws, len(want))]

        got = talk(ex.url, script)
    assert [g["sequence_num"] for g in got] == list(range(1, len(want) + 1))
    for g, w in zip(got, want, strict=True):
        g.pop("sequence_num")
        w.pop("sequence_num")
        assert g == w


# ---- bad input --------------------------------------------------------------------------------

def test_bad_arguments_and_sources() -> None:
    with pytest.raises(ConfigError):
        SimExchange(venue="kraken")
    with pytest.raises(ConfigError):
        SimExchange(speed=0)
    with pytest.raises(ConfigError):
        SimExchange(venue="coinbase")  # the simulator speaks binance and bybit
    with pytest.raises(ConfigError):
        SimExchange(venue="tardis")  # a venue SimExchange does not serve
    with pytest.raises(ConfigError, match="now=True"):
        SimExchange(venue="bybit", now=True)  # its dialect does not shift event times
    assert SimExchange(venue="binance-usdm").venue == "binance"  # a key names its family
    with pytest.raises(ConfigError):
        Faults(rest_status=500)
    with pytest.raises(RecordingError, match=r"nope\.gz"):
        SimExchange("/nonexistent/nope.gz").start()
    with pytest.raises(FeedError, match="not started"):
        _ = SimExchange().url
