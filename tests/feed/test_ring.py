"""ShmRing over real POSIX shared memory: round trips, the wrap, drops and gaps, stats, listing,
stale and orphan rings, every bad-input rule, ownership and mode (a second local user when run
as root), and truncation under a consumer in a real subprocess."""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from workbench import cli
from workbench._feed import ffi
from workbench.errors import RingClosed, RingError, RingExists, RingLayoutError, RingNotFound
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


PUSH_THREE = (  # a producer process: attaches, pushes venue_seq 7, 8, 9 and dies (exits
    # without closing the ring, as a crash would)
    "import os, sys\n"
    "from workbench.feed.ring import ShmRing\n"
    "from workbench.events import empty_batch\n"
    "ring = ShmRing.attach(sys.argv[1])\n"
    "ev = empty_batch(3); ev['venue_seq'] = [7, 8, 9]\n"
    "assert ring.push_batch(ev) == 3\n"
    "if sys.argv[2:] == ['close']:\n"
    "    ring.close()\n"
    "os._exit(0)\n"
)


def test_ring_whose_producer_closed_it_is_finished_not_stale(ring_name: str) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        subprocess.run([sys.executable, "-c", PUSH_THREE, ring_name, "close"], check=True,
                       timeout=60)
        st = ring.stats
        assert st.finished and not st.stale and st.state == "finished" and st.published == 3


def test_ring_whose_producer_died_is_stale(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with ShmRing.create(ring_name, 16) as ring:
        assert ring.stats.producer_pid == 0 and not ring.stats.stale  # no producer yet
        proc = subprocess.Popen([sys.executable, "-c", PUSH_THREE, ring_name])
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # ours, mode 0600
    os.write(fd, b"not a ring")
    os.close(fd)
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


def test_read_with_sleep_ns_sleeps_until_the_producer_publishes(ring_name: str) -> None:
    """The futex wait: a reader asleep on an empty ring is woken by the next publish (from
    another process), not by its timeout; with nothing published it gives up at sleep_ns."""
    with ShmRing.create(ring_name, 16) as ring:
        t0 = time.perf_counter_ns()
        assert ring.read(4, wait_ns=1000, sleep_ns=50_000_000).shape == (0,)
        assert time.perf_counter_ns() - t0 >= 50_000_000
        producer = subprocess.Popen([sys.executable, "-c", (
            "import sys, time\n"
            "from workbench.feed.ring import ShmRing\n"
            "from workbench.events import empty_batch\n"
            "ring = ShmRing.attach(sys.argv[1])\n"
            "time.sleep(0.3)\n"
            "ev = empty_batch(2); ev['venue_seq'] = [4, 5]\n"
            "ring.push_batch(ev)\n"
            "ring.close()\n"), ring_name])
        t0 = time.perf_counter_ns()
        got = ring.read(8, wait_ns=1000, sleep_ns=60 * 10**9)
        waited_s = (time.perf_counter_ns() - t0) / 1e9
        assert producer.wait(60) == 0
        assert got["venue_seq"].tolist() == [4, 5]
        assert 0.2 < waited_s < 30  # woken by the publish, long before the 60 s timeout


def _ring_size(capacity: int) -> int:
    return ffi.sizeof("wb_ring_header") + capacity * EVENT_DTYPE.itemsize


@pytest.mark.parametrize(
    ("size", "poke", "expected"),
    [
        (_ring_size(16) + 4096, None, f"file of {_ring_size(16) + 4096} bytes, expected "
                                      f"{_ring_size(16)} bytes for capacity 16"),
        (1000, None, f"file of 1000 bytes, expected {_ring_size(16)} bytes for capacity 16"),
        (None, 2**40, "capacity 1099511627776, expected a power of two in [16, 67108864]"),
        (None, 2**20, f"file of {_ring_size(16)} bytes, expected {_ring_size(2**20)} bytes "
                      "for capacity 1048576"),
    ],
)
def test_the_header_is_checked_against_the_file_size_before_mapping(
    ring_name: str, size: int | None, poke: int | None, expected: str
) -> None:
    with ShmRing.create(ring_name, 16):
        if size is not None:
            os.truncate(SHM / f"wb-{ring_name}", size)
        if poke is not None:
            _poke(ring_name, "capacity", poke, 8)
        with pytest.raises(RingLayoutError) as info:
            ShmRing.attach(ring_name)
        assert expected in str(info.value) and ring_name in str(info.value)


@pytest.mark.parametrize("umask", [0, 0o022, 0o277])
def test_rings_are_created_0600_whatever_the_umask(ring_name: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        ring = ShmRing.create(ring_name, 16)
    finally:
        os.umask(old)
    with ring:
        st = (SHM / f"wb-{ring_name}").stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o606, 0o700, 0o4600])
def test_attach_refuses_a_mode_wider_than_0600(
    ring_name: str, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    with ShmRing.create(ring_name, 16):
        os.chmod(SHM / f"wb-{ring_name}", mode)
        with pytest.raises(RingError) as info:
            ShmRing.attach(ring_name)
        assert type(info.value) is RingError
        message = str(info.value)
        assert f"ring '{ring_name}' (/dev/shm/wb-{ring_name}) refused" in message
        assert f"mode {mode:04o}, required 0600" in message and "owned by" not in message
        with caplog.at_level(logging.WARNING):
            assert ring_name not in {st.name for st in ShmRing.list()}
        assert f"mode {mode:04o}" in caplog.text
        os.chmod(SHM / f"wb-{ring_name}", 0o600)
        ShmRing.attach(ring_name).close()  # the same ring, trusted again


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    """A local user created for the test (and deleted after it): needs root."""
    if os.geteuid() != 0:
        pytest.skip("not root: a ring owned by another uid needs a second local user, and "
                    "creating one (useradd) and writing a file as it need root")
    name = f"wbtest-{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True, timeout=60)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)
    return int(proc.stdout)


AS_USER = (  # writes stdin into a new file argv[1] as uid argv[2] / gid argv[3], mode 0600
    "import os, sys\n"
    "os.setgroups([]); os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))\n"
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
    "os.write(fd, sys.stdin.buffer.read())\n"
)


ATTACH_AS_USER = (  # imports as root, then attaches to ring argv[1] as uid argv[2] / gid argv[3]
    "import os, sys\n"
    "from workbench.errors import RingError\n"
    "from workbench.feed.ring import ShmRing\n"
    "os.setgroups([]); os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))\n"
    "try:\n"
    "    ShmRing.attach(sys.argv[1])\n"
    "except RingError as exc:\n"
    "    print(f'{type(exc).__name__}: {exc}')\n"
)


def test_attach_refuses_a_ring_another_user_made(
    ring_name: str, other_user: pwd.struct_passwd
) -> None:
    path = SHM / f"wb-{ring_name}"
    with ShmRing.create(ring_name, 16) as ring:  # a valid ring image, holding three events
        ring.push_batch(batch(3))
        image = bytearray(path.read_bytes())
    dead = _dead_pid().to_bytes(4, "little")  # an orphan by its pids: --clean's candidate
    for field in ("creator_pid", "producer_pid"):
        at = ffi.offsetof("wb_ring_header", field)
        image[at:at + 4] = dead
    uid, gid = other_user.pw_uid, other_user.pw_gid
    subprocess.run([sys.executable, "-c", AS_USER, str(path), str(uid), str(gid)],
                   input=bytes(image), check=True, timeout=60)
    try:
        assert path.stat().st_uid == uid and stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(RingError) as info:
            ShmRing.attach(ring_name)
        assert type(info.value) is RingError
        assert f"owned by uid {uid}, expected uid {os.geteuid()} (this process)" in str(info.value)
        assert "mode" not in str(info.value)
        os.chmod(path, 0o644)
        with pytest.raises(RingError) as info:
            ShmRing.attach(ring_name)
        assert f"owned by uid {uid}, expected uid {os.geteuid()}" in str(info.value)
        assert "mode 0644, required 0600" in str(info.value)
        assert ring_name not in {st.name for st in ShmRing.clean()}
        assert path.exists()  # never removed: not ours to judge
    finally:
        path.unlink()
    # the other way round: that user's process may not even open our ring, and is told whose
    with ShmRing.create(ring_name, 16):
        proc = subprocess.run([sys.executable, "-c", ATTACH_AS_USER, ring_name, str(uid),
                               str(gid)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"RingError: ring '{ring_name}' (/dev/shm/wb-{ring_name}) refused: owned by uid "
        f"{os.geteuid()}, expected uid {uid} (this process)")


CONSUMER = (  # attaches, reads 8 records, then reads on until the ring raises
    "import sys\n"
    "from workbench.feed.ring import ShmRing\n"
    "ring = ShmRing.attach(sys.argv[1])\n"
    "assert len(ring.read(8)) == 8\n"
    "print('reading', flush=True)\n"
    "if sys.argv[2] == 'slots':\n"
    "    sys.stdin.readline()\n"
    "while True:\n"
    "    ring.read(1 if sys.argv[2] == 'slots' else 64)\n"
)


@pytest.mark.parametrize(
    ("mode", "pushed", "size"),
    [
        ("poll", 8, 0),  # the empty poll reads head from the lost header page (in Python)
        ("slots", 200, 4096),  # header page kept, slot 61 on: the C read faults on a slot
    ],
)
def test_a_ring_truncated_under_a_consumer_process_raises_never_sigbus(
    ring_name: str, mode: str, pushed: int, size: int
) -> None:
    path = SHM / f"wb-{ring_name}"
    with ShmRing.create(ring_name, 256) as ring:
        assert ring.push_batch(batch(pushed)) == pushed
        child = subprocess.Popen([sys.executable, "-c", CONSUMER, ring_name, mode],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "reading\n"
            os.truncate(path, size)
            _, err = child.communicate("go\n", timeout=60)
        finally:
            child.kill()
            child.wait(timeout=60)
        # this process's mapping is not touched again: closing unmaps and unlinks
    assert child.returncode != -signal.SIGBUS
    assert child.returncode == 1, (child.returncode, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"workbench.errors.RingError: ring '{ring_name}' ({path}) was "
                           "truncated under this process's mapping"), err
    assert f"({_ring_size(256)} bytes mapped, {size} bytes now)" in last


def test_a_truncated_ring_raises_on_every_call_in_this_process(ring_name: str) -> None:
    path = SHM / f"wb-{ring_name}"
    with ShmRing.create(ring_name, 256) as ring, ShmRing.attach(ring_name) as reader:
        ring.push_batch(batch(100))
        view = reader.read(10)
        assert_payload(view, batch(10))
        os.truncate(path, 0)
        with pytest.raises(RingError, match=rf"ring '{ring_name}' .*0 bytes now"):
            reader.read(10)
        assert not view["price"].any() and not view["seq"].any()  # the lost pages read zeros
        calls = [
            lambda: reader.read(10), lambda: reader.read(1, wait_ns=1000), reader.release,
            lambda: reader.pop_into(empty_batch(4)), lambda: reader.stats,
            lambda: ring.push(batch(1)[0]), lambda: ring.push_batch(batch(4)),
            lambda: ring.stats, lambda: ring.read(1),
        ]
        for call in calls:
            with pytest.raises(RingError, match="was truncated under this process's mapping"):
                call()
    assert not path.exists()  # the creator still unlinks


FOREIGN_SIGBUS = (  # a ring guard installed, then a fault in another file's mapping
    "import mmap, resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "from workbench.feed.ring import ShmRing\n"
    "ShmRing.create(sys.argv[1], 16).close()\n"
    "f = open(sys.argv[2], 'w+b'); f.truncate(8192)\n"
    "m = mmap.mmap(f.fileno(), 8192); f.truncate(0)\n"
    "print('touching', flush=True)\n"
    "m[4096]\n"
)


def test_a_sigbus_outside_the_rings_still_kills_the_process(
    ring_name: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FOREIGN_SIGBUS, ring_name, str(tmp_path / "mapped")],
        capture_output=True, text=True, timeout=60)
    assert proc.stdout == "touching\n", proc.stderr
    assert proc.returncode == -signal.SIGBUS


KEEP_PRODUCING = (  # creates a ring, pushes argv[2] records, says so, then waits to be killed
    "import sys, time\n"
    "from workbench.feed.ring import ShmRing\n"
    "from workbench.events import empty_batch\n"
    "ring = ShmRing.create(sys.argv[1], 16)\n"
    "n = int(sys.argv[2])\n"
    "assert ring.push_batch(empty_batch(n)) == n\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def _killed_creator(name: str, pushed: int) -> int:
    proc = subprocess.Popen([sys.executable, "-c", KEEP_PRODUCING, name, str(pushed)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_rings_clean_removes_orphans_and_keeps_rings_a_live_process_holds(
    ring_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan, unclaimed = ring_name, f"{ring_name}-u"
    stale, live = f"{ring_name}-s", f"{ring_name}-l"
    try:
        producer_pid = _killed_creator(orphan, 5)
        creator_pid = _killed_creator(unclaimed, 0)
        with ShmRing.create(stale, 16), ShmRing.create(live, 16) as live_ring:
            subprocess.run([sys.executable, "-c", PUSH_THREE, stale], check=True, timeout=60)
            assert {st.name: st.state for st in ShmRing.list()}[live] == "waiting"
            live_ring.push_batch(batch(2))
            states = {st.name: st.state for st in ShmRing.list()}
            assert [states[n] for n in (orphan, unclaimed, stale, live)] == [
                "orphan", "orphan", "stale", "live"]
            assert cli.main(["rings", "--clean"]) == 0
            out = capsys.readouterr().out.splitlines()
            removed = {line.split("'")[1]: line for line in out if line.startswith("removed ")}
            assert removed[orphan] == (
                f"removed ring '{orphan}' (/dev/shm/wb-{orphan}): its producer and creator, "
                f"pid {producer_pid}, is gone; 5 of 5 records unread")
            assert removed[unclaimed] == (
                f"removed ring '{unclaimed}' (/dev/shm/wb-{unclaimed}): no producer ever came "
                f"and its creator pid {creator_pid} is gone; 0 of 0 records unread")
            assert stale not in removed and live not in removed
            assert not (SHM / f"wb-{orphan}").exists()
            assert not (SHM / f"wb-{unclaimed}").exists()
            assert (SHM / f"wb-{stale}").exists() and (SHM / f"wb-{live}").exists()
            rows = {line.split()[0]: line.split() for line in out if line.startswith(ring_name)}
            with ShmRing.attach(stale) as again:
                assert rows[stale][-3:-1] == [str(again.stats.producer_pid), "stale"]
            assert rows[live][-3:-1] == [str(os.getpid()), "live"]
    finally:
        for name in (orphan, unclaimed):
            if (SHM / f"wb-{name}").exists():
                ShmRing.unlink(name)


def test_rings_clean_json_says_what_it_removed(
    ring_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import orjson

    pid = _killed_creator(ring_name, 3)
    assert cli.main(["rings", "--clean", "--json"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"removed": ring_name, "reason": f"its producer and creator, pid {pid}, is gone",
            "pending": 3, "published": 3} in lines
    assert ring_name not in {line.get("name") for line in lines}  # not in the listing after
    assert not (SHM / f"wb-{ring_name}").exists()
