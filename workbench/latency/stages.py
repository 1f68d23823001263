"""The latency stages of one market-data message, named once (see shared/DESIGN.md).

Every hop stamps `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux).
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A measured hop, from one stamp to the next."""

    WIRE = "wire"  # exchange event time -> local receive (needs a fitted clock offset)
    PARSE = "parse"  # receive -> normalized events
    QUEUE = "queue"  # normalized -> engine picks it up (what dispatch mode changes)
    BOOK = "book"  # picked up -> book updated
    STRATEGY = "strategy"  # book updated -> decision
    ORDER = "order"  # decision -> paper broker ack
    TICK_TO_TRADE = "tick_to_trade"  # receive -> ack (the headline figure)


STAGES: tuple[Stage, ...] = tuple(Stage)
LOCAL_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s is not Stage.WIRE)
