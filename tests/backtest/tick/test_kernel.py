"""The tick kernel on hand-written rows, every figure computed by hand.

Book at t=100 (tick 1, lot 1): bid 99 x 5, ask 101 x 4. Order latency 10 ns in, 5 ns back;
the feed has no latency (local = exchange time). Rows after it: t=200 buy trade 101 x 1,
t=300 bid 99 -> 9, t=400 bid 99 -> 7, t=500 sell trade 99 x 5, t=600 sell trade 99 x 1,
t=700 ask 100 x 2, t=800 bid 102 x 1 (crosses: the best bid jumps to 102).
"""

from __future__ import annotations

import math

import pytest
from tickrows import rows_of, scripted

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.engine.compiled import EXPIRED, FILLED, GTC, GTX, IOC, LIMIT, MARKET, NEW

BOOK = [("snap", 0, 0.0, 0.0, 100), ("bid", 0, 99.0, 5.0, 100), ("ask", 0, 101.0, 4.0, 100),
        ("trade", 1, 101.0, 1.0, 200), ("bid", 0, 99.0, 9.0, 300), ("bid", 0, 99.0, 7.0, 400),
        ("trade", 2, 99.0, 5.0, 500), ("trade", 2, 99.0, 1.0, 600), ("ask", 0, 100.0, 2.0, 700),
        ("bid", 0, 102.0, 1.0, 800)]
ORDERS = [
    (1, 1, 1, 101.0, 1.0, LIMIT, GTX),  # post-only buy at the ask: expires
    (1, 2, 1, 99.0, 1.0, LIMIT, GTX),  # joins the bid: 5 ahead
    (1, 3, -1, 99.0, 2.0, LIMIT, GTC),  # sell at the bid: takes it
    (1, 4, -1, 102.0, 1.0, LIMIT, GTX),  # rests above the ask: filled when the bid reaches 102
    (2, 5, 1, 0.0, 1.0, MARKET, IOC),  # market buy at t=200: the ask, 101
]


def _run(queue="risk_averse", orders=ORDERS, partial=False, **kw):
    cfg = TickConfig(latency=ConstantLatency(10, 5), queue=queue, prob_n=2.0, partial=partial,
                     maker_fee_bps=2.0, taker_fee_bps=5.0, **kw)
    return tick_backtest(rows_of(BOOK), scripted(orders), cfg)


def _fills(result):
    f = result.fills.sort("ts_exch_ns", "order_id")
    return f.select("order_id", "side", "price", "qty", "maker", "ts_exch_ns",
                    "ts_local_ns").rows()


def test_risk_averse_no_partial():
    r = _run()
    assert _fills(r) == [
        (3, -1, 99.0, 2.0, False, 110, 115),
        (5, 1, 101.0, 1.0, False, 210, 215),
        (2, 1, 99.0, 1.0, True, 600, 605),  # 5 ahead: the 5 traded at t=500 leave 0, not < 0
        (4, -1, 102.0, 1.0, True, 800, 805),
    ]
    orders = {row[0]: row for row in r.orders.select("order_id", "status", "queue_ahead",
                                                       "ts_sent_ns", "ts_exch_ns").rows()}
    assert orders[1][1] == EXPIRED
    assert orders[2][1:] == (NEW, 5.0, 100, 110)
    assert orders[3][1] == FILLED and math.isnan(orders[3][2])
    assert orders[4][1:3] == (NEW, 0.0)
    fees = r.fills.sort("order_id")["fee"].to_list()
    assert fees == pytest.approx([99 * 0.0002, 99 * 2 * 0.0005, 102 * 0.0002, 101 * 0.0005])
    assert r.position == pytest.approx(1 - 2 + 1 - 1)
    assert r.balance == pytest.approx(-99 + 99 * 2 - 101 + 102)


def test_power_queue_fills_earlier():
    """t=400, 9 -> 7 with 5 ahead, 4 behind: front = 3 + 2p, p = 16/41 (n=2), 3.78; the t=500
    trade of 5 leaves -1.22: one lot executable, so order 2 fills at t=500."""
    fills = _fills(_run("power"))
    assert (2, 1, 99.0, 1.0, True, 500, 505) in fills


def test_cancel_and_a_cancel_too_late():
    orders = [(1, 2, 1, 99.0, 1.0, LIMIT, GTX), (1, 4, -1, 102.0, 1.0, LIMIT, GTX),
              (2, 2, 0, 0.0, 0.0, LIMIT, GTC),  # cancel order 2 at t=200: it is still resting
              (9, 4, 0, 0.0, 0.0, LIMIT, GTC)]  # no 9th feed: never sent
    r = _run(orders=orders)
    assert _fills(r) == [(4, -1, 102.0, 1.0, True, 800, 805)]
    assert r.position == -1.0


def test_partial_fills_walk_the_book():
    """A GTC sell of 7 at 98 takes the 5 at 99 (taker), rests 2 at 98 (0 ahead; our fills do
    not deplete the book, so the bid still shows 99); the t=200 buy trade of 1 at 101 prints
    through it: 1 fills (maker, at 98); the bid jumping to 102 at t=800 fills the last 1."""
    r = _run(orders=[(1, 3, -1, 98.0, 7.0, LIMIT, GTC)], partial=True)
    assert _fills(r) == [(3, -1, 99.0, 5.0, False, 110, 115), (3, -1, 98.0, 1.0, True, 200, 205),
                         (3, -1, 98.0, 1.0, True, 800, 805)]
    assert r.position == -7.0


def test_partial_trade_fills_only_the_traded_quantity():
    """A buy of 3 at 100 (inside the spread, nothing ahead) and the t=500 sell trade at 99
    (through it) of 5: without partial fills all 3 fill; with them min(3, 5) = 3 too; the
    t=600 trade of 1 finds nothing left."""
    orders = [(1, 6, 1, 100.0, 3.0, LIMIT, GTX)]
    assert _fills(_run(orders=orders)) == [(6, 1, 100.0, 3.0, True, 500, 505)]
    assert _fills(_run(orders=orders, partial=True)) == [(6, 1, 100.0, 3.0, True, 500, 505)]


def test_latency_moves_every_time():
    cfg = TickConfig(latency=ConstantLatency(150, 40), maker_fee_bps=0, taker_fee_bps=0)
    r = tick_backtest(rows_of(BOOK), scripted(ORDERS[2:3]), cfg)
    # sent at 100, at the exchange at 250 (after the t=200 trade), back at 290
    assert _fills(r) == [(3, -1, 99.0, 2.0, False, 250, 290)]


def test_pnl_attribution_sums_to_total():
    r = _run()
    pnl = r.pnl()
    assert pnl["total"] == pytest.approx(pnl["spread"] + pnl["inventory"] + pnl["fees"],
                                         abs=1e-9)
    # total by hand: cash 99 + 198 - 101 + 102 - fees, position -1 marked at the last mid
    fees = 99 * 0.0002 + 198 * 0.0005 + 102 * 0.0002 + 101 * 0.0005
    mid_end = r.mid_end()
    assert pnl["total"] == pytest.approx(-99 + 198 - 101 + 102 - fees - 1 * mid_end)
    assert pnl["fees"] == pytest.approx(-fees)
    stats = r.stats()
    assert stats["fills"] == 4 and stats["orders"] == 5
    assert stats["fill_ratio"] == pytest.approx(4 / 5)


def test_the_strategy_hears_each_fill_once():
    strategy = scripted(ORDERS)
    tick_backtest(rows_of(BOOK), strategy, TickConfig(latency=ConstantLatency(10, 5)))
    assert strategy.fills == 4
    # 8 local times, each followed by something (the last by order 4's fill response at 805)
    assert strategy.feed == 8


def test_a_last_feed_with_nothing_after_it_gets_no_call():
    strategy = scripted([])
    tick_backtest(rows_of(BOOK), strategy, TickConfig(latency=ConstantLatency(10, 5)))
    assert strategy.feed == 7  # hftbacktest's wait_next_feed: the end of data, no call
