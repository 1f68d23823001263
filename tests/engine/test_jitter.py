"""Executor slicing with jitter: children held and released by market time."""

from __future__ import annotations

import pytest

from workbench.engine.broker import PaperBroker
from workbench.engine.execution import Executor
from workbench.engine.jitter import JitterSlicing
from workbench.engine.positions import Positions
from workbench.engine.risk import RiskLimits
from workbench.engine.strategy import OrderRequest
from workbench.errors import ConfigError
from workbench.events import Side

MS = 1_000_000


def _executor(jitter: JitterSlicing | None) -> Executor:
    ex = Executor(PaperBroker(), RiskLimits(max_position=10.0, max_orders_per_s=1e6),
                  Positions())
    ex.set_jitter(jitter)
    return ex


def test_large_orders_go_out_as_children_over_time():
    ex = _executor(JitterSlicing(0.5, 10, 5.0, 15.0, seed=1))
    t0 = 1_000 * MS
    assert ex.submit([OrderRequest(1, Side.BUY, 1.0, tag="big")], t0) == 1  # the first child
    assert len(ex.deferred) == 9
    due = sorted(d[0] for d in ex.deferred)
    gaps = [b - a for a, b in zip([t0, *due[:-1]], due, strict=True)]
    assert all(5 * MS <= g <= 15 * MS for g in gaps)
    assert ex.release(t0 + 4 * MS) == 0
    assert ex.release(due[2]) == 3  # the children due by then
    assert ex.release(t0 + 1_000 * MS) == 6
    assert ex.deferred == []
    assert ex.orders_sent == 10
    sent = [o.request for o in ex.broker.orders.values()]
    assert [r.qty for r in sent] == pytest.approx([0.1] * 10)
    assert {r.tag for r in sent} == {"big"}


def test_small_orders_and_seeds():
    ex = _executor(JitterSlicing(0.5, 10, 5.0, 15.0, seed=1))
    assert ex.submit([OrderRequest(1, Side.SELL, 0.4)], 0) == 1 and ex.deferred == []

    def dues(seed):
        e = _executor(JitterSlicing(0.5, 10, 5.0, 15.0, seed=seed))
        e.submit([OrderRequest(1, Side.BUY, 0.5)], 0)
        return sorted(d[0] for d in e.deferred)

    assert dues(3) == dues(3) != dues(4)


def test_flatten_drops_held_children():
    ex = _executor(JitterSlicing(0.5, 4, 5.0, 15.0))
    ex.submit([OrderRequest(1, Side.BUY, 2.0), OrderRequest(2, Side.BUY, 2.0)], 0)
    assert len(ex.deferred) == 6
    ex.flatten(1, 0)
    assert {d[2].symbol_id for d in ex.deferred} == {2}


def test_bad_settings():
    with pytest.raises(ConfigError):
        JitterSlicing(children=0)
    with pytest.raises(ConfigError):
        JitterSlicing(delay_min_ms=10, delay_max_ms=5)
