"""EngineConfig: one engine run, composed of small frozen configs, each validated where defined.

    EngineConfig(source=SourceConfig("replay:rec.gz", speed=0), dispatch="polling")
    EngineConfig(source="replay:rec.gz", speed=0, dispatch="polling")   # the flat form

The groups: `source` (SourceConfig: where events come from and at what pace), `strategy`
(StrategyConfig: the default EmaCross and its warm-up), `broker` (BrokerConfig: fees,
latency, slicing), `risk` (RiskConfig), `housekeeping` (HousekeepingConfig: job periods, spike
threshold, latency warm-up) and `tuning` (TuningConfig: gc, GIL, CPUs, event loop, spinning).
Every knob has one name, the same in its group, in the flat keyword form, in `replace()` and
as a `workbench run` flag. The CLI (`workbench run`), the `%hft start` magic and the Jupyter
panel all build this object. An invalid value raises ConfigError naming the field, the
accepted values and what came.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from workbench.engine.dispatch import MODES as DISPATCH_MODES
from workbench.errors import ConfigError
from workbench.feed.venues import VENUES as FEED_VENUES
from workbench.tuning import GC_MODES, LOOP_CHOICES

SOURCE_KINDS = ("sim", "replay", "ring", "ws", "native")
ORDER_TYPES = ("market", "limit")
ON_STRATEGY_ERROR = ("halt", "continue")
# the normalizer venue keys of live venues (tardis is a file format, not a venue to trade)
VENUES = tuple(v for v in FEED_VENUES if v != "tardis")
QUEUE_MODELS = ("none", "risk_averse")  # the PaperBroker's resting-order models


def nearest_prime_ms(ms: float) -> int:
    """The smallest prime >= ms (>= 2): a staggered housekeeping period. Distinct prime
    periods make two jobs share a loop iteration only once per product of their periods."""
    n = max(2, math.ceil(ms))
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def _fail(name: str, accepted: str, got: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {accepted}, got {got!r}")


def _number(name: str, value: Any, low: float, strict: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
    )
    if not ok:
        raise _fail(name, f"a finite number {'>' if strict else '>='} {low:g}", value)


def _optional_number(name: str, value: Any) -> None:
    if value is not None:
        _number(name, value, 0.0, strict=True)


def _choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise _fail(name, " | ".join(accepted), value)


def _count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(name, "an integer >= 1", value)


@dataclass(frozen=True)
class SourceConfig:
    """Where events come from.

    source: `sim` (SimExchange started by the engine, its simulator seeded with `seed`),
    `replay:PATH`, `ring:NAME`, `ws:URL`, `native` (the C++ feed handler reading a SimExchange
    the engine starts, as `sim`) or `native:URL` (the C++ handler on a venue's websocket).
    venue: the venue key (`binance`: USD-M for the simulator and for recordings under a `usdm`
    folder, COIN-M under `cm`/`coinm`, else spot). symbols: venue symbols. recording: for
    `sim` and `native`, a recording SimExchange serves instead of its simulator (path).
    rest_url: for `ws:` and `native:URL`, the base URL of the venue's REST depth endpoint
    (None: the venue's own). speed: replay pace (1.0 as recorded, N times faster, 0 flat out:
    the run ends with the recording). idle_end_s: a websocket source that delivered data and
    then stays silent this long ends the run (None: `sim` with a recording at speed 0 uses
    1.0 s, otherwise never). seed: the simulator's seed (same seed, same simulated stream).
    """

    source: str = "sim"
    venue: str = "binance"
    symbols: tuple[str, ...] = ("BTCUSDT",)
    recording: str | None = None
    rest_url: str | None = None
    speed: float = 1.0
    idle_end_s: float | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        kind = self.kind
        if kind not in SOURCE_KINDS or (kind not in ("sim", "native") and not self.arg):
            raise _fail("source", "sim | replay:PATH | ring:NAME | ws:URL | native | "
                        "native:URL", self.source)
        _choice("venue", self.venue, VENUES)
        symbols = self.symbols
        if isinstance(symbols, str) or not symbols or not all(
            isinstance(s, str) and s for s in symbols
        ):
            raise _fail("symbols", "a non-empty tuple of symbol strings", symbols)
        object.__setattr__(self, "symbols", tuple(s.upper() for s in symbols))
        _number("speed", self.speed, 0.0)
        _optional_number("idle_end_s", self.idle_end_s)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _fail("seed", "an integer", self.seed)
        if self.recording is not None and (kind not in ("sim", "native") or self.arg):
            raise _fail("recording", "None unless source is sim or native (no URL)",
                        self.recording)
        if self.rest_url is not None and not self.rest_url.startswith(("http://", "https://")):
            raise _fail("rest_url", "None or an http(s):// URL", self.rest_url)

    @property
    def kind(self) -> str:
        """`sim`, `replay`, `ring` or `ws`."""
        return self.source.split(":", 1)[0]

    @property
    def arg(self) -> str:
        """What follows `kind:` in `source` (path, ring name or URL); '' for sim."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def idle_end(self) -> float | None:
        """Seconds of silence that end a websocket run (see idle_end_s)."""
        if self.idle_end_s is not None:
            return self.idle_end_s
        if self.kind in ("sim", "native") and self.recording and self.speed == 0:
            return 1.0
        return None


@dataclass(frozen=True)
class StrategyConfig:
    """The default strategy, EmaCross of the mid with `ema_fast`/`ema_slow` updates, target
    position +-`target_qty` (base units), orders of `order_type`. strategy_warmup_s:
    market-time seconds after the first batch during which the strategy is not called (the
    book syncs meanwhile). on_strategy_error: `halt` (kill switch, flatten) or `continue`."""

    ema_fast: int = 20
    ema_slow: int = 100
    target_qty: float = 0.01
    order_type: str = "market"
    strategy_warmup_s: float = 0.0
    on_strategy_error: str = "halt"

    def __post_init__(self) -> None:
        _count("ema_fast", self.ema_fast)
        _count("ema_slow", self.ema_slow)
        if self.ema_fast >= self.ema_slow:
            raise _fail("ema_fast", f"fewer updates than ema_slow ({self.ema_slow})",
                        self.ema_fast)
        _number("target_qty", self.target_qty, 0.0, strict=True)
        _choice("order_type", self.order_type, ORDER_TYPES)
        _number("strategy_warmup_s", self.strategy_warmup_s, 0.0)
        _choice("on_strategy_error", self.on_strategy_error, ON_STRATEGY_ERROR)


@dataclass(frozen=True)
class BrokerConfig:
    """The paper broker: maker/taker fees in basis points (negative = rebate),
    broker_latency_us of market time before an order or a cancel reaches the book, slice_qty:
    the Executor's child order size (0 = no slicing), queue_model: how resting limit orders fill
    (`none`: when the opposite best reaches them; `risk_averse`: the tick backtester's queue
    position model, `workbench.engine.broker`), lot_size: the instrument's lot (base units;
    > 0 needed by `risk_averse`)."""

    maker_fee_bps: float = -0.5
    taker_fee_bps: float = 4.0
    broker_latency_us: float = 0.0
    slice_qty: float = 0.0
    queue_model: str = "none"
    lot_size: float = 0.0

    def __post_init__(self) -> None:
        for name in ("maker_fee_bps", "taker_fee_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                -100 <= value <= 100
            ):
                raise _fail(name, "basis points in [-100, 100]", value)
        _number("broker_latency_us", self.broker_latency_us, 0.0)
        _number("slice_qty", self.slice_qty, 0.0)
        _choice("queue_model", self.queue_model, QUEUE_MODELS)
        _number("lot_size", self.lot_size, 0.0)
        if self.queue_model != "none" and not self.lot_size > 0:
            raise _fail("lot_size", f"> 0 with queue_model {self.queue_model!r}",
                        self.lot_size)


@dataclass(frozen=True)
class RiskConfig:
    """Pre-trade limits: max_position (base units), max_orders_per_s, invalid_book_streak
    (consecutive batches with an invalid or crossed book that halt trading)."""

    max_position: float = 0.05
    max_orders_per_s: float = 50.0
    invalid_book_streak: int = 5000

    def __post_init__(self) -> None:
        _number("max_position", self.max_position, 0.0, strict=True)
        _number("max_orders_per_s", self.max_orders_per_s, 0.0, strict=True)
        _count("invalid_book_streak", self.invalid_book_streak)


HOUSEKEEPING_JOBS = ("journal_flush", "publish", "latency_fold", "book_check")


@dataclass(frozen=True)
class HousekeepingConfig:
    """The engine thread's jobs between batches, periods in ms: journal_flush (the journal's
    records go to its writer thread, which appends them to the write-ahead journal: a crash
    loses at most the records of the last journal_flush_ms, plus the flush's own delay; see
    `engine.journal`), publish (UI snapshots, >= 100: at most 10 a second), latency_fold,
    book_check (crossed books resync); stagger: each period replaced by the next prime.
    spike_threshold_us: tick-to-trade above which a batch is a spike. hiccup_threshold_us:
    the machine-hiccup probe (`feed.hiccup_probe.HiccupProbe`, a native thread waking every
    1 ms) records wake-ups later than this, µs, as the spike cause `machine_hiccup`; 0 runs no
    probe. latency_warmup_s: market-time seconds after the first batch whose batches are
    processed but not measured (e.g. a fast-forwarded start)."""

    journal_flush_ms: float = 100.0
    publish_ms: float = 100.0
    latency_fold_ms: float = 25.0
    book_check_ms: float = 2000.0
    stagger: bool = False
    spike_threshold_us: float = 1000.0
    hiccup_threshold_us: float = 100.0
    latency_warmup_s: float = 0.0

    def __post_init__(self) -> None:
        for job in HOUSEKEEPING_JOBS:
            _number(f"{job}_ms", getattr(self, f"{job}_ms"), 1.0)
        if self.publish_ms < 100.0:
            raise _fail("publish_ms", "a number >= 100 (the UI gets at most 10 snapshots/s)",
                        self.publish_ms)
        if not isinstance(self.stagger, bool):
            raise _fail("stagger", "True or False", self.stagger)
        _number("spike_threshold_us", self.spike_threshold_us, 0.0, strict=True)
        _number("hiccup_threshold_us", self.hiccup_threshold_us, 0.0)
        _number("latency_warmup_s", self.latency_warmup_s, 0.0)

    def period_ms(self, job: str) -> float:
        """A job's period in ms (one of HOUSEKEEPING_JOBS), prime-staggered when `stagger`."""
        value = float(getattr(self, f"{job}_ms"))
        return float(nearest_prime_ms(value)) if self.stagger else value


@dataclass(frozen=True)
class TuningConfig:
    """Latency tuning: gc_mode (`workbench.tuning`), gil_switch_interval_us (None: the
    interpreter's), feed_cpus / engine_cpus (CPU ids to pin the threads to), event_loop,
    feed_spin (the feed thread of `sim` and `ws:` sources busy-polls its sockets,
    `tuning.SpinSelector`, and the `native` source's its ring, in Python: one core at 100%
    for a pick-up by a running CPU; event_loop then applies to the engine thread),
    feed_warm_us (with feed_spin: every that many µs of idle polling one recent message runs
    through a shadow of the path, `engine.warm.PathWarmer`; 0 = off), native_cpu (the
    `native` source's C++ handler thread is pinned to this CPU and tries SCHED_FIFO; None:
    not pinned)."""

    gc_mode: str = "default"
    gil_switch_interval_us: float | None = None
    feed_cpus: tuple[int, ...] = ()
    engine_cpus: tuple[int, ...] = ()
    event_loop: str = "auto"
    feed_spin: bool = False
    feed_warm_us: float = 0.0
    native_cpu: int | None = None

    def __post_init__(self) -> None:
        _choice("gc_mode", self.gc_mode, GC_MODES)
        if self.native_cpu is not None and (isinstance(self.native_cpu, bool) or not isinstance(
                self.native_cpu, int) or self.native_cpu < 0):
            raise _fail("native_cpu", "None or a CPU id (int >= 0)", self.native_cpu)
        _choice("event_loop", self.event_loop, LOOP_CHOICES)
        _optional_number("gil_switch_interval_us", self.gil_switch_interval_us)
        for name in ("feed_cpus", "engine_cpus"):
            cpus = getattr(self, name)
            if not isinstance(cpus, tuple) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus
            ):
                raise _fail(name, "a tuple of CPU ids (ints >= 0)", cpus)
        if not isinstance(self.feed_spin, bool):
            raise _fail("feed_spin", "True or False", self.feed_spin)
        _number("feed_warm_us", self.feed_warm_us, 0.0)
        if self.feed_warm_us and not self.feed_spin:
            raise _fail("feed_warm_us", "0 unless feed_spin is True (it runs while the feed "
                        "thread polls)", self.feed_warm_us)


GROUPS: dict[str, type] = {"source": SourceConfig, "strategy": StrategyConfig,
                           "broker": BrokerConfig, "risk": RiskConfig,
                           "housekeeping": HousekeepingConfig, "tuning": TuningConfig}
# flat knob name -> its group
_GROUP_OF = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}


def _compose(knobs: dict[str, Any], groups: dict[str, Any]) -> dict[str, Any]:
    """Every group of EngineConfig: those in `groups` (else the defaults), replaced by a whole
    group given in `knobs`, then changed by the flat knobs of `knobs`. Raises ConfigError for
    a name that is neither a group nor a knob."""
    flat: dict[str, dict[str, Any]] = {}
    for name, value in knobs.items():
        if name in GROUPS and isinstance(value, GROUPS[name]):
            groups[name] = value
        elif name in _GROUP_OF:
            flat.setdefault(_GROUP_OF[name], {})[name] = value
        else:
            raise ConfigError(f"{name}: not a knob of EngineConfig (expected a group of "
                              f"{', '.join(GROUPS)} or one of {', '.join(_GROUP_OF)})")
    out = {}
    for group, cls in GROUPS.items():
        base, changes = groups.get(group), flat.get(group, {})
        out[group] = (cls(**changes) if base is None
                      else dataclasses.replace(base, **changes) if changes else base)
    return out


@dataclass(frozen=True, init=False)
class EngineConfig:
    """One engine run: the groups (see the module docstring) plus dispatch, duration and where
    the journal goes.

    dispatch: `polling` (queue drained every poll_interval_ms; 0 = busy polling), `blocking`
    (queue, the engine thread blocks on it), `callback` (the feed thread calls
    Engine.on_events). duration_s: stop after this many seconds (None: until stop() or the
    end of data). out_dir: parent of runs/<run-id>/ (None: no journal). run_id: None makes one.

    Built from groups (`source=SourceConfig(...)`, ...), from flat knobs (`speed=0`,
    `ema_fast=5`, ... routed to their group; `source="replay:PATH"` is the source spec), or
    both (flat knobs then override the given groups). Raises ConfigError for an unknown knob
    or an invalid value.
    """

    source: SourceConfig
    strategy: StrategyConfig
    broker: BrokerConfig
    risk: RiskConfig
    housekeeping: HousekeepingConfig
    tuning: TuningConfig
    dispatch: str = "callback"
    poll_interval_ms: float = 50.0
    duration_s: float | None = None
    out_dir: str | None = "runs"
    run_id: str | None = None

    def __init__(self, *, dispatch: str = "callback", poll_interval_ms: float = 50.0,
                 duration_s: float | None = None, out_dir: str | None = "runs",
                 run_id: str | None = None, **knobs: Any) -> None:
        for group, value in _compose(knobs, {}).items():
            object.__setattr__(self, group, value)
        for name, value in (("dispatch", dispatch), ("poll_interval_ms", poll_interval_ms),
                            ("duration_s", duration_s), ("out_dir", out_dir),
                            ("run_id", run_id)):
            object.__setattr__(self, name, value)
        _choice("dispatch", dispatch, DISPATCH_MODES)
        _number("poll_interval_ms", poll_interval_ms, 0.0)
        _optional_number("duration_s", duration_s)
        if self.strategy.target_qty > self.risk.max_position:
            raise _fail("target_qty", f"at most max_position ({self.risk.max_position})",
                        self.strategy.target_qty)

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with `changes` (groups, flat knobs or the top-level fields), validated; a
        flat knob changes its group and keeps the group's other knobs."""
        top = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in GROUPS}
        knobs = {name: value for name, value in changes.items() if name not in top}
        top.update((name, value) for name, value in changes.items() if name in top)
        groups = _compose(knobs, {g: getattr(self, g) for g in GROUPS})
        return EngineConfig(**top, **groups)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready): one entry per group (a dict of its knobs) and the
        top-level fields."""
        return dataclasses.asdict(self)

