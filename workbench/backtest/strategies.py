"""Breakout strategies on minute bars: `TrueBreakout` and `Fakeout` (rules in `kernels.on_bar`).

Both watch, for each symbol, the highest high and lowest low of the previous `lookback` bars
with data and the mean volume of the previous `vol_window` bars (a running sum: O(1) per bar).
A *break* is a close above that high (up) or below that low (down) on a bar whose volume is at
least `vol_mult` times the mean volume.

- TrueBreakout trades the break: long on an up break, short on a down break.
- Fakeout fades a failed break: after a break, if a close within the next `confirm` bars is back
  inside the range (below the broken high, above the broken low), it goes the other way.

Exits (decided at a close, filled at the next open): stop when the close has moved `stop_bp`
against the entry fill, target when it has moved `target_bp` in favour, time after `max_hold`
bars held. Decisions need `max(lookback, vol_window)` bars of history.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from workbench.backtest import kernels as k
from workbench.backtest.execution import ExecutionModel
from workbench.errors import ConfigError


@dataclass(frozen=True)
class TrueBreakout:
    """Trade a volume-confirmed break of the N-bar range.

    lookback: N, bars in the high/low range (>= 1). vol_window: M, bars in the mean volume
    (>= 1). vol_mult: k, volume multiple of the mean that confirms a break (>= 0).
    stop_bp, target_bp: exit distances from the entry fill, basis points (> 0).
    max_hold: bars a position is held at most (>= 1).
    """

    lookback: int = 20
    vol_window: int = 20
    vol_mult: float = 2.0
    stop_bp: float = 50.0
    target_bp: float = 100.0
    max_hold: int = 30

    kind = k.KIND_BREAKOUT

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("lookback", "vol_window", "max_hold"):
            val = getattr(self, f)
            if not isinstance(val, int | np.integer) or val < 1:
                raise ConfigError(f"{name}.{f} must be an integer >= 1 bar, got {val!r}")
        if not self.vol_mult >= 0:
            raise ConfigError(f"{name}.vol_mult must be >= 0, got {self.vol_mult}")
        for f in ("stop_bp", "target_bp"):
            val = getattr(self, f)
            if not 0 < val < 10_000:
                raise ConfigError(f"{name}.{f} must be in (0, 10000) bp, got {val}")

    def describe(self) -> dict[str, float | int]:
        """Parameters by name (for tables and sweeps)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Fakeout(TrueBreakout):
    """Fade a break that closes back inside the range within `confirm` bars (K >= 1); other
    parameters as in TrueBreakout."""

    confirm: int = 3

    kind = k.KIND_FAKEOUT

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.confirm, int | np.integer) or self.confirm < 1:
            raise ConfigError(f"Fakeout.confirm must be an integer >= 1 bar, got {self.confirm!r}")


Strategy = TrueBreakout | Fakeout


def pack_params(strategy: Strategy, execution: ExecutionModel) -> np.ndarray:
    """The kernels' float64 parameter vector [kernels.N_PARAMS] (bp turned into fractions)."""
    p = np.zeros(k.N_PARAMS)
    p[k.P_KIND] = strategy.kind
    p[k.P_LOOKBACK] = strategy.lookback
    p[k.P_VOL_WINDOW] = strategy.vol_window
    p[k.P_VOL_MULT] = strategy.vol_mult
    p[k.P_STOP] = strategy.stop_bp * 1e-4
    p[k.P_TARGET] = strategy.target_bp * 1e-4
    p[k.P_MAX_HOLD] = strategy.max_hold
    p[k.P_CONFIRM] = getattr(strategy, "confirm", 1)
    p[k.P_FEE] = execution.fee_bp * 1e-4
    p[k.P_SLIP] = execution.slippage_bp * 1e-4
    p[k.P_NOTIONAL] = execution.risk_per_trade / (strategy.stop_bp * 1e-4)
    return p
