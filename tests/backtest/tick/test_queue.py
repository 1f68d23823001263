"""Queue models, hand-computed: a resting order with 5 ahead and 4 behind (level 9) sees the
level fall to 7 with no trade (chg = 2); each model moves it to front = 3 + 2p (the formula in
workbench.engine.queue_models: 5 - (1 - p) * 2 + min(4 - 2p, 0)), p per model with n = 2."""

from __future__ import annotations

import math

import pytest

from workbench.engine import queue_models as qm
from workbench.engine.queue_models import QueueModel

P = {
    QueueModel.POWER: 16 / (16 + 25),
    QueueModel.LOG: math.log(5) / (math.log(5) + math.log(6)),
    QueueModel.POWER2: 16 / 81,
    QueueModel.LOG2: math.log(5) / math.log(10),
    QueueModel.POWER3: 1 - (5 / 9) ** 2,
}


@pytest.mark.parametrize("model", list(P))
def test_probabilistic_decrease_is_split_by_p(model):
    assert qm.prob(int(model), 2.0, 5.0, 4.0) == pytest.approx(P[model], rel=1e-12)
    front, cum = qm.on_depth(int(model), 2.0, 5.0, 0.0, 9.0, 7.0)
    assert front == pytest.approx(3 + 2 * P[model], rel=1e-12)
    assert cum == 0.0


def test_risk_averse_only_shrinks_to_the_level():
    assert qm.on_depth(int(QueueModel.RISK_AVERSE), 0.0, 5.0, 0.0, 9.0, 7.0) == (5.0, 0.0)
    assert qm.on_depth(int(QueueModel.RISK_AVERSE), 0.0, 5.0, 0.0, 9.0, 3.0) == (3.0, 0.0)


def test_trades_move_the_queue_and_are_not_counted_twice():
    front, cum = qm.on_trade(5.0, 0.0, 2.0)
    assert (front, cum) == (3.0, 2.0)
    # the level then shows the trade (9 -> 7): nothing left to split, front unchanged
    front, cum = qm.on_depth(int(QueueModel.POWER), 2.0, front, cum, 9.0, 7.0)
    assert (front, cum) == (3.0, 0.0)


def test_increase_keeps_the_queue_and_a_big_decrease_caps_it():
    assert qm.on_depth(int(QueueModel.LOG), 0.0, 5.0, 0.0, 9.0, 12.0) == (5.0, 0.0)
    # 9 -> 1 (chg 8): 5 - (1 - p) * 8 + min(4 - 8p, 0) with p = 16/41: 4 - 8p > 0
    p = P[QueueModel.POWER]
    front, _ = qm.on_depth(int(QueueModel.POWER), 2.0, 5.0, 0.0, 9.0, 1.0)
    assert front == pytest.approx(5 - (1 - p) * 8, rel=1e-12)
    # 9 -> 3 with risk-averse-like p = 0 (nothing behind): capped at the level
    assert qm.on_depth(int(QueueModel.POWER), 2.0, 9.0, 0.0, 9.0, 3.0)[0] == 3.0


def test_executable_rounds_to_lots():
    assert qm.executable(0.0, 0.001) == 0.0
    assert qm.executable(-0.0004, 0.001) == 0.0
    assert qm.executable(-0.0026, 0.001) == pytest.approx(0.003)


@pytest.mark.parametrize("model", list(P))
def test_an_empty_level_is_not_a_division_error(model):
    """front = back = 0 and the level drops from 0 to 0 - 1e-9 ... here 0 -> 0 with a trade
    counted: chg = -cum < 0 is an increase; and 0 -> 0 with cum 0: chg = 0, p = 0/0."""
    front, cum = qm.on_depth(int(model), 2.0, 0.0, 0.0, 0.0, 0.0)
    assert (front, cum) == (0.0, 0.0)
