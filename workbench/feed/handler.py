"""The native feed handler: a C++ thread replaying an event batch into a ShmRing.

The thread (`csrc/wb_feed.cpp`) runs without the GIL. It publishes `count` events cycling over
the batch, paced one of three ways (`FeedConfig.mode`):
  flat   as fast as the ring takes them;
  rate   `value` events per second, event i due at start + i / rate;
  speed  the recorded `ts_recv_ns` deltas divided by `value` (2.0 = twice as fast).
Each publish stamps `seq` (ring sequence number) and `ts_publish_ns` (CLOCK_MONOTONIC, the clock
of `time.perf_counter_ns()`). A full ring drops and counts, unless `lossless`, where the thread
waits for room instead (the ring itself never blocks).

In-process: `FeedHandler(ring, events, FeedConfig(...)).start()`. As its own process:
`workbench feed --ring NAME --source FILE.npy (--rate R | --speed F | --flat)`; the event file
is any recording normalized (`workbench convert RECORDING OUT.npy`). The live native handler
is `workbench.feed.native` (`workbench feed --venue ...`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench._feed import ffi, lib
from workbench.errors import ConfigError, FeedError, RecordingError
from workbench.events import EVENT_DTYPE
from workbench.feed.ring import ShmRing

Mode = Literal["flat", "rate", "speed"]
_MODES: dict[str, int] = {"flat": lib.WB_FEED_FLAT, "rate": lib.WB_FEED_RATE,
                          "speed": lib.WB_FEED_SPEED}
_WAIT_SLICE_NS = 100_000_000  # wait in slices so Ctrl-C and signals get through


@dataclass(frozen=True)
class FeedConfig:
    """How the replay is paced.

    mode: "flat", "rate" (value = events/s) or "speed" (value = factor on recorded time).
    count: events to publish, cycling over the batch; None = the batch once.
    lossless: wait for room when the ring is full instead of dropping.
    Raises ConfigError on an unknown mode, a value <= 0 for rate/speed, or a negative count.
    """

    mode: Mode = "flat"
    value: float = 0.0
    count: int | None = None
    lossless: bool = False

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"mode must be one of {sorted(_MODES)}, got {self.mode!r}")
        if self.mode != "flat" and not (self.value > 0 and np.isfinite(self.value)):
            raise ConfigError(f"{self.mode} must be a positive number, got {self.value!r}")
        if self.count is not None and self.count < 0:
            raise ConfigError(f"count must be >= 0, got {self.count}")


@dataclass(frozen=True)
class FeedStatus:
    """published/dropped: events so far; started_ns/finished_ns: CLOCK_MONOTONIC ns (0 = not
    yet); running: the thread is publishing; stopped: stop() ended it before `count`."""

    published: int
    dropped: int
    started_ns: int
    finished_ns: int
    running: bool
    stopped: bool

    @property
    def elapsed_s(self) -> float:
        """Seconds from start to finish (to now while running)."""
        if not self.started_ns:
            return 0.0
        end = self.finished_ns or time.perf_counter_ns()
        return (end - self.started_ns) / 1e9

    @property
    def events_per_s(self) -> float:
        """(published + dropped) / elapsed_s."""
        elapsed = self.elapsed_s
        return (self.published + self.dropped) / elapsed if elapsed > 0 else 0.0


class FeedHandler:
    """A replay thread publishing `events` (1-D EVENT_DTYPE, non-empty) into `ring`.

    The handler keeps the batch and the ring's mapping alive until `close()`, even if the ring
    is closed meanwhile. Use as a context manager (close = stop + join). Raises ValueError for a
    bad batch, RingClosed for a closed ring, FeedError if the thread cannot start.
    """

    def __init__(self, ring: ShmRing, events: np.ndarray, config: FeedConfig) -> None:
        events = np.asarray(events)
        if events.dtype != EVENT_DTYPE or events.ndim != 1 or events.size == 0:
            raise ValueError(f"expected a non-empty 1-D EVENT_DTYPE batch, got dtype "
                             f"{events.dtype} shape {events.shape}")
        self.ring = ring
        self.config = config
        self._events = np.ascontiguousarray(events)
        self._ring_handle, self._ring_owner = ring._native()
        self._feed: Any = None
        self._status = ffi.new("wb_feed_status *")
        self._final: FeedStatus | None = None

    def start(self) -> FeedHandler:
        """Start the thread (once). Returns self."""
        if self._feed is not None or self._final is not None:
            raise FeedError("this feed handler was already started")
        cfg = self.config
        count = self._events.size if cfg.count is None else cfg.count
        err = ffi.new("char[]", 256)
        feed = lib.wb_feed_start(
            self._ring_handle, ffi.from_buffer("wb_event[]", self._events), self._events.size,
            count, _MODES[cfg.mode], float(cfg.value), int(cfg.lossless), err, 256,
        )
        if feed == ffi.NULL:
            raise FeedError(f"feed handler did not start: {ffi.string(err).decode()}")
        self._feed = feed
        # joins and frees the thread on close(), garbage collection or interpreter exit; holds
        # the batch and the ring mapping until the thread is gone
        self._finalizer = weakref.finalize(self, _free_feed, feed, self._events, self._ring_owner)
        return self

    def _native(self) -> Any:
        if self._feed is None:
            state = "closed" if self._final is not None else "not started"
            raise FeedError(f"the feed handler is {state}")
        return self._feed

    def stop(self) -> None:
        """Ask the thread to stop after its current batch (returns at once)."""
        lib.wb_feed_stop(self._native())

    def wait(self, timeout: float | None = None) -> bool:
        """Block (GIL released) until the thread finishes or `timeout` s pass; True if done."""
        feed = self._native()
        deadline = None if timeout is None else time.perf_counter_ns() + int(timeout * 1e9)
        while True:
            left = _WAIT_SLICE_NS if deadline is None else deadline - time.perf_counter_ns()
            if lib.wb_feed_wait(feed, max(0, min(left, _WAIT_SLICE_NS))):
                return True
            if deadline is not None and time.perf_counter_ns() >= deadline:
                return False

    @property
    def status(self) -> FeedStatus:
        """Counters now (see FeedStatus); the final counters after close()."""
        if self._final is not None:
            return self._final
        s = self._status
        lib.wb_feed_status_get(self._native(), s)
        return FeedStatus(int(s.published), int(s.dropped), int(s.started_ns),
                          int(s.finished_ns), bool(s.running), bool(s.stopped))

    def close(self) -> None:
        """Stop, join and free the thread; releases the batch and the ring mapping."""
        if self._feed is not None:
            self.stop()
            self.wait()
            self._final = self.status
            self._finalizer()
            self._feed = None
        self._ring_handle = self._ring_owner = None

    def __enter__(self) -> FeedHandler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_feed(feed: Any, *keep_alive: object) -> None:
    lib.wb_feed_free(feed)


def load_events(path: Path) -> np.ndarray:
    """A .npy batch of EVENT_DTYPE (memory-mapped). Raises RecordingError naming the file."""
    try:
        events = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: cannot read an event batch: {exc}") from exc
    if events.dtype != EVENT_DTYPE or events.ndim != 1 or events.size == 0:
        raise RecordingError(f"{path}: expected a non-empty 1-D EVENT_DTYPE array, got dtype "
                             f"{events.dtype} shape {events.shape}")
    return events


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`workbench feed`: publish into a ring from this process, either an event file (the
    replay thread: --source FILE.npy with --rate, --speed or --flat) or a venue's websocket
    read live by the native handler (--venue, `workbench.feed.native`)."""
    parser.add_argument("--ring", required=True, help="ring name (/dev/shm/wb-NAME)")
    parser.add_argument("--source", type=Path, default=None,
                        help="EVENT_DTYPE .npy file to replay (see `workbench convert`)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="with --source: events per second")
    pace.add_argument("--speed", type=float,
                      help="with --source: factor on the recorded ts_recv_ns timing")
    pace.add_argument("--flat", action="store_true",
                      help="with --source: as fast as the ring takes them")
    parser.add_argument("--count", type=int, default=None,
                        help="events to publish, cycling over the file (default: the file once)")
    parser.add_argument("--create", action="store_true",
                        help="create the ring (unlinked again when this process exits)")
    parser.add_argument("--capacity", type=int, default=1 << 16,
                        help="records, a power of two (with --create; default 65536)")
    parser.add_argument("--lossless", action="store_true",
                        help="wait for room when the ring is full instead of dropping")
    from workbench.feed import native

    native.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """--venue: the native handler (`workbench.feed.native.main`). --source: run the replay to
    the end (or SIGINT/SIGTERM) and print a summary line; returns 0. Raises ConfigError when
    neither, or both, is given, or --source lacks its pace."""
    if (args.venue is None) == (args.source is None):
        raise ConfigError("workbench feed: give --source FILE.npy (replay an event file) or "
                          "--venue VENUE (read a venue live), not both")
    if args.venue is not None:
        from workbench.feed import native

        return native.main(args)
    if args.rate is not None:
        config = FeedConfig("rate", args.rate, args.count, args.lossless)
    elif args.speed is not None:
        config = FeedConfig("speed", args.speed, args.count, args.lossless)
    elif args.flat:
        config = FeedConfig("flat", 0.0, args.count, args.lossless)
    else:
        raise ConfigError("workbench feed --source: give its pace, --rate R, --speed F or "
                          "--flat")
    events = load_events(args.source)
    ring = ShmRing.create(args.ring, args.capacity) if args.create else ShmRing.attach(args.ring)
    with ring, FeedHandler(ring, events, config) as feed:
        previous = signal.signal(signal.SIGTERM, lambda *_: feed.stop())
        try:
            feed.wait()
        except KeyboardInterrupt:
            feed.stop()
            feed.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
        st = feed.status
    print(
        f"feed {args.ring}: published {st.published} dropped {st.dropped} in "
        f"{st.elapsed_s:.3f} s ({st.events_per_s / 1e6:.2f}M events/s)"
        + (" [stopped]" if st.stopped else ""),
        file=sys.stderr,
    )
    return 0
