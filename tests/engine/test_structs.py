"""compiled_class: a class as a numba StructRef, its compiled code cached across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from numba import float64, int64, njit

from workbench.engine.compiled import Gateway
from workbench.engine.structs import compiled_class


@compiled_class([("total", float64), ("calls", int64)])
class Summer:
    """Adds what it is given."""

    def __init__(self, start):
        self.total = start
        self.calls = 0

    def add(self, x):
        self.calls += 1
        self.total += x
        return self._twice()

    def _twice(self):
        return self.total * 2.0


@njit
def _add_all(s, xs):
    out = 0.0
    for x in xs:
        out = s.add(x)
    return out


def test_fields_and_methods_in_compiled_code_and_python():
    s = Summer(1.5)
    assert (s.total, s.calls) == (1.5, 0)
    assert _add_all(s, np.array([1.0, 2.0, 3.5])) == 2 * 8.0  # through compiled code
    assert (s.total, s.calls) == (8.0, 3)  # the same object, seen from Python
    assert s.add(2.0) == 20.0  # a method called from Python
    assert (s.total, s.calls) == (10.0, 4)
    assert Summer.__doc__ == "Adds what it is given."


def _define(body: str):
    scope: dict = {"compiled_class": compiled_class, "int64": int64}
    exec(textwrap.dedent(body), scope)  # a class without a source file: digest of its bytecode
    return scope["Counter"]


def test_a_changed_class_is_a_different_type():
    src = """
        @compiled_class([("n", int64)])
        class Counter:
            def __init__(self):
                self.n = 0

            def step(self):
                self.n += {k}
                return self.n
    """
    one, two, one_again = (_define(src.format(k=k)) for k in (1, 2, 1))
    assert one.numba_type != two.numba_type  # a cached function for one is not used for two
    assert one_again is one  # the same class again (a re-run notebook cell)
    assert (one().step(), two().step()) == (1, 2)


def test_gateway_in_python_and_compiled_code_share_the_arrays():
    gw = Gateway(0.5, 0.001)
    assert gw.submit(7, 1, 100.0, 0.002, 0, 1)
    oi, rf = gw.state[2], gw.state[5]
    assert (gw.n_orders, gw.n_req, int(gw.o_tick[0]), int(gw.r_id[0])) == (1, 1, 200, 7)
    assert rf[0] == 0.002 and oi[0, 0] == 7

    @njit
    def book(g):
        g.set_book(5, 190, 1.0, 210, 2.0)
        return g.mid(), g.best_bid_tick, g.find(7), g.o_status[0]

    assert book(gw) == (100.0, 190, 0, 0)
    assert (gw.ts_ns, gw.best_bid, gw.ask_qty) == (5, 95.0, 2.0)


def test_a_fresh_process_runs_the_quoter_backtest_from_the_cache(shared_data):
    """The tick driver for a compiled_class strategy is cached: a second fresh process compiles
    neither the driver nor the kernel (numba's dispatcher stats: hits, no misses)."""
    code = textwrap.dedent("""
        from workbench.backtest.tick import kernel, tick_backtest
        from workbench.engine.compiled import Quoter
        r = tick_backtest({path!r}, Quoter(0.001, 0.005))
        print(len(r.fill_columns["qty"]), sum(kernel.drive.stats.cache_hits.values()),
              sum(kernel.drive.stats.cache_misses.values()),
              sum(kernel.run.stats.cache_misses.values()))
    """).format(path=str(shared_data / "binance/hftbacktest/usdm/btcusdt_20240808.gz"))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env=dict(os.environ), timeout=600).stdout.split()
            for _ in range(2)]
    fills, hits, misses, kernel_misses = (int(v) for v in runs[1])
    assert fills == int(runs[0][0]) > 0
    assert (hits, misses, kernel_misses) == (1, 0, 0)
