"""The market simulator: determinism, sequence numbers, and a book its messages rebuild exactly.

The reference is independent of the simulator's internals: plain `json` parsing and a dict
book built from its REST snapshot plus the depthUpdate messages that follow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.feed.simulator import MarketSimulator, SimConfig


def _run(sim: MarketSimulator, steps: int) -> list[tuple[int, str, bytes]]:
    out: list[tuple[int, str, bytes]] = []
    for _ in range(steps):
        out.extend(sim.step())
    return out


def _dict_book(snapshot: bytes) -> tuple[int, dict[float, float], dict[float, float]]:
    snap = json.loads(snapshot)
    return (snap["lastUpdateId"], {float(p): float(q) for p, q in snap["bids"]},
            {float(p): float(q) for p, q in snap["asks"]})


def _apply(book: dict[float, float], levels: list[list[str]]) -> None:
    for price, qty in levels:
        if float(qty) == 0.0:
            book.pop(float(price), None)
        else:
            book[float(price)] = float(qty)


def _top(bids: dict[float, float], asks: dict[float, float], n: int
         ) -> tuple[np.ndarray, np.ndarray]:
    b = sorted(bids.items(), reverse=True)[:n]
    a = sorted(asks.items())[:n]
    return np.array(b, dtype=float).reshape(-1, 2), np.array(a, dtype=float).reshape(-1, 2)


def test_same_seed_same_bytes_other_seed_differs() -> None:
    first = _run(MarketSimulator(SimConfig(seed=3)), 3000)
    again = _run(MarketSimulator(SimConfig(seed=3)), 3000)
    other = _run(MarketSimulator(SimConfig(seed=4)), 3000)
    assert first == again
    assert [m for _, _, m in first[:200]] != [m for _, _, m in other[:200]]


def test_sequence_numbers_and_message_layout() -> None:
    sim = MarketSimulator(SimConfig(seed=11))
    prev_u = json.loads(sim.snapshot())["lastUpdateId"]
    prev_trade = 0
    prev_ts = 0
    counts = {"depthUpdate": 0, "trade": 0, "bookTicker": 0}
    for ts, stream, message in _run(sim, 4000):
        envelope = json.loads(message)
        data = envelope["data"]
        assert envelope["stream"] == stream
        assert ts >= prev_ts
        prev_ts = ts
        assert data["E"] == ts // 1_000_000
        counts[data["e"]] += 1
        if data["e"] == "depthUpdate":
            assert stream == "btcusdt@depth@0ms"
            assert data["pu"] == prev_u, "pu must equal the previous message's u"
            assert prev_u < data["U"] <= data["u"]
            assert len(data["b"]) + len(data["a"]) <= data["u"] - data["U"] + 1
            prev_u = data["u"]
        elif data["e"] == "trade":
            assert data["t"] == prev_trade + 1 or prev_trade == 0
            prev_trade = data["t"]
            assert float(data["p"]) > 0 and float(data["q"]) > 0
        else:
            assert data["u"] == prev_u
            assert float(data["b"]) < float(data["a"])
    assert all(counts[k] > 100 for k in counts), counts
    assert sim.last_update_id == prev_u


def test_snapshot_plus_deltas_rebuild_the_book_mid_stream() -> None:
    """Take the REST snapshot at an arbitrary point; the deltas after it rebuild the
    simulator's own book exactly, and every bookTicker matches the rebuilt top of book."""
    sim = MarketSimulator(SimConfig(seed=5, levels=30))
    _run(sim, 1500)
    last_id, bids, asks = _dict_book(sim.snapshot(limit=1000))
    tickers = 0
    for _, _, message in _run(sim, 5000):
        data = json.loads(message)["data"]
        if data["e"] == "depthUpdate":
            assert data["pu"] == last_id
            last_id = data["u"]
            _apply(bids, data["b"])
            _apply(asks, data["a"])
        elif data["e"] == "bookTicker":
            tickers += 1
            best_bid = max(bids)
            best_ask = min(asks)
            assert (float(data["b"]), float(data["B"])) == (best_bid, bids[best_bid])
            assert (float(data["a"]), float(data["A"])) == (best_ask, asks[best_ask])
    assert tickers > 100
    want_bids, want_asks = _top(bids, asks, 10_000)
    got_bids, got_asks = sim.top(10_000)
    np.testing.assert_array_equal(got_bids, want_bids)
    np.testing.assert_array_equal(got_asks, want_asks)
    assert max(bids) < min(asks), "crossed book"


def _abs_return_autocorrelation(garch_alpha: float, garch_beta: float) -> float:
    """Mean autocorrelation (lags 1..5) of |mid return| per vol step, 1500 steps, seed 1."""
    cfg = SimConfig(seed=1, garch_alpha=garch_alpha, garch_beta=garch_beta, limit_rate=200.0,
                    cancel_rate=150.0, market_rate=20.0, place_p=0.2, step_ticks_sd=6.0)
    sim = MarketSimulator(cfg)
    step_ns = cfg.vol_step_ms * 1_000_000
    mids = []
    next_ns = sim.time_ns
    while len(mids) < 1500:
        sim.step()
        if sim.time_ns >= next_ns:
            bid, _, ask, _ = sim._best()
            mids.append((bid + ask) / 2)
            next_ns += step_ns
    r = np.abs(np.diff(np.asarray(mids)))
    r = r - r.mean()
    return float(np.mean([np.dot(r[k:], r[:-k]) / np.dot(r, r) for k in range(1, 6)]))


def test_volatility_clusters() -> None:
    """GARCH(1,1) variance makes |returns| persist; a constant variance does much less."""
    clustered = _abs_return_autocorrelation(0.15, 0.8)
    constant = _abs_return_autocorrelation(0.0, 0.0)
    assert clustered > 0.1
    assert clustered > constant + 0.03


@pytest.mark.parametrize("kwargs", [
    {"garch_alpha": 0.5, "garch_beta": 0.6}, {"place_p": 1.0}, {"limit_rate": 0.0},
    {"tick_units": 0}, {"symbol": "BTC/USDT"}, {"venue": "coinbase"}, {"book_depth": 25},
])
def test_bad_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**kwargs)


def test_bybit_format_snapshot_plus_deltas_rebuild_the_top_levels() -> None:
    """Bybit v5: a snapshot of the top `book_depth` levels, then deltas with u + 1 each whose
    changes (size 0 = level left the window) keep a dict copy equal to the simulator's top."""
    sim = MarketSimulator(SimConfig(seed=9, venue="bybit", book_depth=50))
    _run(sim, 500)
    snap = json.loads(sim.bybit_snapshot())
    assert snap["topic"] == "orderbook.50.BTCUSDT" and snap["type"] == "snapshot"
    assert 0 < len(snap["data"]["b"]) <= 50 and 0 < len(snap["data"]["a"]) <= 50
    u = snap["data"]["u"]
    bids = {float(p): float(q) for p, q in snap["data"]["b"]}
    asks = {float(p): float(q) for p, q in snap["data"]["a"]}
    trades = 0
    for _, topic, message in _run(sim, 4000):
        doc = json.loads(message)
        assert doc["topic"] == topic
        if topic == "publicTrade.BTCUSDT":
            trades += len(doc["data"])
            assert {t["S"] for t in doc["data"]} <= {"Buy", "Sell"}
            continue
        assert doc["type"] == "delta" and doc["data"]["u"] == u + 1
        u = doc["data"]["u"]
        _apply(bids, doc["data"]["b"])
        _apply(asks, doc["data"]["a"])
        assert len(bids) <= 50 and len(asks) <= 50
    assert trades > 100
    want_bids, want_asks = _top(bids, asks, 50)
    got_bids, got_asks = sim.top(50)
    np.testing.assert_array_equal(got_bids, want_bids)
    np.testing.assert_array_equal(got_asks, want_asks)
