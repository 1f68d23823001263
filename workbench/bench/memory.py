"""Memory phases: `__slots__` records and sliding windows, on the real Binance trades/quotes.

- memory.slots_trade / slots_quote / slots_level: bytes per instance of a plain `@dataclass`
  vs `@dataclass(slots=True)` holding the same real values, measured with tracemalloc (traced
  bytes allocated while building N instances into a pre-sized list, divided by N). Claimed:
  40% less memory per instance (ratio 1/0.6).
- memory.window_<W>: a sliding window of the last W mid prices with a running mean, as a list
  (`append` + `pop(0)`, O(W) per step) vs `collections.deque(maxlen=W)` (O(1) per step). One
  phase per window size (100, 1,000, 10,000): the ratio growing with W is the O(n) vs O(1)
  claim, read across the three rows. The per-step running means are the check.
"""

from __future__ import annotations

import tracemalloc
from collections import deque
from dataclasses import dataclass, fields
from operator import attrgetter

from workbench.bench import recorded
from workbench.bench.registry import Claim, Outcome, Phase, first_difference, register

QUICK_MESSAGES = 20_000
FULL_MESSAGES = None  # the whole recording
QUICK_INSTANCES = 5_000
QUICK_STEPS = 20_000
FULL_STEPS = 60_000


@dataclass
class Trade:
    """A trade: ts_ns (int ns), trade_id, price, qty (float), buyer_is_maker."""

    ts_ns: int
    trade_id: int
    price: float
    qty: float
    buyer_is_maker: bool


@dataclass(slots=True)
class SlotTrade:
    """`Trade` with `__slots__`."""

    ts_ns: int
    trade_id: int
    price: float
    qty: float
    buyer_is_maker: bool


@dataclass
class Quote:
    """A best bid/ask quote: ts_ns, bid, bid_qty, ask, ask_qty."""

    ts_ns: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


@dataclass(slots=True)
class SlotQuote:
    """`Quote` with `__slots__`."""

    ts_ns: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


@dataclass
class BookLevel:
    """One L2 book level: side (+1 bid, -1 ask), price, qty."""

    side: int
    price: float
    qty: float


@dataclass(slots=True)
class SlotBookLevel:
    """`BookLevel` with `__slots__`."""

    side: int
    price: float
    qty: float


def _rows(kind: str, quick: bool) -> list[tuple]:
    quotes, trades = recorded.quotes_and_trades(QUICK_MESSAGES if quick else FULL_MESSAGES)
    if kind == "trade":
        rows = [(t[0], t[2], t[3], t[4], t[5]) for t in trades]
    elif kind == "quote":
        rows = [(q[0], q[3], q[4], q[5], q[6]) for q in quotes]
    else:  # book levels: both sides of every quote
        rows = [lv for q in quotes for lv in ((1, q[3], q[4]), (-1, q[5], q[6]))]
    return rows[:QUICK_INSTANCES] if quick else rows


def _build(cls: type, rows: list[tuple]) -> Outcome:
    """Instances of cls from rows; nbytes = traced bytes per instance."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    out: list = [None] * len(rows)
    before = tracemalloc.get_traced_memory()[0]
    for i, row in enumerate(rows):
        out[i] = cls(*row)
    per_instance = (tracemalloc.get_traced_memory()[0] - before) / len(rows)
    if not was_tracing:
        tracemalloc.stop()
    get = attrgetter(*(f.name for f in fields(cls)))
    return Outcome([get(o) for o in out], items=len(rows), nbytes=round(per_instance),
                   extra={"bytes_per_instance": per_instance})


def _check_values(a: list[tuple], b: list[tuple]) -> None:
    first_difference(a, b, "instance field values")


for _kind, _plain, _slotted in (("trade", Trade, SlotTrade), ("quote", Quote, SlotQuote),
                                ("level", BookLevel, SlotBookLevel)):
    register(Phase(
        name=f"memory.slots_{_kind}", topic="memory",
        claim=Claim(f"__slots__ dataclasses take 40% less memory per {_kind} instance",
                    1 / 0.6, 1 / 0.6),
        prepare=lambda quick, kind=_kind: _rows(kind, quick),
        baseline=lambda rows, cls=_plain: _build(cls, rows),
        optimized=lambda rows, cls=_slotted: _build(cls, rows),
        check=_check_values, metric="memory", repeats=3, warmup=0,
        baseline_label="@dataclass", optimized_label="@dataclass(slots=True)",
    ))


def _mids(quick: bool) -> list[float]:
    quotes, _ = recorded.quotes_and_trades(QUICK_MESSAGES if quick else FULL_MESSAGES)
    mids = [(q[3] + q[5]) / 2.0 for q in quotes]
    steps = QUICK_STEPS if quick else FULL_STEPS
    return (mids * (steps // len(mids) + 1))[:steps]


def _window_list(mids: list[float], width: int) -> Outcome:
    window: list[float] = []
    total = 0.0
    means = []
    for p in mids:
        total += p
        window.append(p)
        if len(window) > width:
            total -= window.pop(0)
        means.append(total / len(window))
    return Outcome(means, items=len(mids))


def _window_deque(mids: list[float], width: int) -> Outcome:
    window: deque[float] = deque(maxlen=width)
    total = 0.0
    means = []
    for p in mids:
        total += p
        if len(window) == width:
            total -= window[0]
        window.append(p)
        means.append(total / len(window))
    return Outcome(means, items=len(mids))


def _check_means(a: list[float], b: list[float]) -> None:
    first_difference(a, b, "running means")


for _width in (100, 1_000, 10_000):
    register(Phase(
        name=f"memory.window_{_width}", topic="memory",
        claim=Claim(f"deque(maxlen) slides in O(1) vs list pop(0) O(n); window {_width:,}"),
        prepare=_mids,
        baseline=lambda mids, w=_width: _window_list(mids, w),
        optimized=lambda mids, w=_width: _window_deque(mids, w),
        check=_check_means, metric="time", repeats=5,
        baseline_label="list append+pop(0)", optimized_label="deque(maxlen)",
    ))
