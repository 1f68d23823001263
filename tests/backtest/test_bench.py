"""The backtest benchmark topic: its checks pass on real input and catch a changed trade;
backtrader, running the same TrueBreakout, makes the same trades as phase 3."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.backtest.phases import RawRun, run_phase
from workbench.bench import backtest as bb
from workbench.bench.registry import select
from workbench.errors import PhaseMismatch


@pytest.fixture(scope="module")
def small(shared_data: Path) -> bb.Prepared:
    prep = bb.prepare(True)
    bars = prep.bars.window(0, 180)
    return bb.Prepared(bars, bb.python_bars(bars), prep.p, bb._slice_text(bars))


def test_topic_registers_the_phases_and_backtrader() -> None:
    names = [p.name for p in select(["backtest"])]
    assert names == ["backtest.phase1", "backtest.phase2", "backtest.phase3", "backtest.phase4",
                     "backtest.backtrader"]
    claims = {p.name: (p.claim.ratio_low, p.claim.ratio_high) for p in select(["backtest"])}
    assert claims["backtest.phase1"] == (2.5, 4.0) and claims["backtest.phase2"] == (4.0, 7.0)


def test_phase_check_passes_and_names_a_changed_trade(small: bb.Prepared) -> None:
    phase = select(["backtest.phase2"])[0]
    base, opt = phase.baseline(small), phase.optimized(small)
    assert base.items == opt.items == small.bars.bar_steps
    assert "16 symbols x 180 min" in opt.extra["slice"]
    phase.check(base.result, opt.result)
    changed = opt.result.trades.copy()
    changed[3, 5] += 1e-9  # exit price of trade 3
    with pytest.raises(PhaseMismatch, match="trade 3 field exit_px"):
        phase.check(base.result, RawRun(changed, opt.result.mtm))


def test_backtrader_makes_the_same_trades_as_phase_3(small: bb.Prepared) -> None:
    ours = run_phase(3, small.bars, small.p)
    theirs = bb._bt_run(bb.bt_inputs(small.bars), small.p)
    assert len([t for t in theirs if t[0] != "open"]) > 10
    bb.check_backtrader(theirs, ours)
    closed = [t for t in theirs if t[0] != "open"]
    with pytest.raises(PhaseMismatch, match="entry_t"):
        bb.check_backtrader([(closed[0][0], closed[0][1] + 1, *closed[0][2:]), *closed[1:],
                             *[t for t in theirs if t[0] == "open"]], ours)
