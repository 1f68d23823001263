"""Latency models, hand-computed (interpolation: workbench.backtest.tick.latency)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from workbench.backtest.tick import latency as lat
from workbench.backtest.tick.latency import ConstantLatency, InterpLatency
from workbench.errors import ConfigError


def _entry(model, t):
    mode, const, _, rows = model.as_arrays()
    return lat.entry(mode, const, rows, np.zeros(1, np.int64), t)


def _response(model, x):
    mode, _, const, rows = model.as_arrays()
    return lat.response(mode, const, rows, np.zeros(1, np.int64), x)


def test_constant():
    m = ConstantLatency(700, 300)
    assert _entry(m, 123) == 700
    assert _response(m, 456) == 300
    with pytest.raises(ConfigError):
        ConstantLatency(-1, 0)


def test_interpolated_between_rows_and_flat_outside():
    # rows (req, exch, resp): entry latencies 100 then 300, response latencies 150 then 200
    m = InterpLatency([0, 1000], [100, 1300], [250, 1500])
    assert _entry(m, 500) == 200  # 100 + (300 - 100) * 500 / 1000
    assert _entry(m, -5) == 100
    assert _entry(m, 2000) == 300
    assert _response(m, 700) == 175  # 150 + (200 - 150) * 600 / 1200
    assert _response(m, 50) == 150
    assert _response(m, 5000) == 200


def test_a_refused_row_makes_a_negative_entry():
    m = InterpLatency([0, 1000], [0, 1300], [40, 1500])  # exch 0: the exchange refused
    assert _entry(m, 500) == -270  # -(40 + (500 - 40) * 500 / 1000)


def test_from_run_uses_the_order_stage_series(tmp_path):
    series = {"order": {"t_s": [10, 11, 12], "p50_ns": [1000, 2000, 3000],
                        "p99_ns": [5000, 6000, 7000], "max_ns": [1, 2, 3]}}
    (tmp_path / "latency.json").write_bytes(orjson.dumps({"summary": {}, "series": series}))
    m = InterpLatency.from_run(tmp_path, start_ns=1_000_000_000_000)
    assert _entry(m, 1_000_500_000_000) == 1500
    # 2000 + 1000 * 0.5e9 / (1e9 + 1000) = 2499.9995, truncated as hftbacktest does
    assert _response(m, 1_001_000_002_000 + 500_000_000) == 2499
    m99 = InterpLatency.from_run(tmp_path, start_ns=0, quantile="p99_ns")
    assert _entry(m99, 2_000_000_000) == 7000
    with pytest.raises(ConfigError, match=r"latency\.json"):
        InterpLatency.from_run(tmp_path / "nope", start_ns=0)


def test_bad_series_is_refused():
    with pytest.raises(ConfigError, match="non-decreasing"):
        InterpLatency([10, 5], [20, 30], [40, 50])
