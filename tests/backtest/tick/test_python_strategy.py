"""The engine's Python Strategy protocol runs unchanged in the tick backtester, and gives the
same fills as the same logic compiled (EmaCross vs compiled.CompiledEmaCross, market orders,
then post-only limits at the touch)."""

from __future__ import annotations

import pytest
from tickrows import rows_of

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.engine.compiled import BUY, MAX_ORDERS, SELL, CompiledEmaCross
from workbench.engine.strategy import EmaCross, OrderRequest
from workbench.errors import ConfigError
from workbench.events import Side

FEEDS = 3 * MAX_ORDERS


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


class Alternating:
    """A market buy of 1 at every even call with a two-sided book, a market sell at every odd
    one: far more orders in a run than the gateway holds live (MAX_ORDERS)."""

    def __init__(self) -> None:
        self.calls = 0

    def on_events(self, book, batch):
        if not book.best_bid < book.best_ask:
            return []
        side = Side.BUY if self.calls % 2 == 0 else Side.SELL
        self.calls += 1
        return [OrderRequest(book.symbol_id, side, 1.0)]


def test_a_python_strategy_sends_more_orders_than_the_gateway_holds():
    """The host drops finished orders from the gateway (pyhost docstring), so every one of
    FEEDS market orders reaches the exchange. Feed i (time i) moves the touch to bid 100 + i,
    ask 102 + i (5 each); with entry latency 0 an order sent at feed i meets that book (one
    timeline: exchange time = local time), so call i's order fills 1 at 102 + i (a buy, even
    i) or 100 + i (a sell); the kernel makes no call at the last feed."""
    spec = []
    for i in range(FEEDS):
        spec += [("bid", 0, 100 + i, 5, i), ("ask", 0, 102 + i, 5, i)]
        if i:
            spec += [("bid", 0, 99 + i, 0, i), ("ask", 0, 101 + i, 0, i)]
    cfg = TickConfig(latency=ConstantLatency(0, 1), partial=True, roi=(99, 102 + FEEDS))
    result = tick_backtest(rows_of(spec), Alternating(), cfg)
    assert len(result.order_columns["order_id"]) == FEEDS - 1 > MAX_ORDERS
    f = result.fill_columns
    got = list(zip(f["order_id"].tolist(), f["side"].tolist(), f["price"].tolist(),
                   f["qty"].tolist(), f["ts_exch_ns"].tolist(), strict=True))
    assert got == [(i + 1, BUY if i % 2 == 0 else SELL, 102.0 + i if i % 2 == 0 else 100.0 + i,
                    1.0, i) for i in range(FEEDS - 1)]
