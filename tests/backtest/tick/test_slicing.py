"""Sliced-with-jitter parents in the tick kernel, on hand-written rows (tick 1, lot 1).

Book at t=100: bid 99 x 5, ask 101 x 4; a bid level update every 10 ns from t=110 to t=200
(quantity 5 again: nothing changes but the feed ticks), then a sell trade of 9 at 99 at t=205.
Latency 1 ns each way. A parent buy of 3 in 3 children with a fixed 20 ns delay: children at
t=100, 120, 140 (the first feeds at or after each due time), all at 99, ids 1000..1002, each
joining with the level's 5 ahead (our own orders are not in the recorded depth); the t=205 sell
trade of 9 leaves each 5 - 9 = -4: through the queue, all three fill."""

from __future__ import annotations

import itertools

import pytest
from tickrows import rows_of

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest
from workbench.backtest.tick.slicing import ParentOrders, slicing_report

BOOK = [("snap", 0, 0.0, 0.0, 100), ("bid", 0, 99.0, 5.0, 100), ("ask", 0, 101.0, 4.0, 100)]
BOOK += [("bid", 0, 99.0, 5.0, t) for t in range(110, 201, 10)]
BOOK += [("trade", 2, 99.0, 9.0, 205), ("bid", 0, 99.0, 5.0, 300)]


def test_children_go_out_after_their_delays_and_fill_in_queue_order():
    strategy = ParentOrders(3.0, 3, 1000.0, 1000.0, 20, 20, 1)
    r = tick_backtest(rows_of(BOOK), strategy, TickConfig(latency=ConstantLatency(1, 1)))
    orders = r.orders.sort("order_id").select("order_id", "price", "qty", "ts_sent_ns",
                                              "queue_ahead").rows()
    assert orders == [(1000, 99.0, 1.0, 100, 5.0), (1001, 99.0, 1.0, 120, 5.0),
                      (1002, 99.0, 1.0, 140, 5.0)]
    fills = r.fills.sort("order_id").select("order_id", "ts_exch_ns").rows()
    assert fills == [(1000, 205), (1001, 205), (1002, 205)]
    report = slicing_report(r, strategy)
    assert report["parents"] == 1 and report["fill_ratio"] == 1.0
    # bought at 99 against a decision mid of 100: 1 USDT better, -100 bps
    assert report["slippage_bps"] == pytest.approx(-100.0)


def test_jittered_delays_stay_in_range_and_repeat_with_the_seed():
    def sent(seed):
        s = ParentOrders(3.0, 3, 1000.0, 1000.0, 10, 30, seed)
        r = tick_backtest(rows_of(BOOK), s, TickConfig(latency=ConstantLatency(1, 1)))
        return r.orders.sort("order_id")["ts_sent_ns"].to_list()

    a = sent(3)
    assert a == sent(3)
    assert len(a) == 3 and a[0] == 100
    gaps = [b - a_ for a_, b in itertools.pairwise(a)]
    assert all(10 <= g <= 40 for g in gaps)  # due after 10..30 ns, sent at the next 10 ns feed
