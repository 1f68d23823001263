"""Sources: each kind opens, submits one batch per message with its MessageInfo, and closes;
the simulator's seed reaches SimExchange."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from workbench.engine.config import SourceConfig, TuningConfig
from workbench.engine.sources import (
    MessageCutter,
    RingSource,
    SimSource,
    info_of,
    make_source,
    resolve_venue,
)
from workbench.errors import ConfigError
from workbench.events import (
    EVENT_DTYPE,
    F_LAST,
    F_SNAPSHOT,
    K_ASK,
    K_BID,
    K_SNAP_BEGIN,
    K_SNAP_END,
    K_TRADE,
    M_DELTA,
    M_OTHER,
    M_SNAPSHOT,
)

MESSAGES = 300


def _stream(seed: int) -> list[tuple]:
    """The first MESSAGES messages the `sim` source submits with this seed, flat out, as
    (kind, price, qty, venue_seq) per event."""
    source = make_source(SourceConfig("sim", seed=seed, speed=0.0), TuningConfig())
    assert isinstance(source, SimSource)
    stop = threading.Event()
    got: list[tuple] = []

    def submit(batch: np.ndarray, info) -> None:
        if len(got) < MESSAGES:
            got.append(tuple(zip(batch["kind"].tolist(), batch["price"].tolist(),
                                 batch["qty"].tolist(), batch["venue_seq"].tolist(),
                                 strict=True)))
        if len(got) >= MESSAGES:
            stop.set()

    source.open(submit, stop)
    feed = threading.Thread(target=source.run)
    feed.start()
    try:
        assert stop.wait(60), f"only {len(got)} messages in 60 s"
    finally:
        stop.set()
        feed.join(30)
        source.close(5.0)
    assert not feed.is_alive()
    return got


def test_the_seed_reaches_the_simulator():
    first, again, other = _stream(11), _stream(11), _stream(12)
    assert len(first) == len(other) == MESSAGES
    assert first == again
    assert first != other


def test_a_missing_replay_file_is_a_config_error(tmp_path):
    source = make_source(SourceConfig(f"replay:{tmp_path / 'none.gz'}"), TuningConfig())
    with pytest.raises(ConfigError, match="does not exist"):
        source.open(lambda batch, info: None, threading.Event())


def test_venue_resolution():
    assert resolve_venue(SourceConfig("sim")) == "binance-usdm"
    assert resolve_venue(SourceConfig("sim", venue="bybit")) == "bybit"
    assert resolve_venue(SourceConfig("replay:/d/binance/usdm/x.gz")) == "binance-usdm"
    assert resolve_venue(SourceConfig("replay:/d/binance/cm/x.gz")) == "binance-coinm"
    assert resolve_venue(SourceConfig("replay:/d/binance/spot/x.gz")) == "binance"
    assert resolve_venue(SourceConfig("ring:wb-x")) == "tardis"
    assert RingSource(SourceConfig("ring:wb-x")).upstream_stamped


def _events(kinds: list[int], flags: list[int]) -> np.ndarray:
    out = np.zeros(len(kinds), dtype=EVENT_DTYPE)
    out["kind"], out["flags"], out["symbol_id"] = kinds, flags, 3
    out["venue_seq"] = np.arange(len(kinds)) + 100
    return out


def test_ring_reads_are_cut_into_whole_messages_with_their_info():
    snapshot = _events([K_SNAP_BEGIN, K_BID, K_ASK, K_SNAP_END],
                       [F_SNAPSHOT] * 3 + [F_SNAPSHOT | F_LAST])
    delta = _events([K_BID, K_ASK], [0, F_LAST])
    trade = _events([K_TRADE], [F_LAST])
    stream = np.concatenate((snapshot, delta, trade))
    cutter = MessageCutter()
    # a read that ends inside the delta: its head waits for the next read
    first = cutter.cut(stream[:5])
    second = cutter.cut(stream[5:])
    messages = first + second
    assert [len(m) for m in messages] == [4, 2, 1]
    assert np.array_equal(np.concatenate(messages), stream)
    assert [info_of(m).kind for m in messages] == [M_SNAPSHOT, M_DELTA, M_OTHER]
    assert info_of(delta).symbol_id == 3 and info_of(delta).first_id == 100
    # a producer that went quiet mid-message: the tail comes out as it is
    assert cutter.cut(delta[:1]) == []
    tail = cutter.flush()
    assert len(tail) == 1 and np.array_equal(tail[0], delta[:1])
    assert cutter.flush() == []


def test_the_wire_stage_is_measured_for_live_websockets_only():
    """`sim` serves simulated exchange times (far from this machine's clock): no wire rows;
    the other stages are measured."""
    from workbench import Engine, EngineConfig, Stage

    engine = Engine(EngineConfig(source="sim", speed=20.0, duration_s=1.5, out_dir=None))
    engine.start().wait(30)
    status = engine.stop(timeout_s=10)
    assert status.error is None and status.latency[Stage.TICK_TO_TRADE].count > 0
    assert status.latency[Stage.WIRE].count == 0
