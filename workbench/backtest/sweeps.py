"""Parameter sweeps: a grid of strategy parameters times symbols, run in parallel.

Each task is one symbol and a chunk of the grid, run with the phase-3 kernel; tasks go to
local processes (`concurrent.futures.ProcessPoolExecutor`, spawn start method) by default, run
in this process with `workers=1`, or go to a Dask distributed cluster when `client` is given
(a `dask.distributed.Client` or a scheduler address such as "tcp://10.0.0.5:8786"). A tqdm
progress bar counts finished tasks. The answer does not depend on where it ran.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from workbench.backtest import kernels as k
from workbench.backtest.bars import Bars
from workbench.backtest.execution import ExecutionModel
from workbench.backtest.phases import run_phase
from workbench.backtest.results import max_drawdown, sharpe
from workbench.backtest.strategies import Strategy, pack_params
from workbench.errors import ConfigError

METRICS = ("trades", "pnl", "win_rate", "sharpe", "max_drawdown", "turnover")


def grid(base: Strategy, params: Mapping[str, Sequence[Any]]) -> list[Strategy]:
    """Every combination of `params` (name -> values) applied to `base`, in product order.
    Raises ConfigError for a name the strategy does not have, or an invalid value."""
    names = list(params)
    unknown = [n for n in names if n not in base.describe()]
    if unknown:
        raise ConfigError(f"{type(base).__name__} has no parameter {unknown}; "
                          f"parameters: {list(base.describe())}")
    return [replace(base, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(params[n] for n in names))]


def run_task(bars: Bars, strategies: Sequence[Strategy],
             execution: ExecutionModel) -> list[dict[str, Any]]:
    """Backtest each strategy on a one-symbol `bars` (phase 3); one row of METRICS each."""
    symbol = bars.symbols[0]
    rows = []
    for strat in strategies:
        p = pack_params(strat, execution)
        raw = run_phase(3, bars, p)
        pnl = raw.trades[:, 1 + k.T_PNL]
        equity = 1.0 + raw.mtm[0].cumsum()
        rows.append({
            **strat.describe(), "symbol": symbol, "trades": int(pnl.size),
            "pnl": float(pnl.sum()),
            "win_rate": float((pnl > 0).mean()) if pnl.size else math.nan,
            "sharpe": sharpe(raw.mtm[0], bars.bar_ns), "max_drawdown": max_drawdown(equity),
            "turnover": 2.0 * float(p[k.P_NOTIONAL]) * pnl.size,
        })
    return rows


def _tasks(bars: Bars, strategies: list[Strategy],
           chunk: int) -> Iterable[tuple[Bars, list[Strategy]]]:
    for sym in bars.symbols:
        one = bars.select([sym])
        for i in range(0, len(strategies), chunk):
            yield one, strategies[i:i + chunk]


def sweep(
    bars: Bars,
    base: Strategy,
    params: Mapping[str, Sequence[Any]],
    execution: ExecutionModel | None = None,
    *,
    client: Any = None,
    workers: int | None = None,
    chunk: int | None = None,
    progress: bool = True,
) -> pl.DataFrame:
    """Backtest every combination of `params` on `base` (see `grid`) for every symbol.

    client: a dask.distributed.Client or a scheduler address (str) to run on that cluster;
      None runs on local processes. workers: local processes (default: CPU count; 1 runs in
      this process). chunk: grid points per task (default: the grid split in 4 per symbol).
    Returns one row per (grid point, symbol): the parameters, `symbol`, then METRICS (trades,
    pnl and turnover in capital units; see `results`), sorted by parameters then symbol.
    """
    execution = execution or ExecutionModel()
    strategies = grid(base, params)
    chunk = chunk or max(1, math.ceil(len(strategies) / 4))
    tasks = list(_tasks(bars, strategies, chunk))
    bar = tqdm(total=len(tasks), desc="sweep", unit="task", disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        if client is not None:
            rows = _on_dask(client, tasks, execution, bar)
        elif (workers or os.cpu_count() or 1) <= 1:
            for one, strats in tasks:
                rows.extend(run_task(one, strats, execution))
                bar.update()
        else:
            with ProcessPoolExecutor(workers or os.cpu_count(),
                                     mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_task, one, strats, execution) for one, strats in tasks]
                for fut in as_completed(futures):
                    rows.extend(fut.result())
                    bar.update()
    finally:
        bar.close()
    keys = [*params, "symbol"]
    return pl.DataFrame(rows).sort(keys)


def _on_dask(client: Any, tasks: list[tuple[Bars, list[Strategy]]], execution: ExecutionModel,
             bar: tqdm) -> list[dict[str, Any]]:
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    own = isinstance(client, str)
    cl = Client(client) if own else client
    try:
        scattered: dict[str, Any] = {}
        futures = []
        for one, strats in tasks:
            sym = one.symbols[0]
            if sym not in scattered:
                scattered[sym] = cl.scatter(one)
            futures.append(cl.submit(run_task, scattered[sym], strats, execution, pure=False))
        rows: list[dict[str, Any]] = []
        for fut in dask_completed(futures):
            rows.extend(fut.result())
            bar.update()
        return rows
    finally:
        if own:
            cl.close()
