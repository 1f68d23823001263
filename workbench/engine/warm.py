"""PathWarmer: keeps the feed thread's message path warm between socket reads.

On this kind of machine (a VM whose vCPU is interrupted some 400 times a second), the first
message of a read costs several times what the next ones do, even with the feed thread
spinning (`feed_spin`): the caches, TLB and branch predictors hold someone else's work by then.
The usual remedy in trading systems is to run the hot path on dummy data between real events,
stopping short of any effect (C. Cook, "When a Microsecond Is an Eternity: High Performance
Trading Systems in C++", CppCon 2017, "keeping the cache hot"). Here, every `feed_warm_us` of
idle polling (`tuning.SpinSelector.on_idle`), one recently received raw message goes through
the same code as a real one: a normalizer of the venue, `Dispatcher.submit`,
`Engine.on_events` (book sync, L2Book, strategy, Executor, PaperBroker, latency rows).

Everything it runs on is a shadow owned by the warmer, so the run's own state never sees a
shadow message: a second Engine (never started, no journal) whose strategy is a deep copy of
the real one, whose BookSync follows no sequence numbers (the same message may come again)
and whose books are seeded with the real book's top of book (a two-level snapshot), again
whenever a shadow book is invalid or crossed, and every `RESEED_EVERY` runs so its mid stays
near the real one. The shadow's fills, positions and latency rows are its own and are never
reported (the Executor keeps only its newest fills, so a long run does not accumulate them).
Raw messages are remembered one per channel (the last depth update, quote, trade), and a run
takes the next channel in turn, so every message type's code stays warm.

A strategy is called on shadow books too, so it must keep its effects in its own state (true
of `EmaCross`); `Engine(config)` with `feed_warm_us` raises ConfigError for a strategy that
`copy.deepcopy` cannot copy.

Measured (`python -m workbench.bench run dispatch`, phases callback_spin and callback_warm):
at the live pace, warming at 300 µs takes the callback path's tick-to-trade P50 from 94 to
38 µs and its P99 from 421 to 321 µs in the same run.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from collections.abc import Callable
from typing import Protocol

import numpy as np

from workbench.book.l2 import L2Book
from workbench.book.sync import BookSync
from workbench.engine.config import EngineConfig
from workbench.engine.dispatch import Dispatcher
from workbench.engine.execution import Executor
from workbench.engine.strategy import Strategy
from workbench.errors import ConfigError
from workbench.events import M_SNAPSHOT, EventFlag, EventKind, MessageInfo, empty_batch
from workbench.feed.venues import get_venue
from workbench.latency.recorder import LatencyRecorder

log = logging.getLogger("workbench.engine")

RESEED_EVERY = 1000  # runs between two seedings of a shadow book from the real one
SHADOW_LATENCY_ROWS = 256  # the shadow's latency buffer folds this often (small folds)
_SEED_KINDS = (EventKind.SNAPSHOT_BEGIN, EventKind.BID_LEVEL, EventKind.ASK_LEVEL,
               EventKind.SNAPSHOT_END)


class ShadowPath(Protocol):
    """What the warmer needs of the engine it runs shadow messages through (an Engine)."""

    sync: BookSync
    latency: LatencyRecorder
    dispatcher: Dispatcher
    executor: Executor
    batches: int


class Owner(Protocol):
    """The engine a shadow is made of (an Engine)."""

    config: EngineConfig
    strategy: Strategy
    run_id: str


def shadow_of(engine: Owner) -> ShadowPath:
    """The engine shadow messages run through: an engine of `engine`'s class with its config
    without journal, warm-ups or warmer, callback dispatch, and a deep copy of its strategy.
    Raises ConfigError when the strategy cannot be copied."""
    try:
        strategy = copy.deepcopy(engine.strategy)
    except Exception as exc:
        raise ConfigError(f"feed_warm_us: the strategy must be copyable (copy.deepcopy) to "
                          f"run on shadow messages: {type(exc).__name__}: {exc}") from exc
    return type(engine)(engine.config.replace(
        out_dir=None, run_id=f"{engine.run_id}-shadow", dispatch="callback",
        strategy_warmup_s=0.0, latency_warmup_s=0.0, feed_spin=False, feed_warm_us=0.0),
        strategy)


class PathWarmer:
    """Runs remembered raw messages through a shadow of the engine's path (module docstring).

    make_shadow: builds the engine shadow messages run through (`shadow_of(engine)`: same
    config, no journal, callback dispatch, a deep copy of the strategy; ConfigError when the
    strategy cannot be copied); its `sync` is replaced here by a BookSync without sequencing
    and its latency recorder by a small one. real_sync: the run's BookSync,
    read for top-of-book seeds only. venue: the normalizer venue key. Call `remember` with every
    real message (feed thread), and the instance itself when the feed thread is idle (in the
    polling modes the engine thread updates the real books meanwhile: a seed read across an
    update can come out crossed, and is taken again at the next run).
    `runs` counts shadow messages run. Warming is an optimization: an exception in it is logged
    with its traceback (kept in `error`) and stops the warming, never the run.
    """

    def __init__(self, make_shadow: Callable[[], ShadowPath], real_sync: BookSync, venue: str
                 ) -> None:
        shadow = make_shadow()
        shadow.sync = BookSync(get_venue("tardis").sequencing)
        shadow.latency = LatencyRecorder(buffer_rows=SHADOW_LATENCY_ROWS)
        self.shadow = shadow
        self.real_sync = real_sync
        self.normalizer = get_venue(venue).normalizer()
        self.runs = 0
        self.error = ""
        self._messages: dict[str, bytes] = {}  # channel -> the last raw message
        self._books: dict[int, L2Book] = {}  # symbol_id -> the shadow's book, once seeded
        self._turn = 0
        self._info = MessageInfo()
        self._info.kind = M_SNAPSHOT
        self._seed = empty_batch(len(_SEED_KINDS))
        self._seed["kind"] = _SEED_KINDS
        self._seed["flags"] = int(EventFlag.SNAPSHOT)

    def remember(self, message: bytes, channel: str) -> None:
        """Keep `message` (raw bytes of one real message with events) as its channel's last."""
        self._messages[channel] = message

    def __call__(self) -> None:
        """One shadow message through the path (nothing remembered yet: nothing to do)."""
        if not self._messages or self.error:
            return
        try:
            self._run()
        except Exception:
            self.error = traceback.format_exc()
            log.error("path warmer failed, warming stops (the run goes on):\n%s", self.error)

    def _run(self) -> None:
        messages = self._messages
        self._turn += 1
        message = list(messages.values())[self._turn % len(messages)]
        normalizer = self.normalizer
        batch = normalizer.normalize(message, time.perf_counter_ns())
        if not len(batch):
            return
        symbol_id = int(batch[0]["symbol_id"])
        book = self._books.get(symbol_id)
        if (book is None or not book.valid or book.crossed
                or self.runs % RESEED_EVERY == 0) and not self._reseed(symbol_id):
            return
        self.runs += 1
        self.shadow.dispatcher.submit(batch, normalizer.last)

    def _reseed(self, symbol_id: int) -> bool:
        """The shadow book of `symbol_id` becomes the real book's top of book (two levels);
        False when the real book has none to give (not synced yet, one-sided, crossed)."""
        real = self.real_sync.get(symbol_id)
        if real is None or not _tradable(real):
            return False
        seed, info = self._seed, self._info
        seed["symbol_id"] = symbol_id
        seed["price"] = (0.0, real.best_bid, real.best_ask, 0.0)
        seed["qty"] = (0.0, real.best_bid_qty, real.best_ask_qty, 0.0)
        info.symbol_id = symbol_id
        sync = self.shadow.sync
        if symbol_id not in self._books:  # the shadow ladder gets the real grid from birth
            sync.tick_sizes[symbol_id] = real.tick_size
        sync.process(seed, info)
        self._books[symbol_id] = sync.book(symbol_id)
        return True


def _tradable(book: L2Book) -> bool:
    bid, ask = book.best_bid, book.best_ask
    return bool(book.valid and np.isfinite(bid) and np.isfinite(ask) and bid < ask)
