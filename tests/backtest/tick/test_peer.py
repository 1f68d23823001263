"""Against a peer: hftbacktest 2.4 and our tick backtester give the same fills.

Same data: the converted Binance USD-M BTCUSDT recording (events.convert: our normalizer and
book sequencing, the clock correction and the two-timeline merge), mapped row for row to
hftbacktest's event_dtype (`peer.to_hbt`), so both engines read identical rows. Same settings:
constant order latency 1 ms each way, risk-averse queue, no partial fills, no fees, the ROI
`backtest.default_roi` (median price +-25%) in both (hftbacktest's ROIVectorMarketDepth), tick
0.1 and lot 0.001. Same logic:
`compiled.Quoter` in ours, `peer.hbt_quoter` (the same decisions through hftbacktest's API,
feed by feed with `wait_next_feed(include_order_resp=False)`) in theirs.

Compared per fill: order id, side, price tick, quantity, exchange time (ns), maker flag, and
the number of feed calls. Remaining differences: none. (hftbacktest's order hash maps iterate
in no fixed order, so fills of one timestamp are compared sorted by order id.)
"""

from __future__ import annotations

import numpy as np
import pytest

hftbacktest = pytest.importorskip("hftbacktest")  # the bench/test extra

from workbench.backtest.tick import ConstantLatency, TickConfig, tick_backtest  # noqa: E402
from workbench.backtest.tick.backtest import default_roi  # noqa: E402
from workbench.backtest.tick.peer import hbt_backtest, hbt_quoter, to_hbt  # noqa: E402
from workbench.engine.compiled import Quoter  # noqa: E402


def test_same_fills_as_hftbacktest(usdm_events):
    meta = usdm_events.meta
    sid = meta.symbol_id("BTCUSDT")
    key = str(sid)
    tick, lot = meta.tick_size[key], meta.lot_size[key]
    assert (tick, lot) == (0.1, 0.001)
    roi = default_roi(meta, sid)
    events = to_hbt(np.asarray(usdm_events.rows), sid)  # hftbacktest keeps only a pointer
    hbt = hbt_backtest(events, tick, lot, roi, 1_000_000, 1_000_000)
    out = np.zeros((100_000, 6))
    n, feeds = hbt_quoter(hbt, 0.001, 0.005, out)
    theirs = out[:n]

    result = tick_backtest(usdm_events, Quoter(0.001, 0.005),
                           TickConfig(latency=ConstantLatency(1_000_000, 1_000_000), roi=roi,
                                      symbol="BTCUSDT"))
    f = result.fill_columns
    ours = np.column_stack([f["order_id"], f["side"], np.round(f["price"] / tick), f["qty"],
                            f["ts_exch_ns"], f["maker"]]).astype(np.float64)
    theirs = theirs[np.lexsort((theirs[:, 0], theirs[:, 4]))]
    ours = ours[np.lexsort((ours[:, 0], ours[:, 4]))]
    assert n > 500  # the quoter trades all session
    assert result.feeds == feeds
    assert len(ours) == len(theirs)
    assert np.array_equal(ours, theirs)
    del hbt, events
