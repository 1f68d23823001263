"""Dispatcher: how a batch gets from the feed thread to the engine (the `queue` stage).

Modes (switchable while running with `set_mode`, losing and duplicating nothing):
- `polling`: the feed thread appends (a copy of) the batch to a FIFO; the engine thread drains
  it every `poll_interval_ms` (50 by default, as in the design being reproduced; 0 = busy
  polling, the engine thread spins on the queue).
- `blocking`: same FIFO, but the engine thread blocks on an event the feed thread sets.
- `callback`: the feed thread calls the handler itself, right away.

Ordering: there is one FIFO and one lock. Whoever handles a batch holds the lock; in callback
mode the feed thread first drains what is still queued (batches queued before a switch), then
handles its own, so batches are handled exactly once and in feed order whatever the switches.
Every submitted batch gets a dispatch sequence number (1, 2, ...) that travels with it; the
handler sees it and can verify contiguity.

handler(batch, info, publish_ns, dseq, queue_depth): batch is a 1-D EVENT_DTYPE array and info
the normalizer's MessageInfo of that message (or None), both copies in the queued modes and the
feed's own (reused) objects in callback mode; publish_ns the perf_counter_ns stamp taken when
the feed submitted it; queue_depth how many batches were still queued behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.errors import ConfigError

MODES = ("polling", "blocking", "callback")

Handler = Callable[[np.ndarray, Any, int, int, int], None]


class Dispatcher:
    """One FIFO + one lock between the feed thread (`submit`) and the engine thread (`wait`,
    `drain`). `lock` is public: the engine's housekeeping takes it to run between batches."""

    def __init__(self, handler: Handler, mode: str = "callback",
                 poll_interval_ms: float = 50.0) -> None:
        self._handler = handler
        self._queue: deque[tuple[np.ndarray, Any, int, int]] = deque()
        self.lock = threading.Lock()
        self._ready = threading.Event()
        self.submitted = 0
        self.handled = 0
        self.max_depth = 0
        self.mode = "callback"
        self.poll_interval_s = poll_interval_ms / 1000.0
        self._next_poll_ns = 0  # polling: perf_counter_ns of the next poll
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """Switch dispatch mode (any thread, any time). Raises ConfigError for other modes."""
        if mode not in MODES:
            raise ConfigError(f"dispatch: expected one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self._ready.set()  # a blocked engine thread re-reads the mode

    @property
    def depth(self) -> int:
        """Batches queued now."""
        return len(self._queue)

    def submit(self, batch: np.ndarray, info: Any = None) -> None:
        """Feed thread: hand over one batch and its MessageInfo (callback: handled before this
        returns; queued modes: both copied, so the feed may reuse them at once)."""
        now = time.perf_counter_ns()
        self.submitted += 1
        dseq = self.submitted
        if self.mode == "callback":
            with self.lock:
                if self._queue:
                    self.drain_locked()
                self._handler(batch, info, now, dseq, 0)
                self.handled += 1
            return
        queue = self._queue
        queue.append((batch.copy(), None if info is None else info.copy(), now, dseq))
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        if self.mode == "blocking":
            self._ready.set()

    def drain(self) -> int:
        """Engine thread: handle every queued batch now; returns how many."""
        if not self._queue:
            return 0
        with self.lock:
            return self.drain_locked()

    def poll(self) -> int:
        """Engine thread, after each `wait`: drain when the mode says so. polling: once the
        poll interval has passed since the last poll (the engine also wakes for its
        housekeeping jobs; those wake-ups must not poll sooner); other modes: always.
        Returns the batches handled."""
        if self.mode == "polling":
            now = time.perf_counter_ns()
            if now < self._next_poll_ns:
                return 0
            self._next_poll_ns = now + int(self.poll_interval_s * 1e9)
        return self.drain()

    def drain_locked(self) -> int:
        queue = self._queue
        handler = self._handler
        n = 0
        while queue:
            batch, info, publish_ns, dseq = queue.popleft()
            handler(batch, info, publish_ns, dseq, len(queue))
            n += 1
        self.handled += n
        return n

    async def wait(self, timeout_s: float) -> None:
        """Engine thread (inside its event loop): wait for work in the current mode, at most
        `timeout_s`. polling: sleep until the next poll is due (busy polling:
        `asyncio.sleep(0)`, one loop turn); blocking: block the thread until a submit (the
        loop's other tasks wait), then one loop turn; callback: sleep (the feed thread does
        the work)."""
        mode = self.mode
        if mode == "polling":
            until_poll = (self._next_poll_ns - time.perf_counter_ns()) / 1e9
            await asyncio.sleep(max(0.0, min(until_poll, timeout_s)))
        elif mode == "blocking":
            if not self._queue:
                self._ready.wait(timeout_s)
            self._ready.clear()
            await asyncio.sleep(0)  # one loop turn for the engine's other tasks
        else:
            await asyncio.sleep(timeout_s)
