"""The engine's Python Strategy protocol runs unchanged in the tick backtester, and gives the
same fills as the same logic compiled (EmaCross vs compiled.CompiledEmaCross, market orders,
then post-only limits at the touch)."""

from __future__ import annotations

import pytest

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.engine.compiled import CompiledEmaCross
from workbench.engine.strategy import EmaCross
from workbench.errors import ConfigError


def _fills(result):
    return result.fills.select("order_id", "side", "price", "qty", "ts_exch_ns").rows()


@pytest.mark.parametrize("order_type", ["market", "limit"])
def test_python_ema_cross_matches_the_compiled_one(usdm_events, order_type):
    cfg = TickConfig(latency=ConstantLatency(500_000, 500_000), queue="power",
                     taker_fee_bps=4.0)
    python = tick_backtest(usdm_events, EmaCross(5, 40, 0.01, order_type), cfg)
    compiled = tick_backtest(usdm_events, CompiledEmaCross(5, 40, 0.01,
                                                            int(order_type == "market")), cfg)
    assert python.feeds == compiled.feeds
    assert len(python.fill_columns["qty"]) > 20
    assert _fills(python) == _fills(compiled)
    assert python.pnl() == compiled.pnl()


def test_neither_kind_of_strategy_is_refused(usdm_events):
    with pytest.raises(ConfigError, match="neither"):
        tick_backtest(usdm_events, object())
