"""EngineConfig: every knob of one engine run, a frozen dataclass validated on construction.

The CLI (`workbench run`), the `%hft start` magic and the Jupyter panel all build this object.
An invalid value raises ConfigError naming the field, the accepted values and what came.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.errors import ConfigError
from workbench.feed.venues import VENUES as FEED_VENUES
from workbench.tuning import GC_MODES, LOOP_CHOICES

DISPATCH_MODES = ("polling", "blocking", "callback")
SOURCE_KINDS = ("sim", "replay", "ring", "ws")
ORDER_TYPES = ("market", "limit")
ON_STRATEGY_ERROR = ("halt", "continue")
# the normalizer venue keys of live venues (tardis is a file format, not a venue to trade)
VENUES = tuple(v for v in FEED_VENUES if v != "tardis")

def nearest_prime_ms(ms: float) -> int:
    """The smallest prime >= ms (>= 2): a staggered housekeeping period. Distinct prime
    periods make two jobs share a loop iteration only once per product of their periods."""
    n = max(2, math.ceil(ms))
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def _fail(name: str, accepted: str, got: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {accepted}, got {got!r}")


@dataclass(frozen=True)
class EngineConfig:
    """One engine run.

    source: `sim` (SimExchange started by the engine), `replay:PATH`, `ring:NAME`, `ws:URL`.
    recording: for `sim`, a recording SimExchange serves instead of its simulator (path).
    rest_url: for `ws:`, the base URL of the Binance REST depth endpoint (None: the venue's).
    speed: replay pace (1.0 as recorded, N times faster, 0 flat out: the run ends with the
    recording). duration_s: stop after this many seconds (None: until stop() / end of data).
    idle_end_s: a websocket source that delivered data and then stays silent this long ends
    the run (SimExchange keeps the connection open after a recording; None: `sim` with a
    recording at speed 0 uses 1.0 s, otherwise never).
    strategy_warmup_s: market-time seconds after the first batch during which the strategy is
    not called (the book syncs meanwhile; makes live runs of a recording comparable).
    latency_warmup_s: market-time seconds after the first batch whose batches are processed
    but not measured (no latency rows, no spikes): e.g. a fast-forwarded start of a recording
    (SimExchange `Window`) before the paced part that is measured.
    dispatch: `polling` (queue drained every poll_interval_ms; 0 = busy polling), `blocking`
    (queue, engine blocks on it), `callback` (feed thread calls Engine.on_events).
    Strategy: EmaCross of mid with ema_fast/ema_slow updates, target position +-target_qty,
    orders of order_type. Broker: maker/taker fees in basis points, latency in µs of market
    time. Risk: max_position (qty), max_orders_per_s, invalid_book_streak (consecutive
    batches with an invalid/NaN book that halt trading). slice_qty: Executor child size
    (0 = no slicing). Housekeeping periods in ms (`stagger`: replaced by the next prime).
    Tuning: gc_mode, gil_switch_interval_us (None: the interpreter's), feed_cpus / engine_cpus
    (CPU ids), event_loop, feed_spin (the feed thread of `sim` and `ws:` sources busy-polls its
    sockets on asyncio's loop, `tuning.SpinSelector`, instead of sleeping in epoll: one core
    at 100% for a pick-up by a running CPU; event_loop then applies to the engine thread),
    feed_warm_us (with feed_spin: every that many µs of idle polling the feed thread runs one
    recent message through a shadow of the path, `workbench.engine.warm.PathWarmer`, so the
    first message of the next read finds it warm; 0 = off).
    out_dir: parent of runs/<run-id>/ (None: no journal).
    """

    source: str = "sim"
    venue: str = "binance"
    symbols: tuple[str, ...] = ("BTCUSDT",)
    recording: str | None = None
    rest_url: str | None = None
    speed: float = 1.0
    duration_s: float | None = None
    idle_end_s: float | None = None
    seed: int = 7
    dispatch: str = "callback"
    poll_interval_ms: float = 50.0
    strategy_warmup_s: float = 0.0
    latency_warmup_s: float = 0.0
    ema_fast: int = 20
    ema_slow: int = 100
    target_qty: float = 0.01
    order_type: str = "market"
    maker_fee_bps: float = -0.5
    taker_fee_bps: float = 4.0
    broker_latency_us: float = 0.0
    max_position: float = 0.05
    max_orders_per_s: float = 50.0
    invalid_book_streak: int = 5000
    slice_qty: float = 0.0
    on_strategy_error: str = "halt"
    spike_threshold_us: float = 1000.0
    journal_flush_ms: float = 1000.0
    publish_ms: float = 100.0
    latency_fold_ms: float = 25.0
    book_check_ms: float = 2000.0
    stagger: bool = False
    gc_mode: str = "default"
    gil_switch_interval_us: float | None = None
    feed_cpus: tuple[int, ...] = ()
    engine_cpus: tuple[int, ...] = ()
    event_loop: str = "auto"
    feed_spin: bool = False
    feed_warm_us: float = 0.0
    out_dir: str | None = "runs"
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = self.source_kind
        if kind not in SOURCE_KINDS or (kind != "sim" and not self.source_arg):
            raise _fail("source", "sim | replay:PATH | ring:NAME | ws:URL", self.source)
        if self.venue not in VENUES:
            raise _fail("venue", " | ".join(VENUES), self.venue)
        symbols = self.symbols
        if isinstance(symbols, str) or not symbols or not all(
            isinstance(s, str) and s for s in symbols
        ):
            raise _fail("symbols", "a non-empty tuple of symbol strings", symbols)
        object.__setattr__(self, "symbols", tuple(s.upper() for s in symbols))
        for name, accepted in (
            ("dispatch", DISPATCH_MODES),
            ("order_type", ORDER_TYPES),
            ("on_strategy_error", ON_STRATEGY_ERROR),
            ("gc_mode", GC_MODES),
            ("event_loop", LOOP_CHOICES),
        ):
            if getattr(self, name) not in accepted:
                raise _fail(name, " | ".join(accepted), getattr(self, name))
        self._number("speed", 0.0)
        self._number("poll_interval_ms", 0.0)
        self._number("broker_latency_us", 0.0)
        self._number("slice_qty", 0.0)
        self._number("target_qty", 0.0, strict=True)
        self._number("max_position", 0.0, strict=True)
        self._number("max_orders_per_s", 0.0, strict=True)
        self._number("spike_threshold_us", 0.0, strict=True)
        for name in ("journal_flush_ms", "publish_ms", "latency_fold_ms", "book_check_ms"):
            self._number(name, 1.0)
        if self.publish_ms < 100.0:
            raise _fail("publish_ms", "a number >= 100 (the UI gets at most 10 snapshots/s)",
                        self.publish_ms)
        for name in ("maker_fee_bps", "taker_fee_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                -100 <= value <= 100
            ):
                raise _fail(name, "basis points in [-100, 100]", value)
        self._number("strategy_warmup_s", 0.0)
        self._number("latency_warmup_s", 0.0)
        for name in ("duration_s", "idle_end_s", "gil_switch_interval_us"):
            if getattr(self, name) is not None:
                self._number(name, 0.0, strict=True)
        for name in ("ema_fast", "ema_slow", "invalid_book_streak"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(name, "an integer >= 1", value)
        if self.ema_fast >= self.ema_slow:
            raise _fail("ema_fast", f"fewer updates than ema_slow ({self.ema_slow})",
                        self.ema_fast)
        if self.target_qty > self.max_position:
            raise _fail("target_qty", f"at most max_position ({self.max_position})",
                        self.target_qty)
        for name in ("feed_cpus", "engine_cpus"):
            cpus = getattr(self, name)
            if not isinstance(cpus, tuple) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus
            ):
                raise _fail(name, "a tuple of CPU ids (ints >= 0)", cpus)
        if not isinstance(self.seed, int):
            raise _fail("seed", "an integer", self.seed)
        if not isinstance(self.feed_spin, bool):
            raise _fail("feed_spin", "True or False", self.feed_spin)
        self._number("feed_warm_us", 0.0)
        if self.feed_warm_us and not self.feed_spin:
            raise _fail("feed_warm_us", "0 unless feed_spin is True (it runs while the feed "
                        "thread polls)", self.feed_warm_us)
        if self.recording is not None and kind != "sim":
            raise _fail("recording", "None unless source is sim", self.recording)
        if self.rest_url is not None and not self.rest_url.startswith(("http://", "https://")):
            raise _fail("rest_url", "None or an http(s):// URL", self.rest_url)

    def _number(self, name: str, low: float, strict: bool = False) -> None:
        value = getattr(self, name)
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and (value > low if strict else value >= low)
        )
        if not ok:
            raise _fail(name, f"a finite number {'>' if strict else '>='} {low:g}", value)

    @property
    def source_kind(self) -> str:
        """`sim`, `replay`, `ring` or `ws`."""
        return self.source.split(":", 1)[0]

    @property
    def source_arg(self) -> str:
        """What follows `kind:` in `source` (path, ring name or URL); '' for sim."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def idle_end(self) -> float | None:
        """Seconds of silence that end a websocket run (see idle_end_s)."""
        if self.idle_end_s is not None:
            return self.idle_end_s
        if self.source_kind == "sim" and self.recording and self.speed == 0:
            return 1.0
        return None

    def period_ms(self, name: str) -> float:
        """A housekeeping period in ms (`journal_flush`, `publish`, `latency_fold`,
        `book_check`), prime-staggered when `stagger` is set."""
        value = float(getattr(self, f"{name}_ms"))
        return float(nearest_prime_ms(value)) if self.stagger else value

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of every field."""
        return asdict(self)
