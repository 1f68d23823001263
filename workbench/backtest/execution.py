"""The execution model's costs and sizing (the fill rules are in `kernels`' docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import ConfigError


@dataclass(frozen=True)
class ExecutionModel:
    """Costs and sizing of every fill.

    fee_bp: fee per fill, basis points of notional (Binance USD-M taker: 4-5 bp).
    slippage_bp: each fill price is moved this many bp against the trade (buy higher, sell
      lower) from the bar open (or the last close for an END exit).
    risk_per_trade: share of initial capital lost when a trade is stopped at its stop (before
      costs); notional = risk_per_trade / (stop_bp / 1e4), the same for every symbol
      (equal-risk portfolio).
    """

    fee_bp: float = 4.0
    slippage_bp: float = 1.0
    risk_per_trade: float = 0.001

    def __post_init__(self) -> None:
        for name in ("fee_bp", "slippage_bp"):
            val = getattr(self, name)
            if not 0.0 <= val < 10_000.0:
                raise ConfigError(f"ExecutionModel.{name} must be in [0, 10000) bp, got {val}")
        if not 0.0 < self.risk_per_trade <= 1.0:
            raise ConfigError(
                f"ExecutionModel.risk_per_trade must be in (0, 1], got {self.risk_per_trade}"
            )
