"""CompiledAdapter: compiled strategies in the live engine, unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from workbench.engine.adapter import CompiledAdapter, _fill, _step
from workbench.engine.compiled import CompiledEmaCross, Quoter
from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.strategy import EmaCross

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"


def _replay(recording: Path, strategy, **fields) -> Engine:
    cfg = EngineConfig(**{"source": f"replay:{recording}", "speed": 0, "out_dir": None,
                          **fields})
    engine = Engine(cfg, strategy=strategy).start()
    assert engine.wait(180), "the replay did not finish"
    engine.stop()
    assert engine.strategy_errors == 0, engine.last_strategy_traceback
    return engine


def test_compiled_ema_cross_trades_as_the_python_one(shared_data):
    """Same recording, same engine settings: the compiled EmaCross (market orders) sends the
    same orders at the same messages as the Python EmaCross, so the fills are equal."""
    rec = shared_data / USDM
    fields = {"ema_fast": 5, "ema_slow": 40, "target_qty": 0.01, "max_position": 0.05,
              "max_orders_per_s": 1e6}
    py = _replay(rec, EmaCross(5, 40, 0.01), **fields)
    adapter = CompiledAdapter(CompiledEmaCross(5, 40, 0.01, 1), 0.1, 0.001)
    compiled = (len(_step.signatures), len(_fill.signatures))
    comp = _replay(rec, adapter, **fields)
    # nothing compiled on the trading path: the batch step and the fill step (with the
    # strategy's on_fill) were compiled when the adapter was built
    assert compiled[1] >= 1 and (len(_step.signatures), len(_fill.signatures)) == compiled

    def fills(engine):
        return [(f.seq, f.side, f.price, f.qty, f.liquidity) for f in engine.executor.fills]

    assert py.executor.fill_count > 20
    assert fills(comp) == fills(py)
    sid = next(iter(comp.sync.books))
    assert adapter.gw.position == pytest.approx(comp.positions.qty(sid))


def test_quoter_quotes_and_cancels_through_the_engine(shared_data):
    """The Quoter's post-only quotes and cancels go through the Executor; every order but the
    (at most two) live ones ends cancelled, and the gateway's fills and position are the
    engine's. (The PaperBroker's cancels travel with its latency, 1 ms here, and without a queue
    model it fills a resting order when the opposite best reaches it: the quotes that fill are
    those the book crossed while their cancel was in flight, which then arrives too late.)"""
    adapter = CompiledAdapter(Quoter(0.001, 0.005), 0.1, 0.001)
    engine = _replay(shared_data / USDM, adapter, max_position=0.05, max_orders_per_s=1e6,
                     broker_latency_us=1000.0)
    sid = next(iter(engine.sync.books))
    sent = engine.executor.orders_sent
    assert sent > 100
    assert adapter.strategy.next_id == sent + 1
    live = engine.broker.orders_active(sid)
    assert len(live) <= 2
    assert adapter.gw.n_orders == len(live)
    assert adapter.gw.n_fills == engine.executor.fill_count
    assert adapter.gw.position == pytest.approx(engine.positions.qty(sid))
    assert engine.status().cancels_rejected == engine.broker.cancels_rejected > 0
    assert engine.summary()["cancels_rejected"] == engine.broker.cancels_rejected


def test_runs_live_on_the_simulator():
    adapter = CompiledAdapter(CompiledEmaCross(2, 5, 0.01, 1), 0.1, 0.001)
    engine = Engine(EngineConfig(source="sim", out_dir=None, max_orders_per_s=1e6),
                    strategy=adapter).start()
    deadline = time.monotonic() + 30
    while engine.executor.orders_sent < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    status = engine.stop()
    assert engine.executor.orders_sent >= 3, status
    assert engine.strategy_errors == 0, engine.last_strategy_traceback
    assert status.state == "stopped"
