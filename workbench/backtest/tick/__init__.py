"""Tick-level backtesting: event files with two timelines, queue and latency models, one
compiled strategy for backtest and live (issue 16).

    from workbench.backtest.tick import convert, tick_backtest, TickConfig, ConstantLatency

Modules: events.py (conversion, cache, TickData), latency.py, the queue models
(engine/queue_models.py, shared with the paper broker), kernel.py
(the compiled simulation), backtest.py (the chunked driver), results.py (TickResult),
sweeps.py (grids x days), peer.py (hftbacktest on the same rows), convert_cmd.py and
backtest_cmd.py (`workbench convert`, `workbench backtest`, `%hft backtest`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.lazy import exports

if TYPE_CHECKING:
    from workbench.backtest.tick.backtest import TickConfig, tick_backtest
    from workbench.backtest.tick.events import TickData, convert, events_for
    from workbench.backtest.tick.latency import ConstantLatency, InterpLatency
    from workbench.backtest.tick.results import TickResult
    from workbench.backtest.tick.sweeps import tick_sweep
    from workbench.engine.queue_models import QueueModel

__all__ = ["ConstantLatency", "InterpLatency", "QueueModel", "TickConfig", "TickData",
           "TickResult", "convert", "events_for", "tick_backtest", "tick_sweep"]

_EXPORTS: dict[str, str] = {
    "TickConfig": "workbench.backtest.tick.backtest",
    "tick_backtest": "workbench.backtest.tick.backtest",
    "TickData": "workbench.backtest.tick.events",
    "convert": "workbench.backtest.tick.events",
    "events_for": "workbench.backtest.tick.events",
    "ConstantLatency": "workbench.backtest.tick.latency",
    "InterpLatency": "workbench.backtest.tick.latency",
    "QueueModel": "workbench.engine.queue_models",
    "TickResult": "workbench.backtest.tick.results",
    "tick_sweep": "workbench.backtest.tick.sweeps",
}

__getattr__, __dir__ = exports(__name__, _EXPORTS)
