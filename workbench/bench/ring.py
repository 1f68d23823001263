"""Ring phases: the C++ shared-memory ring into Python against multiprocessing.Queue and against a
pure-Python ring on multiprocessing.shared_memory.

ring.throughput_queue / ring.throughput_pyring (metric throughput, events/s of the whole call):
  baseline   a producer process (fork) sends the events through `multiprocessing.Queue`, one
             64-byte record per put; or writes them in batches of 256 into a numpy ring on
             `multiprocessing.shared_memory`, read back in batches of 256;
  optimized  the native feed handler (C++ thread, flat out, lossless) publishes the same events
             into a ShmRing, `laps` times over, and Python reads zero-copy batches.
ring.latency_queue / ring.latency_pyring (metric latency, one-way ns = consumer's
perf_counter_ns() on receipt - producer's stamp): producers paced at 100k events/s, the consumer
takes one event at a time: Queue.get(); a Python loop polling the head cursor of the pure-Python
ring; `ShmRing.read(1, wait_ns)`, which busy-polls in C with the GIL released, for the C++ ring.

Every producer waits for room rather than drop (the feed handler's lossless mode), so all
variants deliver the same events. Every consumer folds what it received into a `Digest` (count,
contiguous sequence numbers 1..count, wrapping uint64 sums of venue_seq and of the price and qty
bits); the check demands the same digest (scaled by the laps) from both variants. Inputs are
synthetic (a seeded random walk of trades), so `make demo` needs no recordings. The pure-Python
ring relies on x86 store ordering (numpy stores, then the head store), as such rings in the wild
do.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from workbench.bench.registry import Claim, Outcome, Phase, register
from workbench.errors import PhaseMismatch, WorkbenchError
from workbench.events import EVENT_DTYPE, EventKind, Side, empty_batch
from workbench.feed.handler import FeedConfig, FeedHandler
from workbench.feed.ring import ShmRing

RING_CAPACITY = 1 << 16
READ_MAX = 1 << 13
PY_BATCH = 256
PACED_RATE = 100_000.0
TIMEOUT_S = 120.0
SPIN_NS = 10_000_000  # the C++ ring's consumer busy-polls inside read(), GIL released
_ctx = mp.get_context("fork")  # the producers inherit the prepared events without pickling


@dataclass(frozen=True)
class Digest:
    """What a consumer received: count, whether the sequence numbers were exactly 1..count in
    order, and wrapping uint64 sums of venue_seq and of the price and qty bit patterns."""

    count: int
    in_order: bool
    sums: tuple[int, int, int]

    def scaled(self, laps: int) -> tuple[int, ...]:
        """The sums of `laps` deliveries of the same events (wrapping at 2**64)."""
        return tuple(s * laps % 2**64 for s in self.sums)


class _Folder:
    """Folds batches into a Digest without a Python loop over events."""

    def __init__(self) -> None:
        self.count = 0
        self.in_order = True
        self.sums = np.zeros(3, dtype=np.uint64)

    def add(self, batch: np.ndarray) -> None:
        n = len(batch)
        seq = batch["seq"]
        first, last = int(seq[0]), int(seq[-1])
        self.in_order &= first == self.count + 1 and last - first + 1 == n
        self.sums += np.array([  # array arithmetic wraps silently at 2**64
            np.add.reduce(batch["venue_seq"], dtype=np.uint64),
            np.add.reduce(batch["price"].view(np.uint64), dtype=np.uint64),
            np.add.reduce(batch["qty"].view(np.uint64), dtype=np.uint64),
        ])
        self.count += n

    def digest(self) -> Digest:
        return Digest(self.count, bool(self.in_order), tuple(int(s) for s in self.sums))


def digest_of(events: np.ndarray) -> Digest:
    """The Digest of one batch (sequence numbers as found)."""
    folder = _Folder()
    folder.add(events)
    return folder.digest()


def make_events(n: int, seed: int = 2) -> np.ndarray:
    """n synthetic BTCUSDT-like trades: random-walk price (0.1 tick), random qty, seq 1..n."""
    rng = np.random.default_rng(seed)
    ev = empty_batch(n)
    ev["ts_event_ns"] = 1_723_075_200_000_000_000 + np.cumsum(rng.integers(1, 2_000_000, n))
    ev["ts_recv_ns"] = ev["ts_event_ns"] - 1_723_075_200_000_000_000
    ev["seq"] = np.arange(1, n + 1)
    ev["venue_seq"] = 5_000_000_000 + np.arange(n)
    ev["symbol_id"] = 1
    ev["kind"] = EventKind.TRADE
    ev["side"] = rng.choice([Side.BUY, Side.SELL], n)
    ev["price"] = np.round(57_000 + np.cumsum(rng.choice([-0.1, 0.0, 0.1], n)), 1)
    ev["qty"] = np.round(rng.exponential(0.05, n), 3) + 0.001
    return ev


@dataclass(frozen=True)
class RingInput:
    """events: the batch both variants deliver; rows: the same records as 64-byte bytes (for
    Queue); laps: how many times the C++ ring delivers the batch in one call."""

    events: np.ndarray
    rows: list[bytes]
    laps: int


def _prepare(n: int, laps: int) -> RingInput:
    events = make_events(n)
    raw = events.tobytes()
    size = EVENT_DTYPE.itemsize
    return RingInput(events, [raw[i:i + size] for i in range(0, len(raw), size)], laps)


def _unique_name(tag: str) -> str:
    return f"bench-{tag}-{mp.current_process().pid}-{time.perf_counter_ns()}"


def _run_producer(target: Callable[..., None], *args: Any) -> Any:
    proc = _ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _finish(proc: Any) -> None:
    proc.join(TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        raise WorkbenchError("ring benchmark producer did not finish")
    if proc.exitcode != 0:
        raise WorkbenchError(f"ring benchmark producer failed with exit code {proc.exitcode}")


def _deadline_passed(start_ns: int) -> bool:
    return time.perf_counter_ns() - start_ns > TIMEOUT_S * 1e9


# -- C++ ring (optimized) -------------------------------------------------------------------

def _cxx_batches(inp: RingInput) -> Outcome:
    total = inp.events.size * inp.laps
    folder = _Folder()
    with ShmRing.create(_unique_name("cxx"), RING_CAPACITY) as ring:
        config = FeedConfig("flat", count=total, lossless=True)
        with FeedHandler(ring, inp.events, config):
            read, add, start = ring.read, folder.add, time.perf_counter_ns()
            while folder.count < total:
                batch = read(READ_MAX)
                if len(batch):
                    add(batch)
                elif _deadline_passed(start):
                    raise WorkbenchError(f"C++ ring delivered {folder.count} of {total}")
        st = ring.stats
    return Outcome(folder.digest(), items=total,
                   extra={"laps": inp.laps, "dropped": st.dropped, "high_water": st.high_water})


def _cxx_paced(inp: RingInput) -> Outcome:
    n = inp.events.size
    got = empty_batch(n)
    lat = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    with ShmRing.create(_unique_name("cxxlat"), RING_CAPACITY) as ring:
        with FeedHandler(ring, inp.events, FeedConfig("rate", PACED_RATE, lossless=True)) as feed:
            read, i, start = ring.read, 0, clock()
            while i < n:
                one = read(1, SPIN_NS)
                if len(one):
                    lat[i] = clock() - one["ts_publish_ns"][0]
                    got[i] = one[0]
                    i += 1
                elif _deadline_passed(start):
                    raise WorkbenchError(f"C++ ring delivered {i} of {n}")
        dropped = feed.status.dropped
    return Outcome(digest_of(got), items=n, latencies_ns=lat, extra={"dropped": dropped})


# -- multiprocessing.Queue (baseline) -------------------------------------------------------

def _queue_producer(q: Any, rows: list[bytes]) -> None:
    put = q.put
    for row in rows:
        put(row)


def _queue_batches(inp: RingInput) -> Outcome:
    q = _ctx.Queue()
    proc = _run_producer(_queue_producer, q, inp.rows)
    get = q.get
    rows = [get(timeout=TIMEOUT_S) for _ in range(len(inp.rows))]
    _finish(proc)
    got = np.frombuffer(b"".join(rows), dtype=EVENT_DTYPE)
    return Outcome(digest_of(got), items=len(rows))


def _queue_paced_producer(q: Any, rows: list[bytes], rate: float) -> None:
    put, clock = q.put, time.perf_counter_ns
    step = 1e9 / rate
    start = clock()
    for i, row in enumerate(rows):
        due = start + int(i * step)
        while clock() < due:
            pass
        put((row, clock()))


def _queue_paced(inp: RingInput) -> Outcome:
    n = len(inp.rows)
    q = _ctx.Queue()
    lat = np.empty(n, dtype=np.int64)
    rows = []
    proc = _run_producer(_queue_paced_producer, q, inp.rows, PACED_RATE)
    get, clock = q.get, time.perf_counter_ns
    for i in range(n):
        row, stamp = get(timeout=TIMEOUT_S)
        lat[i] = clock() - stamp
        rows.append(row)
    _finish(proc)
    got = np.frombuffer(b"".join(rows), dtype=EVENT_DTYPE)
    return Outcome(digest_of(got), items=n, latencies_ns=lat)


# -- pure-Python ring on multiprocessing.shared_memory (baseline) ----------------------------

_HEAD, _TAIL = 0, 8  # int64 indexes of the two cursors: bytes 0 and 64, separate cache lines
_PY_HEADER = 128


class _PyRing:
    """A numpy SPSC ring over a SharedMemory block: int64 head at byte 0, tail at byte 64, then
    `capacity` EVENT_DTYPE slots. Both sides wait (spin) instead of dropping."""

    def __init__(self, shm: SharedMemory, capacity: int) -> None:
        self.shm = shm
        self.capacity = capacity
        self.cursors = np.ndarray((_PY_HEADER // 8,), dtype=np.int64, buffer=shm.buf)
        self.slots = np.ndarray((capacity,), dtype=EVENT_DTYPE, buffer=shm.buf,
                                offset=_PY_HEADER)

    @classmethod
    def create(cls, capacity: int) -> _PyRing:
        shm = SharedMemory(create=True, size=_PY_HEADER + capacity * EVENT_DTYPE.itemsize)
        ring = cls(shm, capacity)
        ring.cursors[:] = 0
        return ring

    def destroy(self) -> None:
        del self.cursors, self.slots
        self.shm.close()
        self.shm.unlink()


def _py_batch_producer(ring: _PyRing, events: np.ndarray) -> None:
    cursors, slots, cap = ring.cursors, ring.slots, ring.capacity
    n, i = len(events), 0
    while i < n:
        head = int(cursors[_HEAD])
        idx = head % cap
        k = min(PY_BATCH, n - i, cap - idx, cap - (head - int(cursors[_TAIL])))
        if k <= 0:
            continue
        slots[idx:idx + k] = events[i:i + k]
        slots["seq"][idx:idx + k] = np.arange(i + 1, i + k + 1)
        cursors[_HEAD] = head + k
        i += k


def _py_batches(inp: RingInput) -> Outcome:
    n = inp.events.size
    ring = _PyRing.create(RING_CAPACITY)
    folder = _Folder()
    try:
        proc = _run_producer(_py_batch_producer, ring, inp.events)
        cursors, slots, cap, start = ring.cursors, ring.slots, ring.capacity, time.perf_counter_ns()
        while folder.count < n:
            tail = int(cursors[_TAIL])
            idx = tail % cap
            k = min(PY_BATCH, int(cursors[_HEAD]) - tail, cap - idx)
            if k > 0:
                folder.add(slots[idx:idx + k])
                cursors[_TAIL] = tail + k
            elif _deadline_passed(start):
                raise WorkbenchError(f"Python ring delivered {folder.count} of {n}")
        _finish(proc)
    finally:
        ring.destroy()
    return Outcome(folder.digest(), items=n)


def _py_paced_producer(ring: _PyRing, events: np.ndarray, rate: float) -> None:
    cursors, slots, cap = ring.cursors, ring.slots, ring.capacity
    clock, step = time.perf_counter_ns, 1e9 / rate
    start = clock()
    for i in range(len(events)):
        due = start + int(i * step)
        while clock() < due:
            pass
        while i - int(cursors[_TAIL]) >= cap:
            pass
        idx = i % cap
        slots[idx] = events[i]
        slots["seq"][idx] = i + 1
        slots["ts_publish_ns"][idx] = clock()
        cursors[_HEAD] = i + 1


def _py_paced(inp: RingInput) -> Outcome:
    n = inp.events.size
    got = empty_batch(n)
    lat = np.empty(n, dtype=np.int64)
    ring = _PyRing.create(RING_CAPACITY)
    try:
        proc = _run_producer(_py_paced_producer, ring, inp.events, PACED_RATE)
        cursors, slots, cap = ring.cursors, ring.slots, ring.capacity
        clock, i, spins, start = time.perf_counter_ns, 0, 0, time.perf_counter_ns()
        while i < n:
            if cursors[_HEAD] > i:
                rec = slots[i % cap]
                lat[i] = clock() - rec["ts_publish_ns"]
                got[i] = rec
                i += 1
                cursors[_TAIL] = i
            else:
                spins += 1
                if not spins & 0xFFFFF and _deadline_passed(start):
                    raise WorkbenchError(f"Python ring delivered {i} of {n}")
        _finish(proc)
    finally:
        ring.destroy()
    return Outcome(digest_of(got), items=n, latencies_ns=lat)


# -- checks and registration ----------------------------------------------------------------

def _check_digests(base: Digest, opt: Digest) -> None:
    """Same events in the same order: the optimized digest equals the baseline's times the
    laps (the C++ ring may deliver the batch several times in one call)."""
    if not base.in_order or not opt.in_order:
        side = "baseline" if not base.in_order else "optimized"
        raise PhaseMismatch(f"{side}: sequence numbers were not 1..count in order")
    laps = opt.count // base.count if base.count else 0
    if laps < 1 or opt.count != base.count * laps:
        raise PhaseMismatch(f"count: baseline {base.count}, optimized {opt.count}")
    for field, b, o in zip(("venue_seq", "price", "qty"), base.scaled(laps), opt.sums,
                           strict=True):
        if b != o:
            raise PhaseMismatch(f"{field} sum over {laps} lap(s): baseline {b}, optimized {o}")


QUEUE_CLAIM = (
    "shared-memory ring vs multiprocessing.Queue: under 1 µs per tick, 100k+ ticks/s (issue 7). "
)
register(Phase(
    name="ring.throughput_queue",
    topic="ring",
    claim=Claim(QUEUE_CLAIM + "Target (issue 2): C++ producer to Python batch consumer >= 50M "
                "events/s and >= 500x multiprocessing.Queue (reference: Queue ~65k records/s).",
                ratio_low=500.0),
    prepare=lambda quick: _prepare(10_000 if quick else 100_000, 300 if quick else 200),
    baseline=_queue_batches,
    optimized=_cxx_batches,
    check=_check_digests,
    metric="throughput",
    repeats=5,
    warmup=1,
    baseline_label="multiprocessing.Queue, 1 record/put",
    optimized_label="C++ feed -> ShmRing -> Python batches",
))

register(Phase(
    name="ring.throughput_pyring",
    topic="ring",
    claim=Claim("Target (issue 2): C++ ring >= 50M events/s into Python; reference pure-Python "
                "numpy ring on multiprocessing.shared_memory ~8M records/s in batches of 256, "
                "so >= 6.25x.", ratio_low=6.25),
    prepare=lambda quick: _prepare(500_000 if quick else 4_000_000, 6 if quick else 10),
    baseline=_py_batches,
    optimized=_cxx_batches,
    check=_check_digests,
    metric="throughput",
    repeats=5,
    warmup=1,
    baseline_label="Python numpy ring on shared_memory, batches of 256",
    optimized_label="C++ feed -> ShmRing -> Python batches",
))

register(Phase(
    name="ring.latency_queue",
    topic="ring",
    claim=Claim(QUEUE_CLAIM + "Target (issue 2): one-way P50 <= 1 µs, P99 <= 10 µs at a paced "
                "100k events/s, one event at a time (reference: Queue P50 88 µs)."),
    prepare=lambda quick: _prepare(20_000 if quick else 100_000, 1),
    baseline=_queue_paced,
    optimized=_cxx_paced,
    check=_check_digests,
    metric="latency",
    repeats=5,
    warmup=1,
    baseline_label="multiprocessing.Queue, paced 100k/s, get()",
    optimized_label="C++ feed paced 100k/s -> ShmRing, read(1, wait_ns) busy poll",
))

register(Phase(
    name="ring.latency_pyring",
    topic="ring",
    claim=Claim("Target (issue 2): one-way P50 <= 1 µs, P99 <= 10 µs at a paced 100k events/s; "
                "reference pure-Python numpy shared-memory ring P50 4 µs one at a time."),
    prepare=lambda quick: _prepare(20_000 if quick else 100_000, 1),
    baseline=_py_paced,
    optimized=_cxx_paced,
    check=_check_digests,
    metric="latency",
    repeats=5,
    warmup=1,
    baseline_label="Python numpy ring, paced 100k/s, busy poll",
    optimized_label="C++ feed paced 100k/s -> ShmRing, read(1, wait_ns) busy poll",
))
