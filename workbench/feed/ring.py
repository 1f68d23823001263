"""ShmRing: the single-producer single-consumer ring of events in POSIX shared memory.

The ring lives in `/dev/shm/wb-<name>` (mode 0600): a 192-byte header (magic, layout version,
record size, capacity, producer pid, creation time, then producer and consumer cursors on their
own cache lines) followed by `capacity` slots of `EVENT_DTYPE` (64 bytes each). The C++ side
(`csrc/wb_ring.cpp`, module `workbench._feed`) does the pushes and reads; this module wraps it.

Reads are zero-copy: `read(max_n)` returns a read-only numpy view of the slots themselves. The
view is valid until the next `read`, `pop_into` or `release` call, which hand its slots back to
the producer; copy it (`view.copy()`) to keep it longer. A read never spans the wrap: when the
waiting records run past the last slot, `read` returns those up to the last slot and the next
`read` returns the rest from slot 0.

The producer never blocks: a push into a full ring is dropped and counted (`RingStats.dropped`)
and its sequence number is used up, so the consumer sees a sequence gap, adds it to
`RingStats.gaps` and sets `EventFlag.GAP` on the record after it.

`workbench rings` prints `ShmRing.list()` as a table.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench._feed import ffi, lib
from workbench.errors import RingClosed, RingError, RingExists, RingLayoutError, RingNotFound
from workbench.events import EVENT_DTYPE

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "wb-"
MIN_CAPACITY: int = lib.WB_RING_MIN_CAPACITY
MAX_CAPACITY: int = lib.WB_RING_MAX_CAPACITY
_NAME_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{lib.WB_RING_NAME_MAX}}}")
_ERRLEN = 512
_read = lib.wb_ring_read
_read_wait = lib.wb_ring_read_wait
_NULL = ffi.NULL
_HEAD_WORD = ffi.offsetof("wb_ring_header", "head") // 8


@dataclass(frozen=True)
class RingStats:
    """Counters of one ring, read from its shared header.

    published / consumed: records pushed into / handed back from the ring since creation.
    dropped: pushes refused because the ring was full (counted by the producer).
    gaps: sequence numbers the consumer found missing (equals `dropped` once the consumer has
    read past the last drop). high_water: most records ever waiting at once. pending: records
    waiting now (published - consumed). created_ns: CLOCK_REALTIME ns since the Unix epoch.
    producer_pid: 0 when no producer has claimed the ring yet. stale: the producer process is
    gone (the ring still holds what it published).
    """

    name: str
    capacity: int
    published: int
    consumed: int
    dropped: int
    gaps: int
    high_water: int
    pending: int
    created_ns: int
    creator_pid: int
    producer_pid: int
    stale: bool


def validate_name(name: str) -> str:
    """Return `name` if it is a valid ring name (1..200 of [A-Za-z0-9._-]), else ValueError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid ring name {name!r}: expected 1..{lib.WB_RING_NAME_MAX} characters "
            "of [A-Za-z0-9._-]"
        )
    return name


def validate_capacity(capacity: int) -> int:
    """Return `capacity` if it is a power of two in [16, 2**26] records, else ValueError."""
    ok = isinstance(capacity, int | np.integer) and not isinstance(capacity, bool)
    if not ok or not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity & (capacity - 1):
        raise ValueError(
            f"ring capacity must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY} "
            f"records, got {capacity!r}"
        )
    return int(capacity)


def _raise_for(code: int, err: Any) -> None:
    message = ffi.string(err).decode(errors="replace")
    if code == lib.WB_ENOTFOUND:
        raise RingNotFound(message)
    if code == lib.WB_ELAYOUT:
        raise RingLayoutError(message)
    if code == lib.WB_EINVAL:
        raise ValueError(message)
    if code == lib.WB_EEXIST:
        raise RingExists(message)
    raise RingError(message)


def _unlink_if_creator(name: str, creator_pid: int) -> None:
    if os.getpid() == creator_pid:  # never from a forked child's copy of the object
        lib.wb_ring_unlink(name.encode(), ffi.NULL, 0)


class ShmRing:
    """One process's handle on a ring: `ShmRing.create(name, capacity)` or `ShmRing.attach(name)`.

    Single producer, single consumer: one process (or thread) pushes, one reads. Use it as a
    context manager or call `close()`; the creator's `close()` also unlinks the ring from
    /dev/shm (processes that have it attached keep their mapping). Every call on a closed ring
    raises `RingClosed`; views returned earlier stay valid while they are referenced.
    """

    def __init__(self, name: str, handle: Any, creator: bool) -> None:
        # the mapping is unmapped when the last holder of `_owner` goes (views keep it alive)
        self._owner = ffi.gc(lib.wb_ring_slots(handle), lambda _p: lib.wb_ring_close(handle))
        self._h: Any = handle
        self.name = name
        self.capacity: int = int(lib.wb_ring_capacity(handle))
        self.creator = creator
        slots = np.frombuffer(ffi.buffer(self._owner, self.capacity * EVENT_DTYPE.itemsize),
                              dtype=EVENT_DTYPE)
        slots.flags.writeable = False
        self._slots: np.ndarray | None = slots
        self._empty = slots[:0]
        # the header as uint64 words: an empty poll reads the producer's head from here, with
        # no call into C (x86 and arm64 loads of an aligned word are atomic)
        header = ffi.cast("char *", self._owner) - ffi.sizeof("wb_ring_header")
        self._words: memoryview | None = memoryview(
            ffi.buffer(header, ffi.sizeof("wb_ring_header"))).cast("Q")
        self._taken: int = lib.wb_ring_taken(handle)  # records this consumer has taken
        self._held = False  # the last read's slots are not handed back yet
        self._mask = self.capacity - 1
        self._stats = ffi.new("wb_ring_stats *")
        self._finalizer = (
            weakref.finalize(self, _unlink_if_creator, name, os.getpid()) if creator else None
        )
        self.stale = False

    @classmethod
    def create(cls, name: str, capacity: int) -> ShmRing:
        """Create `/dev/shm/wb-<name>` holding `capacity` records (a power of two, 16..2**26).

        Raises ValueError (bad name or capacity), RingExists (the name is taken), RingError
        (shared memory exhausted or another system error).
        """
        validate_name(name)
        validate_capacity(capacity)
        code = ffi.new("int *")
        err = ffi.new("char[]", _ERRLEN)
        handle = lib.wb_ring_create(name.encode(), capacity, code, err, _ERRLEN)
        if handle == ffi.NULL:
            _raise_for(code[0], err)
        return cls(name, handle, creator=True)

    @classmethod
    def attach(cls, name: str) -> ShmRing:
        """Attach to an existing ring. `ring.stale` is True (and a warning is logged) when its
        producer process has died. Raises RingNotFound naming it, RingLayoutError with the
        ring's and this build's layout version or record size, ValueError for a bad name."""
        validate_name(name)
        ring = cls._attach_quiet(name)
        if ring.stats.stale:
            ring.stale = True
            log.warning("ring %r is stale: its producer (pid %d) is gone", name,
                        ring.stats.producer_pid)
        return ring

    @classmethod
    def _attach_quiet(cls, name: str) -> ShmRing:
        code = ffi.new("int *")
        err = ffi.new("char[]", _ERRLEN)
        handle = lib.wb_ring_attach(name.encode(), code, err, _ERRLEN)
        if handle == ffi.NULL:
            _raise_for(code[0], err)
        return cls(name, handle, creator=False)

    @staticmethod
    def unlink(name: str) -> None:
        """Remove `/dev/shm/wb-<name>` (attached processes keep their mapping).

        Raises RingNotFound when it does not exist."""
        validate_name(name)
        err = ffi.new("char[]", _ERRLEN)
        code = lib.wb_ring_unlink(name.encode(), err, _ERRLEN)
        if code != lib.WB_OK:
            _raise_for(code, err)

    @staticmethod
    def list() -> list[RingStats]:
        """Stats of every ring in /dev/shm, sorted by name; `stale` marks dead producers.

        Objects named wb-* that are not readable rings are logged and skipped."""
        found = []
        for path in sorted(SHM_DIR.glob(SHM_PREFIX + "*")):
            name = path.name[len(SHM_PREFIX):]
            try:
                with ShmRing._attach_quiet(name) as ring:
                    found.append(ring.stats)
            except (RingError, ValueError) as exc:
                log.warning("skipping %s: %s", path, exc)
        return found

    def _handle(self) -> Any:
        if self._h is None:
            raise RingClosed(f"ring {self.name!r} is closed")
        return self._h

    def _native(self) -> tuple[Any, Any]:
        """(handle, owner) for the native feed handler: holding `owner` keeps the ring mapped."""
        return self._handle(), self._owner

    @property
    def closed(self) -> bool:
        return self._h is None

    def push(self, event: np.ndarray | np.void) -> bool:
        """Publish one EVENT_DTYPE record (a record scalar or a 1-element array); the ring
        stamps `seq` and `ts_publish_ns`. Returns False when the ring was full (dropped)."""
        arr = _as_events(event)
        if arr.shape != (1,):
            raise ValueError(f"push takes one event, got {arr.shape[0]}; use push_batch")
        return bool(lib.wb_ring_push(self._handle(), ffi.from_buffer("wb_event[]", arr)))

    def push_batch(self, events: np.ndarray) -> int:
        """Publish a 1-D EVENT_DTYPE batch with one `ts_publish_ns` stamp; returns how many were
        published (the rest were dropped: the ring was full)."""
        arr = _as_events(events)
        if arr.size == 0:
            self._handle()
            return 0
        return int(lib.wb_ring_push_batch(self._handle(), ffi.from_buffer("wb_event[]", arr),
                                          arr.size))

    def read(self, max_n: int = 65536, wait_ns: int = 0) -> np.ndarray:
        """Up to `max_n` waiting records as a read-only EVENT_DTYPE view of the slots, shape
        (n,), n = 0 when the ring is empty. Hands back the slots of the previous read first.
        Never spans the wrap (the next read returns the rest).

        wait_ns = 0: never waits. wait_ns > 0: when the ring is empty, busy-polls in C (GIL
        released, no system call) up to wait_ns ns for the first record; the lowest-latency
        way to wait for one event."""
        if max_n < 1:
            raise ValueError(f"max_n must be a count >= 1, got {max_n}")
        h = self._h
        if h is None:
            raise RingClosed(f"ring {self.name!r} is closed")
        taken = self._taken
        if wait_ns > 0:
            n = _read_wait(h, max_n, wait_ns, _NULL)
        elif not self._held and self._words[_HEAD_WORD] == taken:  # type: ignore[index]
            return self._empty
        else:
            n = _read(h, max_n, _NULL)
        if not n:
            self._held = False
            return self._empty
        self._taken = taken + n
        self._held = True
        first = taken & self._mask  # the C side read from the same cursor
        return self._slots[first:first + n]  # type: ignore[index]

    def release(self) -> None:
        """Hand the slots of the last `read` back to the producer without reading more."""
        lib.wb_ring_release(self._handle())
        self._held = False

    def pop_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) waiting records into `out` (a writable contiguous EVENT_DTYPE
        array), across the wrap; returns how many. Hands back the previous read's slots."""
        if out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous:
            raise ValueError(f"pop_into needs a contiguous 1-D EVENT_DTYPE array, got "
                             f"{out.dtype} shape {out.shape}")
        buf = ffi.from_buffer("wb_event[]", out, require_writable=True)
        n = int(lib.wb_ring_pop_batch(self._handle(), buf, out.size))
        self._taken += n
        self._held = False
        return n

    @property
    def stats(self) -> RingStats:
        """The ring's counters now (see `RingStats`)."""
        s = self._stats
        lib.wb_ring_stats_get(self._handle(), s)
        return RingStats(
            name=self.name,
            capacity=int(s.capacity),
            published=int(s.published),
            consumed=int(s.consumed),
            dropped=int(s.dropped),
            gaps=int(s.gaps),
            high_water=int(s.high_water),
            pending=int(s.pending),
            created_ns=int(s.created_ns),
            creator_pid=int(s.creator_pid),
            producer_pid=int(s.producer_pid),
            stale=s.producer_alive == 0,
        )

    def close(self) -> None:
        """Detach; the creator also unlinks the ring. Closing twice is a no-op."""
        if self._h is None:
            return
        if self._finalizer is not None:
            self._finalizer()
        self._h = None
        self._slots = self._empty = self._words = None
        self._owner = None  # unmapped now unless a view or a feed handler still holds it

    def __enter__(self) -> ShmRing:
        self._handle()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"capacity={self.capacity}"
        return f"ShmRing({self.name!r}, {state})"


def _as_events(events: np.ndarray | np.void) -> np.ndarray:
    arr = np.asarray(events)
    if arr.dtype != EVENT_DTYPE:
        raise ValueError(f"expected EVENT_DTYPE records, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`workbench rings`: list the rings on this machine with their stats."""
    parser.add_argument("--json", action="store_true", help="one JSON object per ring")


def main(args: argparse.Namespace) -> int:
    """Print the rings in /dev/shm as a table (or JSON lines). Returns 0."""
    rings = ShmRing.list()
    if args.json:
        import orjson

        for st in rings:
            print(orjson.dumps(asdict(st)).decode())
        return 0
    if not rings:
        print("no rings in /dev/shm")
        return 0
    header = ("name", "capacity", "published", "consumed", "dropped", "gaps", "high water",
              "pending", "producer", "age s")
    now = time.time_ns()
    rows = [
        (
            st.name, str(st.capacity), str(st.published), str(st.consumed), str(st.dropped),
            str(st.gaps), str(st.high_water), str(st.pending),
            f"{st.producer_pid} {'stale' if st.stale else 'live'}" if st.producer_pid else "-",
            f"{(now - st.created_ns) / 1e9:.0f}",
        )
        for st in rings
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return 0
