"""Tick sweeps: a grid of strategy and backtest parameters times days, run in parallel.

    from workbench.backtest.tick.sweeps import tick_sweep
    frame = tick_sweep(["day1.npy", "day2.npy"], "quoter",
                       {"qty": [0.001, 0.002], "queue": ["risk_averse", "power"]},
                       fixed={"max_position": 0.01})

Compiled strategies cannot be pickled, so a task names its strategy (`STRATEGIES`: `quoter`,
`ema`) and builds it in the worker from keyword parameters. A grid key that is a TickConfig
field (queue, prob_n, partial, maker_fee_bps, taker_fee_bps, ...) or `latency_us` (constant
latency, both ways) sets the backtest; the others go to the strategy. Tasks (one per grid point
and day) run on local processes (spawn) by default, in this process with `workers=1`, or on a
Dask cluster when `client` is given (a Client or a scheduler address), as the bar sweeps do
(`workbench.backtest.sweeps`). A tqdm bar counts finished tasks. Returns one polars frame: the
parameters, `day` (the data's path), then the columns of `TickResult.stats()`. Raises
ConfigError for an unknown strategy or parameter.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from workbench.backtest.tick.backtest import TickConfig, tick_backtest
from workbench.backtest.tick.latency import ConstantLatency
from workbench.errors import ConfigError


def _quoter(qty: float = 0.001, max_position: float = 0.01):
    from workbench.engine.compiled import Quoter

    return Quoter(float(qty), float(max_position))


def _ema(fast: int = 20, slow: int = 100, target_qty: float = 0.01, market: int = 1):
    from workbench.engine.compiled import CompiledEmaCross

    return CompiledEmaCross(int(fast), int(slow), float(target_qty), int(market))


STRATEGIES = {"quoter": _quoter, "ema": _ema}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TickConfig)} - {"latency", "progress"}


def run_task(day: str, strategy: str, params: dict[str, Any],
             base: TickConfig) -> dict[str, Any]:
    """One backtest: strategy `strategy` with `params` on `day`; its row of the sweep."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"tick sweep: unknown strategy {strategy!r} (one of "
                          f"{', '.join(STRATEGIES)})")
    conf = {k: v for k, v in params.items() if k in _CONFIG_FIELDS}
    if "latency_us" in params:
        ns = int(params["latency_us"] * 1000)
        conf["latency"] = ConstantLatency(ns, ns)
    strat = {k: v for k, v in params.items() if k not in _CONFIG_FIELDS and k != "latency_us"}
    try:
        built = STRATEGIES[strategy](**strat)
    except TypeError as exc:
        raise ConfigError(f"tick sweep: {strategy}: {exc}") from None
    result = tick_backtest(day, built, dataclasses.replace(base, progress=False, **conf))
    stats = result.stats()
    stats.pop("annualisation", None)
    return {**params, "day": str(day), **{k: float(v) for k, v in stats.items()}}


def tick_sweep(days: Sequence[str], strategy: str, grid: Mapping[str, Sequence[Any]],
               fixed: Mapping[str, Any] | None = None, config: TickConfig | None = None, *,
               client: Any = None, workers: int | None = None,
               progress: bool = True) -> pl.DataFrame:
    """Every combination of `grid` (name -> values), plus `fixed` parameters, on every day
    (recordings or converted .npy files; module docstring for the rest)."""
    base = config or TickConfig()
    names = list(grid)
    points = [{**(fixed or {}), **dict(zip(names, combo, strict=True))}
              for combo in itertools.product(*(grid[n] for n in names))]
    tasks = [(str(day), p) for p in points for day in days]
    bar = tqdm(total=len(tasks), desc="tick sweep", unit="run", disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        if client is not None:
            rows = _on_dask(client, tasks, strategy, base, bar)
        elif (workers or os.cpu_count() or 1) <= 1:
            for day, p in tasks:
                rows.append(run_task(day, strategy, p, base))
                bar.update()
        else:
            with ProcessPoolExecutor(workers or os.cpu_count(),
                                     mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_task, day, strategy, p, base) for day, p in tasks]
                for fut in as_completed(futures):
                    rows.append(fut.result())
                    bar.update()
    finally:
        bar.close()
    return pl.DataFrame(rows).sort([*names, "day"])


def _on_dask(client: Any, tasks: list[tuple[str, dict[str, Any]]], strategy: str,
             base: TickConfig, bar: tqdm) -> list[dict[str, Any]]:
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    own = isinstance(client, str)
    cl = Client(client) if own else client
    try:
        futures = [cl.submit(run_task, day, strategy, p, base, pure=False) for day, p in tasks]
        rows = []
        for fut in dask_completed(futures):
            rows.append(fut.result())
            bar.update()
        return rows
    finally:
        if own:
            cl.close()
