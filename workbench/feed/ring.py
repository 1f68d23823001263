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

Trust: `attach` maps only a ring owned by this process's effective uid with mode 0600 (any
other owner or a wider mode is a RingError naming the uid found and expected, the mode found
and required: another local user could otherwise feed this engine its market data), and checks
the header it reads from the file against the file size before mapping (RingLayoutError).

Truncation: a ring file truncated under a mapping would kill the process with SIGBUS on the
next touch of a lost page. The C side registers every mapping with a SIGBUS handler that maps
zero-filled memory over a truncated ring in place and marks it (design in csrc/wb_ring.h); the
next `read`, `pop_into`, `push`, `push_batch`, `release` or `stats` raises RingError naming the
ring, and views already handed out read zeros. Cost on the hot path: one load of the mark in
each C read, and one integer comparison in `read` when records came; an empty poll is unchanged.
The handler is installed on the first create or attach and passes every other SIGBUS to the
handler it replaced; one installed later (e.g. `faulthandler.enable()` after the first ring)
runs first and may report a recovered fault as fatal before passing it on.

`workbench rings` prints `ShmRing.list()` as a table, with each ring's producer state: live,
waiting (no producer yet), finished (its producer closed it), stale (the producer died, the
creator still runs) or orphan (producer and creator both gone). `workbench rings --clean`
unlinks the orphans and says why.
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
_read_block = lib.wb_ring_read_block
_TRUNCATED: int = lib.WB_RING_TRUNCATED
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
    gone without closing the ring (it died; the ring still holds what it published). orphan: no
    process that created or produced into the ring lives (the producer is gone or never came,
    and the creator is gone): nothing will unlink it, `workbench rings --clean` does. A reused
    pid counts as alive. finished: the producer closed the ring cleanly (its data ended); a
    producer gone without it died.
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
    orphan: bool
    finished: bool = False

    @property
    def state(self) -> str:
        """live, waiting (no producer yet), finished (its producer closed it), stale or
        orphan (see the class docstring)."""
        if self.orphan:
            return "orphan"
        if self.stale:
            return "stale"
        if self.finished:
            return "finished"
        return "live" if self.producer_pid else "waiting"

    @property
    def orphan_reason(self) -> str:
        """Why the ring is an orphan, naming the dead pids ("" when it is not one)."""
        if not self.orphan:
            return ""
        if self.producer_pid == self.creator_pid:
            return f"its producer and creator, pid {self.producer_pid}, is gone"
        if self.producer_pid:
            return (f"its producer pid {self.producer_pid} and creator pid {self.creator_pid} "
                    "are gone")
        return f"no producer ever came and its creator pid {self.creator_pid} is gone"


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
    raise RingError(message)  # WB_EPERM (owner or mode), WB_ETRUNC, WB_ESYS


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
        producer process has died.

        Raises RingNotFound naming it; RingError when the file is owned by another uid than
        this process's effective uid or its mode is wider than 0600 (naming the owner found and
        expected, the mode found and required); RingLayoutError when the header, read before
        mapping, differs from this build's (magic, layout version, record size, header size,
        capacity: a power of two in 16..2**26) or the file size is not header + capacity * 64
        bytes (both values named); ValueError for a bad name."""
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
    def clean() -> list[RingStats]:
        """Unlink every orphan ring (see `RingStats.orphan`) this process may attach to and
        return their last stats; rings it may not attach to (another owner, not a ring) are
        left alone. A consumer still attached keeps its mapping."""
        removed = []
        for st in ShmRing.list():
            if st.orphan:
                try:
                    ShmRing.unlink(st.name)
                except RingNotFound:  # another cleaner was first
                    continue
                removed.append(st)
        return removed

    @staticmethod
    def list() -> list[RingStats]:
        """Stats of every ring in /dev/shm, sorted by name; `stale` marks dead producers.

        Objects named wb-* that are not readable rings, or that attach refuses (another
        owner, a mode wider than 0600), are logged and skipped."""
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
        stamps `seq` and `ts_publish_ns`. Returns False when the ring was full (dropped).
        Raises RingError when the ring's file was truncated."""
        arr = _as_events(event)
        if arr.shape != (1,):
            raise ValueError(f"push takes one event, got {arr.shape[0]}; use push_batch")
        h = self._handle()
        if lib.wb_ring_push(h, ffi.from_buffer("wb_event[]", arr)):
            return True
        self._check(h)
        return False

    def push_batch(self, events: np.ndarray) -> int:
        """Publish a 1-D EVENT_DTYPE batch with one `ts_publish_ns` stamp; returns how many were
        published (the rest were dropped: the ring was full). Raises RingError when the ring's
        file was truncated."""
        arr = _as_events(events)
        h = self._handle()
        size = arr.size
        if size == 0:
            return 0
        n: int = lib.wb_ring_push_batch(h, ffi.from_buffer("wb_event[]", arr), size)
        if n < size:
            self._check(h)
        return n

    def read(self, max_n: int = 65536, wait_ns: int = 0, sleep_ns: int = 0) -> np.ndarray:
        """Up to `max_n` waiting records as a read-only EVENT_DTYPE view of the slots, shape
        (n,), n = 0 when the ring is empty. Hands back the slots of the previous read first.
        Never spans the wrap (the next read returns the rest).

        wait_ns = 0: never waits. wait_ns > 0: when the ring is empty, busy-polls in C (GIL
        released, no system call) up to wait_ns ns for the first record; the lowest-latency
        way to wait for one event. sleep_ns > 0: after that spin, sleeps (a futex the producer's
        next publish wakes, GIL released) until sleep_ns ns from the call: a wait that leaves
        the CPU to the producer. Raises RingError when the ring's file was truncated."""
        if max_n < 1:
            raise ValueError(f"max_n must be a count >= 1, got {max_n}")
        h = self._h
        if h is None:
            raise RingClosed(f"ring {self.name!r} is closed")
        taken = self._taken
        if sleep_ns > 0:
            n = _read_block(h, max_n, wait_ns, sleep_ns, _NULL)
        elif wait_ns > 0:
            n = _read_wait(h, max_n, wait_ns, _NULL)
        elif not self._held and self._words[_HEAD_WORD] == taken:  # type: ignore[index]
            return self._empty
        else:
            n = _read(h, max_n, _NULL)
        if not n:
            self._held = False
            return self._empty
        if n == _TRUNCATED:
            raise self._truncated()
        self._taken = taken + n
        self._held = True
        first = taken & self._mask  # the C side read from the same cursor
        return self._slots[first:first + n]  # type: ignore[index]

    def release(self) -> None:
        """Hand the slots of the last `read` back to the producer without reading more."""
        code = lib.wb_ring_release(self._handle())
        self._held = False
        if code:  # WB_ETRUNC (WB_OK is 0)
            raise self._truncated()

    def pop_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) waiting records into `out` (a writable contiguous EVENT_DTYPE
        array), across the wrap; returns how many. Hands back the previous read's slots.
        Raises RingError when the ring's file was truncated."""
        if out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous:
            raise ValueError(f"pop_into needs a contiguous 1-D EVENT_DTYPE array, got "
                             f"{out.dtype} shape {out.shape}")
        buf = ffi.from_buffer("wb_event[]", out, require_writable=True)
        n = int(lib.wb_ring_pop_batch(self._handle(), buf, out.size))
        self._held = False
        if n == _TRUNCATED:
            raise self._truncated()
        self._taken += n
        return n

    def _truncated(self) -> RingError:
        path = SHM_DIR / f"{SHM_PREFIX}{self.name}"
        try:
            now = f"{path.stat().st_size} bytes now"
        except FileNotFoundError:
            now = "unlinked since"
        mapped = ffi.sizeof("wb_ring_header") + self.capacity * EVENT_DTYPE.itemsize
        return RingError(
            f"ring {self.name!r} ({path}) was truncated under this process's mapping "
            f"({mapped} bytes mapped, {now}): its records are lost, the mapping reads zeros "
            "and nothing more can be read or pushed; close it"
        )

    def _check(self, h: Any) -> None:
        if lib.wb_ring_status(h):  # WB_ETRUNC (WB_OK is 0)
            raise self._truncated()

    @property
    def stats(self) -> RingStats:
        """The ring's counters now (see `RingStats`). Raises RingError when the ring's file
        was truncated."""
        s = self._stats
        if lib.wb_ring_stats_get(self._handle(), s):  # WB_ETRUNC (WB_OK is 0)
            raise self._truncated()
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
            stale=s.producer_alive == 0 and not s.producer_done,
            orphan=s.producer_alive != 1 and s.creator_alive == 0,
            finished=bool(s.producer_done),
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
    parser.add_argument("--clean", action="store_true",
                        help="unlink the orphan rings (producer and creator both gone), say why")


def main(args: argparse.Namespace) -> int:
    """Print the rings in /dev/shm as a table (or JSON lines); with --clean, first unlink the
    orphans and print one line per ring removed, with the reason. Returns 0."""
    import orjson

    if args.clean:
        removed = ShmRing.clean()
        for st in removed:
            if args.json:
                print(orjson.dumps({"removed": st.name, "reason": st.orphan_reason,
                                    "pending": st.pending, "published": st.published}).decode())
            else:
                print(f"removed ring {st.name!r} ({SHM_DIR / (SHM_PREFIX + st.name)}): "
                      f"{st.orphan_reason}; {st.pending} of {st.published} records unread")
        if not args.json:
            print(f"{len(removed)} orphan ring{'' if len(removed) == 1 else 's'} removed")
    rings = ShmRing.list()
    if args.json:
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
            f"{st.producer_pid or '-'} {st.state}",
            f"{(now - st.created_ns) / 1e9:.0f}",
        )
        for st in rings
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return 0
