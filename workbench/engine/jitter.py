"""Order slicing with jitter: a large order as equal children sent with random delays.

The source design (issue 16, item 7): an order of at least 0.5 BTC is split into 10 children,
each sent after a random delay of 5-15 ms, claimed to improve fill rates (measured by the tick
backtester's `tick.slicing` phase). `JitterSlicing.plan(request, rng)` gives the children with
their delays: the first at 0, each next one a delay uniform in [delay_min_ms, delay_max_ms]
after the previous (in ns of market time); an order below min_qty is sent whole at 0. The
Executor holds the delayed children and sends each once market time reaches it
(`Executor.release`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from workbench.engine.strategy import OrderRequest
from workbench.errors import ConfigError

MS = 1_000_000


@dataclass(frozen=True)
class JitterSlicing:
    """min_qty: the smallest order sliced (base units); children: how many (>= 1); delays in
    ms (0 <= min <= max); seed: of the delays' random generator. Raises ConfigError."""

    min_qty: float = 0.5
    children: int = 10
    delay_min_ms: float = 5.0
    delay_max_ms: float = 15.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.min_qty > 0 and self.children >= 1
                and 0 <= self.delay_min_ms <= self.delay_max_ms):
            raise ConfigError(f"JitterSlicing: expected min_qty > 0, children >= 1 and 0 <= "
                              f"delay_min_ms <= delay_max_ms, got {self}")

    def plan(self, request: OrderRequest, rng: random.Random) -> list[tuple[int, OrderRequest]]:
        """[(delay_ns from now, child)] (module docstring)."""
        if request.qty < self.min_qty or self.children == 1:
            return [(0, request)]
        qty = request.qty / self.children
        out, delay = [], 0
        for k in range(self.children):
            if k:
                delay += int(rng.uniform(self.delay_min_ms, self.delay_max_ms) * MS)
            out.append((delay, OrderRequest(request.symbol_id, request.side, qty,
                                            request.order_type, request.price,
                                            request.post_only, request.tag)))
        return out
