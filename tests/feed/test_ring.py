"""ShmRing in one process over real POSIX shared memory: round trips, the wrap, drops and gaps,
stats, listing, stale producers and every bad-input rule."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workbench import cli
from workbench._feed import ffi
from workbench.errors import RingClosed, RingExists, RingLayoutError, RingNotFound
from workbench.events import EVENT_DTYPE, EventFlag, EventKind, Side, empty_batch
from workbench.feed.ring import RingStats, ShmRing

SHM = Path("/dev/shm")


def batch(n: int, start: int = 0) -> np.ndarray:
    """n events whose payload encodes their index: venue_seq = i, price = 100 + i / 4."""
    ev = empty_batch(n)
    i = np.arange(start, start + n)
    ev["ts_event_ns"] = 1_700_000_000_000_000_000 + i
    ev["ts_recv_ns"] = 10 * i
    ev["venue_seq"] = i
    ev["symbol_id"] = 3
    ev["kind"] = EventKind.TRADE
    ev["side"] = np.where(i % 2, Side.BUY, Side.SELL)
    ev["price"] = 100 + i / 4
    ev["qty"] = i * 0.5
    return ev


PAYLOAD = ["ts_event_ns", "ts_recv_ns", "venue_seq", "symbol_id", "kind", "side", "price", "qty"]


def assert_payload(got: np.ndarray, sent: np.ndarray) -> None:
    for field in PAYLOAD:
        np.testing.assert_array_equal(got[field], sent[field], err_msg=field)


def test_create_push_read_round_trip(ring_name: str) -> None:
    sent = batch(100)
    with ShmRing.create(ring_name, 128) as ring:
        path = SHM / f"wb-{ring_name}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size == 192 + 128 * 64
        t0 = time.perf_counter_ns()
        assert ring.push_batch(sent[:60]) == 60
        assert ring.push(sent[60]) is True
        assert ring.push_batch(sent[61:]) == 39
        t1 = time.perf_counter_ns()
        got = ring.read(1000)
        assert got.dtype == EVENT_DTYPE and got.shape == (100,)
        assert_payload(got, sent)
        np.testing.assert_array_equal(got["seq"], np.arange(1, 101))
        assert got["ts_publish_ns"].min() >= t0 and got["ts_publish_ns"].max() <= t1
        assert len(np.unique(got["ts_publish_ns"][:60])) == 1  # one stamp per batch
        assert not got["flags"].any()
        assert ring.read(10).shape == (0,)


def test_read_is_a_view_of_the_slots_and_stops_at_the_wrap(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        ring.push_batch(batch(10))
        assert ring.read(10).shape == (10,)
        ring.release()
        assert ring.push_batch(batch(12, start=10)) == 12  # slots 10..15 then 0..5
        slots = np.frombuffer(ffi.buffer(ring._owner, 16 * 64), dtype=EVENT_DTYPE)
        first = ring.read(100)
        assert first.shape == (6,)  # up to the last slot
        assert not first.flags.owndata and not first.flags.writeable
        assert first.__array_interface__["data"][0] == slots[10:].__array_interface__["data"][0]
        assert_payload(first, batch(6, start=10))
        rest = ring.read(100)
        assert rest.__array_interface__["data"][0] == slots.__array_interface__["data"][0]
        assert_payload(rest, batch(6, start=16))
        np.testing.assert_array_equal(np.concatenate([first, rest])["seq"], np.arange(11, 23))
        with pytest.raises(ValueError):
            rest["price"][0] = 1.0


def test_read_hands_slots_back_only_on_the_next_read(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        ring.push_batch(batch(16))
        view = ring.read(16)
        assert ring.push(batch(1)[0]) is False  # the read's slots are still held
        assert ring.stats.consumed == 0 and ring.stats.dropped == 1
        assert_payload(view, batch(16))  # untouched by the refused push
        ring.release()
        assert ring.stats.consumed == 16
        assert ring.push_batch(batch(16)) == 16


def test_full_ring_drops_and_the_consumer_counts_the_gap(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        assert ring.push_batch(batch(20)) == 16  # 4 dropped: seq 17..20
        assert ring.push(batch(1)[0]) is False  # seq 21 dropped
        st = ring.stats
        assert (st.published, st.dropped, st.gaps, st.high_water, st.pending) == (16, 5, 0, 16, 16)
        first = ring.read(100)
        np.testing.assert_array_equal(first["seq"], np.arange(1, 17))
        assert not first["flags"].any()
        ring.release()
        assert ring.push_batch(batch(3, start=50)) == 3  # seq 22..24
        after = ring.read(100)
        np.testing.assert_array_equal(after["seq"], [22, 23, 24])
        np.testing.assert_array_equal(after["flags"], [EventFlag.GAP, 0, 0])
        ring.release()
        st = ring.stats
        assert (st.published, st.consumed, st.dropped, st.gaps, st.pending) == (19, 19, 5, 5, 0)


def test_pop_into_copies_across_the_wrap(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        ring.push_batch(batch(12))
        out = empty_batch(32)
        assert ring.pop_into(out[:12]) == 12
        assert ring.push_batch(batch(10, start=12)) == 10  # slots 12..15 then 0..5
        assert ring.pop_into(out) == 10
        assert_payload(out[:10], batch(10, start=12))
        np.testing.assert_array_equal(out["seq"][:10], np.arange(13, 23))
        assert ring.pop_into(out) == 0
        with pytest.raises(ValueError, match="EVENT_DTYPE"):
            ring.pop_into(np.zeros(4, dtype=np.int64))


def test_attach_sees_the_creators_ring_and_creator_unlinks_on_close(ring_name: str) -> None:
    ring = ShmRing.create(ring_name, 64)
    with ShmRing.attach(ring_name) as other:
        assert other.capacity == 64 and not other.creator and not other.stale
        ring.push_batch(batch(5))
        assert_payload(other.read(10), batch(5))
        assert ring.stats.consumed == 0
        other.release()
        assert ring.stats.consumed == 5
    assert (SHM / f"wb-{ring_name}").exists()  # an attached handle does not unlink
    ring.close()
    assert not (SHM / f"wb-{ring_name}").exists()
    ring.close()  # twice is a no-op


def test_views_outlive_close_and_every_call_on_a_closed_ring_raises(ring_name: str) -> None:
    ring = ShmRing.create(ring_name, 16)
    ring.push_batch(batch(4))
    view = ring.read(4)
    ring.close()
    assert ring.closed
    assert_payload(view, batch(4))  # still mapped while the view lives
    calls = [
        lambda: ring.read(1), lambda: ring.push(batch(1)[0]), lambda: ring.push_batch(batch(2)),
        lambda: ring.push_batch(batch(0)), lambda: ring.pop_into(empty_batch(2)),
        lambda: ring.stats, ring.release, lambda: ring.__enter__(),
    ]
    for call in calls:
        with pytest.raises(RingClosed, match=ring_name):
            call()


def test_list_shows_rings_with_stats_and_the_cli_prints_them(
    ring_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ShmRing.create(ring_name, 32) as ring:
        ring.push_batch(batch(7))
        ring.read(3)
        ring.release()
        listed = {st.name: st for st in ShmRing.list()}
        st = listed[ring_name]
        assert isinstance(st, RingStats)
        assert (st.capacity, st.published, st.consumed, st.pending) == (32, 7, 3, 4)
        assert st.producer_pid == os.getpid() and st.creator_pid == os.getpid()
        assert not st.stale
        assert cli.main(["rings"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith(ring_name + " "))
        assert row.split()[1:8] == ["32", "7", "3", "0", "0", "7", "4"]
    assert ring_name not in {st.name for st in ShmRing.list()}


def test_ring_whose_producer_died_is_stale(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        "import sys\n"
        "from workbench.feed.ring import ShmRing\n"
        "from workbench.events import empty_batch\n"
        "ring = ShmRing.attach(sys.argv[1])\n"
        "ev = empty_batch(3); ev['venue_seq'] = [7, 8, 9]\n"
        "assert ring.push_batch(ev) == 3\n"
    )
    with ShmRing.create(ring_name, 16) as ring:
        assert ring.stats.producer_pid == 0 and not ring.stats.stale  # no producer yet
        proc = subprocess.Popen([sys.executable, "-c", code, ring_name])
        assert proc.wait(timeout=60) == 0
        st = ring.stats
        assert st.producer_pid == proc.pid
        assert st.stale and st.published == 3
        with caplog.at_level(logging.WARNING), ShmRing.attach(ring_name) as again:
            assert again.stale
            np.testing.assert_array_equal(again.read(10)["venue_seq"], [7, 8, 9])
        assert "stale" in caplog.text and ring_name in caplog.text
        assert {s.name: s.stale for s in ShmRing.list()}[ring_name] is True


def test_attach_to_a_missing_ring_names_it(ring_name: str) -> None:
    with pytest.raises(RingNotFound, match=ring_name):
        ShmRing.attach(ring_name)
    with pytest.raises(RingNotFound, match=ring_name):
        ShmRing.unlink(ring_name)


def _poke(name: str, field: str, value: int, size: int) -> None:
    with open(SHM / f"wb-{name}", "r+b") as f:
        f.seek(ffi.offsetof("wb_ring_header", field))
        f.write(value.to_bytes(size, "little"))


@pytest.mark.parametrize(
    ("field", "value", "size", "expected"),
    [
        ("layout_version", 99, 4, ["layout version 99", "version 1"]),
        ("record_size", 32, 4, ["record size 32", "64 bytes"]),
        ("magic", 0x1234, 8, ["magic 0x0000000000001234", "expected 0x474e495242574248"]),
        ("capacity", 24, 8, ["capacity 24"]),
    ],
)
def test_layout_mismatch_reports_both_values(
    ring_name: str, field: str, value: int, size: int, expected: list[str]
) -> None:
    with ShmRing.create(ring_name, 16):
        _poke(ring_name, field, value, size)
        with pytest.raises(RingLayoutError) as info:
            ShmRing.attach(ring_name)
        for text in expected:
            assert text in str(info.value)


def test_a_foreign_object_is_a_layout_error_and_list_skips_it(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = SHM / f"wb-{ring_name}"
    path.write_bytes(b"not a ring")
    try:
        with pytest.raises(RingLayoutError, match="smaller than the 192-byte header"):
            ShmRing.attach(ring_name)
        with caplog.at_level(logging.WARNING):
            assert ring_name not in {st.name for st in ShmRing.list()}
        assert ring_name in caplog.text
    finally:
        path.unlink()


@pytest.mark.parametrize("capacity", [0, 8, 15, 100, 1000, 2**27, -16, 16.0, True])
def test_bad_capacity_is_a_value_error(ring_name: str, capacity: object) -> None:
    with pytest.raises(ValueError, match="power of two"):
        ShmRing.create(ring_name, capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a/b", "/abs", "x" * 201, ".", "..", "sp ace", "é", "a\0b"])
def test_bad_name_is_a_value_error(name: str) -> None:
    for call in (lambda: ShmRing.create(name, 16), lambda: ShmRing.attach(name)):
        with pytest.raises(ValueError, match="invalid ring name"):
            call()


def test_existing_name_and_wrong_records_are_refused(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        with pytest.raises(RingExists, match=ring_name):
            ShmRing.create(ring_name, 16)
        with pytest.raises(ValueError, match="EVENT_DTYPE"):
            ring.push_batch(np.zeros(3, dtype=np.float64))
        with pytest.raises(ValueError, match="one event"):
            ring.push(batch(2))
        with pytest.raises(ValueError, match="max_n"):
            ring.read(-1)
        assert ring.stats.published == 0


def _at_address_8_mod_64(nbytes: int) -> np.ndarray:
    raw = np.zeros(nbytes + 128, dtype=np.uint8)
    skip = (8 - raw.ctypes.data) % 64
    arr = raw[skip:skip + nbytes].view(EVENT_DTYPE)
    assert arr.ctypes.data % 64 == 8
    return arr


def test_records_at_any_alignment_go_through(ring_name: str) -> None:
    sent = batch(8)
    unaligned = _at_address_8_mod_64(sent.nbytes)
    unaligned[:] = sent
    out = _at_address_8_mod_64(sent.nbytes)
    with ShmRing.create(ring_name, 16) as ring:
        assert ring.push_batch(unaligned) == 8
        assert ring.push(unaligned[3]) is True
        assert ring.pop_into(out) == 8
        assert_payload(out, sent)
        assert_payload(ring.read(1), sent[3:4])


def test_read_with_wait_ns_spins_until_a_record_comes(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        t0 = time.perf_counter_ns()
        assert ring.read(4, wait_ns=20_000_000).shape == (0,)  # nothing comes: gives up
        assert time.perf_counter_ns() - t0 >= 20_000_000
        ring.push_batch(batch(2))
        assert ring.read(8, wait_ns=10**9)["venue_seq"].tolist() == [0, 1]  # no wait needed
        # the GIL is released while read spins in C, so this thread can push meanwhile
        timer = threading.Timer(0.05, lambda: ring.push_batch(batch(3, start=10)))
        timer.start()
        got = ring.read(8, wait_ns=30 * 10**9)
        timer.join()
        assert got["venue_seq"].tolist() == [10, 11, 12]
        ring.release()
        assert ring.stats.consumed == 5
