"""Multi-symbol minute-bar backtesting with numba kernels.

The public names below are imported on first use (PEP 562), so importing one module of the
package does not compile the kernels:

    from workbench.backtest import load_bars, TrueBreakout, ExecutionModel, backtest
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.lazy import exports

if TYPE_CHECKING:
    from workbench.backtest.bars import Bars, load_bars
    from workbench.backtest.execution import ExecutionModel
    from workbench.backtest.phases import python_bars, run_phase
    from workbench.backtest.results import BacktestResult, backtest
    from workbench.backtest.strategies import Fakeout, TrueBreakout, pack_params
    from workbench.backtest.sweeps import sweep

__all__ = [
    "BacktestResult",
    "Bars",
    "ExecutionModel",
    "Fakeout",
    "TrueBreakout",
    "backtest",
    "load_bars",
    "pack_params",
    "python_bars",
    "run_phase",
    "sweep",
]

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Bars": "workbench.backtest.bars",
    "load_bars": "workbench.backtest.bars",
    "ExecutionModel": "workbench.backtest.execution",
    "python_bars": "workbench.backtest.phases",
    "run_phase": "workbench.backtest.phases",
    "BacktestResult": "workbench.backtest.results",
    "backtest": "workbench.backtest.results",
    "Fakeout": "workbench.backtest.strategies",
    "TrueBreakout": "workbench.backtest.strategies",
    "pack_params": "workbench.backtest.strategies",
    "sweep": "workbench.backtest.sweeps",
}


__getattr__, __dir__ = exports(__name__, _EXPORTS)
