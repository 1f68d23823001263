"""Order latency models: constant, and interpolated from a recorded series.

An order sent at local time t reaches the exchange at t + entry(t); a response the exchange
makes at exchange time x reaches the strategy at x + response(x). Models:

- `ConstantLatency(entry_ns, response_ns)`.
- `InterpLatency(req_ns, exch_ns, resp_ns)`: rows of a recorded series (request sent, reached
  the exchange, response back; int64 ns, non-decreasing req and exch). entry(t) interpolates
  exch - req linearly in req between the two rows around t, response(x) interpolates resp -
  exch in exch; before the first row / after the last the first / last row's latency holds.
  A row with exch <= 0 marks an order the exchange refused (congestion): an entry
  interpolated with it is negative, -(resp - req) interpolated, and the order is rejected,
  the rejection reaching the strategy after that long. Formula and rules: hftbacktest,
  nkaz001/hftbacktest, hftbacktest/src/backtest/models/latency.rs (`IntpOrderLatency`, its
  `intp`: ((y2 - y1) / (x2 - x1) * (x - x1)) truncated to int64, + y1); docs "Order Latency
  Models".
- `InterpLatency.from_run(run_dir)`: the series our own engine measured: `latency.json`'s
  per-second `order` stage (strategy decision -> broker ack) of `runs/<run-id>/`, one row per
  second; entry = response = the chosen percentile of that second (`p50_ns` or `p99_ns`),
  placed at start_ns + (second - first second) s, so a paper run's measured latency drives the
  next backtest.

Kernel form (`as_arrays`): mode (0 constant, 1 interpolated), the constant pair, and the
(k, 3) int64 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np
import orjson

from workbench.errors import ConfigError


@dataclass(frozen=True)
class ConstantLatency:
    """entry_ns: local -> exchange; response_ns: exchange -> local (both >= 0)."""

    entry_ns: int
    response_ns: int

    def __post_init__(self) -> None:
        if self.entry_ns < 0 or self.response_ns < 0:
            raise ConfigError(f"ConstantLatency: latencies must be >= 0, got "
                              f"{self.entry_ns}, {self.response_ns}")

    def as_arrays(self) -> tuple[int, int, int, np.ndarray]:
        return 0, int(self.entry_ns), int(self.response_ns), np.zeros((1, 3), np.int64)


class InterpLatency:
    """Interpolated order latency (module docstring). Raises ConfigError for an empty series,
    mismatched lengths or decreasing request times."""

    def __init__(self, req_ns, exch_ns, resp_ns) -> None:
        rows = np.column_stack([np.asarray(req_ns, np.int64), np.asarray(exch_ns, np.int64),
                                np.asarray(resp_ns, np.int64)])
        if rows.ndim != 2 or len(rows) == 0:
            raise ConfigError("InterpLatency: the series is empty")
        if (np.diff(rows[:, 0]) < 0).any():
            raise ConfigError("InterpLatency: request times must be non-decreasing")
        self.rows = np.ascontiguousarray(rows)

    @classmethod
    def from_run(cls, run_dir: str | Path, start_ns: int, quantile: str = "p50_ns"
                 ) -> InterpLatency:
        """The order-stage series of the engine run in `run_dir` (module docstring). Raises
        ConfigError when the run has no latency.json or no order-stage points."""
        path = Path(run_dir) / "latency.json"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no latency.json (the run did not finish cleanly?)")
        series = orjson.loads(path.read_bytes()).get("series", {}).get("order", {})
        seconds = np.asarray(series.get("t_s", []), np.int64)
        values = np.asarray(series.get(quantile, []), np.int64)
        if len(values) == 0 or len(values) != len(seconds):
            raise ConfigError(f"{path}: no per-second '{quantile}' points of the order stage "
                              f"(keys: {sorted(series)})")
        req = start_ns + (seconds - seconds[0]) * 1_000_000_000
        return cls(req, req + values, req + 2 * values)

    def as_arrays(self) -> tuple[int, int, int, np.ndarray]:
        return 1, 0, 0, self.rows


@nb.njit(cache=True, inline="always")
def _intp(x, x1, y1, x2, y2):  # pragma: no cover - compiled
    return np.int64((y2 - y1) / (x2 - x1) * (x - x1)) + y1


@nb.njit(cache=True)
def entry(mode, const, rows, cursor, t):  # pragma: no cover - compiled
    """Entry latency at local time t (cursor: int64[1], the row search position)."""
    if mode == 0:
        return const
    if t < rows[0, 0]:
        return rows[0, 1] - rows[0, 0]
    while True:
        i = cursor[0]
        if i + 1 >= len(rows):
            return rows[-1, 1] - rows[-1, 0]
        if rows[i, 0] <= t < rows[i + 1, 0]:
            if rows[i, 1] <= 0 or rows[i + 1, 1] <= 0:
                return -_intp(t, rows[i, 0], rows[i, 2] - rows[i, 0], rows[i + 1, 0],
                              rows[i + 1, 2] - rows[i + 1, 0])
            return _intp(t, rows[i, 0], rows[i, 1] - rows[i, 0], rows[i + 1, 0],
                         rows[i + 1, 1] - rows[i + 1, 0])
        cursor[0] = i + 1


@nb.njit(cache=True)
def response(mode, const, rows, cursor, x):  # pragma: no cover - compiled
    """Response latency of a response made at exchange time x (cursor as in `entry`)."""
    if mode == 0:
        return const
    if x < rows[0, 1]:
        return rows[0, 2] - rows[0, 1]
    while True:
        i = cursor[0]
        if i + 1 >= len(rows):
            return rows[-1, 2] - rows[-1, 1]
        if rows[i, 1] <= x < rows[i + 1, 1]:
            return _intp(x, rows[i, 1], rows[i, 2] - rows[i, 1], rows[i + 1, 1],
                         rows[i + 1, 2] - rows[i + 1, 1])
        cursor[0] = i + 1
