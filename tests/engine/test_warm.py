"""PathWarmer: shadow messages keep the path warm and never touch the run's own state."""

from __future__ import annotations

import logging
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.strategy import EmaCross
from workbench.errors import ConfigError
from workbench.feed.replay import ReplayFeed
from workbench.feed.venues import normalizer_for

RECORDING = "binance/hftbacktest/spot/btcusdt_20240808.gz"
MESSAGES = 6000
# never started: a ws: source names the venue (binance spot) whatever data the machine has
SOURCE = "ws:ws://127.0.0.1:9/stream"
WARM_CONFIG = {"source": SOURCE, "out_dir": None, "feed_spin": True, "feed_warm_us": 300.0}


@pytest.fixture(scope="module")
def messages(shared_data: Path) -> list[bytes]:
    return [m for _, m in islice(ReplayFeed(shared_data / RECORDING, None), MESSAGES)]


def _drive(engine: Engine, messages: list[bytes], warm_runs: int) -> None:
    """The feed thread's work, inline: each message normalized and submitted (callback), then
    `warm_runs` idle-time warm runs, as the spinning feed thread would make between reads."""
    normalizer = normalizer_for(engine.venue)
    warmer = engine._warmer
    for message in messages:
        batch = normalizer.normalize(message, time.perf_counter_ns())
        if len(batch):
            engine.dispatcher.submit(batch, normalizer.last)
            if warmer is not None:
                warmer.remember(message, normalizer.last.channel)
                for _ in range(warm_runs):
                    warmer()


def _state(engine: Engine) -> tuple:
    engine.latency.fold()
    book = engine.sync.book(next(iter(engine.sync.books)))
    return (engine.events, engine.batches,
            [(f.seq, f.side, f.price, f.qty, f.fee, f.liquidity) for f in engine.executor.fills],
            engine.positions.totals(), engine.strategy._state, book.top(),
            engine.latency.summary()["tick_to_trade"]["count"], dict(vars(engine.sync.stats)))


def test_shadow_messages_leave_the_run_untouched(messages):
    plain = Engine(EngineConfig(source=SOURCE, out_dir=None))
    warm = Engine(EngineConfig(**WARM_CONFIG))
    assert plain._warmer is None and warm._warmer is not None
    assert warm.venue == plain.venue == "binance"
    _drive(plain, messages, 0)
    _drive(warm, messages, 3)
    assert _state(warm) == _state(plain)
    assert len(plain.executor.fills) > 0  # the comparison covers trading, not just books
    # ... while the shadow really ran the path: its own books, strategy, orders, latency rows
    warmer, shadow = warm._warmer, warm._warmer.shadow
    assert warmer.error == ""
    assert warmer.runs > 2 * len(messages)
    assert shadow.batches == warmer.runs
    (sid, shadow_book), = shadow.sync.books.items()
    assert shadow_book.valid and shadow_book is not warm.sync.book(sid)
    assert abs(shadow_book.mid - warm.sync.book(sid).mid) < 0.01 * warm.sync.book(sid).mid
    assert shadow.strategy is not warm.strategy and shadow.strategy._state[sid][2] > 100
    shadow.latency.fold()
    assert shadow.latency.summary()["tick_to_trade"]["count"] > 0


def test_a_failing_warmer_stops_warming_not_the_run(messages, caplog):
    engine = Engine(EngineConfig(**WARM_CONFIG))
    warmer = engine._warmer
    calls = []

    def broken(batch, info):
        calls.append(len(batch))
        raise RuntimeError("shadow broke")

    warmer.shadow.dispatcher.submit = broken
    with caplog.at_level(logging.ERROR, logger="workbench.engine"):
        _drive(engine, messages[:3000], 2)
    assert len(calls) == 1  # the first failure ends warming
    assert "RuntimeError: shadow broke" in warmer.error
    assert any("path warmer failed" in r.getMessage() for r in caplog.records)
    assert engine.batches > 2000 and engine.executor.fills  # the run itself went on


class Locked(EmaCross):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def test_a_strategy_that_cannot_be_copied_is_refused_with_the_field():
    with pytest.raises(ConfigError, match=r"^feed_warm_us: the strategy must be copyable"):
        Engine(EngineConfig(**WARM_CONFIG), strategy=Locked())
    Engine(EngineConfig(source=SOURCE, out_dir=None, feed_spin=True), strategy=Locked())


def test_a_spinning_run_warms_its_path_and_records_it():
    engine = Engine(EngineConfig(**{**WARM_CONFIG, "source": "sim"})).start()
    time.sleep(1.5)
    status = engine.stop()
    assert status.state == "stopped" and status.events > 0
    assert status.warm_runs > 100 and engine._warmer.error == ""
    assert engine._warmer.shadow.batches == status.warm_runs
    assert engine.summary()["tuning"]["feed_warm_us"] == 300.0
