"""The native feed handler: a real `workbench feed` process publishing into a ring that this
process reads, and the in-process FeedHandler's pacing, lossless mode and stop."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from workbench import cli
from workbench.errors import ConfigError, FeedError
from workbench.events import EventFlag, EventKind, empty_batch
from workbench.feed.handler import FeedConfig, FeedHandler
from workbench.feed.ring import ShmRing

SOURCE_EVENTS = 1 << 16


def source(n: int = SOURCE_EVENTS) -> np.ndarray:
    rng = np.random.default_rng(7)
    ev = empty_batch(n)
    ev["venue_seq"] = np.arange(1000, 1000 + n)
    ev["ts_recv_ns"] = np.cumsum(rng.integers(1, 1_000_000, n))
    ev["kind"] = EventKind.BID_LEVEL
    ev["price"] = 60_000 + rng.integers(0, 500, n) / 10
    ev["qty"] = rng.random(n)
    return ev


def start_feed(ring_name: str, path: Path, *pace: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "feed", "--ring", ring_name, "--source",
         str(path), *pace],
        stderr=subprocess.PIPE, text=True,
    )


def feed_summary(proc: subprocess.Popen[str]) -> tuple[int, int]:
    """(published, dropped) from the feed process's closing line."""
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    found = re.search(r"published (\d+) dropped (\d+)", err)
    assert found, err
    return int(found[1]), int(found[2])


def test_5m_events_from_another_process_arrive_once_and_in_order(
    ring_name: str, tmp_path: Path
) -> None:
    total = 5_000_000
    src = source()
    path = tmp_path / "events.npy"
    np.save(path, src)
    with ShmRing.create(ring_name, 1 << 16) as ring:
        t_launch = time.perf_counter_ns()
        # lossless: the producer waits for room rather than drop while this consumer checks
        proc = start_feed(ring_name, path, "--flat", "--lossless", "--count", str(total))
        expected, last_publish, freshest = 1, t_launch, np.inf
        deadline = time.monotonic() + 120
        while expected <= total and time.monotonic() < deadline:
            got = ring.read(1 << 16)
            if not len(got):
                if proc.poll() is not None and not ring.stats.pending:
                    break
                time.sleep(0.0001)
                continue
            t_read = time.perf_counter_ns()
            n = len(got)
            seq = got["seq"]
            want = np.arange(expected, expected + n, dtype=np.uint64)
            if not np.array_equal(seq, want):
                bad = int(np.flatnonzero(seq != want)[0])
                pytest.fail(f"record {expected + bad - 1}: seq {seq[bad]}, expected {want[bad]}")
            row = (seq - 1) % SOURCE_EVENTS
            assert np.array_equal(got["venue_seq"], src["venue_seq"][row])
            assert np.array_equal(got["price"], src["price"][row])
            assert np.array_equal(got["qty"], src["qty"][row])
            # ts_publish_ns is CLOCK_MONOTONIC = perf_counter_ns(): after our launch stamp, never
            # after our read stamp, never decreasing, and close to the read for fresh batches
            publish = got["ts_publish_ns"]
            assert publish[0] >= last_publish and publish[-1] <= t_read
            assert not (np.diff(publish) < 0).any()
            freshest = min(freshest, t_read - publish[-1])
            last_publish = int(publish[-1])
            expected += n
        published, dropped = feed_summary(proc)
        assert expected - 1 == total
        assert (published, dropped) == (total, 0)
        st = ring.stats
        assert (st.published, st.consumed + len(got), st.dropped, st.gaps) == (total,) * 2 + (0, 0)
        assert st.finished and not st.stale  # the producer closed the ring and exited
        assert freshest < 0.5e9


def test_a_consumer_that_stops_reading_sees_exactly_the_drops_as_gaps(
    ring_name: str, tmp_path: Path
) -> None:
    total, capacity = 200_000, 1024
    path = tmp_path / "events.npy"
    np.save(path, source(4096))
    seqs, flags, kinds = [], [], []

    def keep(got: np.ndarray) -> None:
        seqs.append(got["seq"].copy())
        flags.append(got["flags"].copy())
        kinds.append(got["kind"].copy())

    with ShmRing.create(ring_name, capacity) as ring:
        proc = start_feed(ring_name, path, "--rate", "2e5", "--count", str(total))
        paused = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            got = ring.read(capacity)
            if not len(got):
                time.sleep(0.0001)
                continue
            keep(got)
            if not paused:
                paused = True
                ring.release()
                time.sleep(0.25)  # stop reading: 50k events come, the ring holds 1024
        published, dropped = feed_summary(proc)
        # drops are seen at the next record: a final record from this process (the producer
        # now) makes even drops at the very end visible
        marker = empty_batch(1)
        marker["kind"] = EventKind.HEARTBEAT
        assert ring.push(marker[0])
        while len(got := ring.read(capacity)):
            keep(got)
        ring.release()
        st = ring.stats
    seq = np.concatenate(seqs).astype(np.int64)
    flag = np.concatenate(flags)
    assert paused and dropped > 0 and published + dropped == total
    assert (st.published, st.dropped, st.high_water) == (published + 1, dropped, capacity)
    assert len(seq) == published + 1 and seq[-1] == total + 1
    assert np.concatenate(kinds)[-1] == EventKind.HEARTBEAT
    step = np.diff(seq, prepend=0)
    assert (step >= 1).all()
    assert int((step - 1).sum()) == dropped == st.gaps
    np.testing.assert_array_equal((flag & EventFlag.GAP) != 0, step > 1)


def _read_all(ring: ShmRing, feed: FeedHandler, total: int) -> np.ndarray:
    out = []
    received = 0
    deadline = time.monotonic() + 60
    while received < total and time.monotonic() < deadline:
        got = ring.read(1 << 14)
        if len(got):
            out.append(got.copy())
            received += len(got)
        elif not feed.status.running and not ring.stats.pending:
            break
    return np.concatenate(out) if out else empty_batch(0)


def test_rate_never_publishes_an_event_before_its_time(ring_name: str) -> None:
    rate, total = 50_000.0, 5_000
    with ShmRing.create(ring_name, 1 << 13) as ring:
        feed = FeedHandler(ring, source(1000), FeedConfig("rate", rate, count=total)).start()
        got = _read_all(ring, feed, total)
        assert feed.wait(10)
        t0 = feed.status.started_ns
        feed.close()
    assert len(got) == total
    due = np.floor(np.arange(total) * 1e9 / rate)
    assert (got["ts_publish_ns"] - t0 >= due).all()


def test_speed_follows_recorded_timing_across_laps(ring_name: str) -> None:
    speed, n = 50.0, 300
    src = source(n)
    with ShmRing.create(ring_name, 1 << 12) as ring:
        feed = FeedHandler(ring, src, FeedConfig("speed", speed, count=2 * n)).start()
        got = _read_all(ring, feed, 2 * n)
        t0 = feed.status.started_ns
        feed.close()
    assert len(got) == 2 * n
    rel = (src["ts_recv_ns"] - src["ts_recv_ns"][0]).astype(np.float64)
    lap_span = rel[-1] + rel[-1] / (n - 1)
    due = np.concatenate([rel, lap_span + rel]) / speed
    assert (got["ts_publish_ns"] - t0 >= np.floor(due)).all()
    np.testing.assert_array_equal(got["venue_seq"], np.tile(src["venue_seq"], 2))


def test_lossless_flat_feed_into_a_small_ring_loses_nothing(ring_name: str) -> None:
    total = 300_000
    with ShmRing.create(ring_name, 1024) as ring:
        with FeedHandler(ring, source(), FeedConfig("flat", count=total, lossless=True)) as feed:
            got = _read_all(ring, feed, total)
        assert (feed.status.published, feed.status.dropped) == (total, 0)
        assert (ring.stats.dropped, ring.stats.gaps) == (0, 0)
    np.testing.assert_array_equal(got["seq"], np.arange(1, total + 1))


def test_stop_ends_a_feed_waiting_on_a_full_ring_and_outlives_ring_close(
    ring_name: str,
) -> None:
    ring = ShmRing.create(ring_name, 64)
    feed = FeedHandler(ring, source(100), FeedConfig("flat", count=10**12, lossless=True))
    feed.start()
    assert not feed.wait(0.05)  # blocked on the full ring, nobody reads
    ring.close()  # unlinks; the feed still holds the mapping
    assert feed.status.running
    feed.stop()
    assert feed.wait(10)
    st = feed.status
    assert st.stopped and not st.running and (st.published, st.dropped) == (64, 0)
    feed.close()
    assert feed.status == st
    with pytest.raises(FeedError, match="closed"):
        feed.stop()


def test_bad_feed_input_is_refused(
    ring_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in [("warp", 1.0), ("rate", 0.0), ("speed", -2.0), ("rate", float("nan"))]:
        with pytest.raises(ConfigError):
            FeedConfig(*bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="count"):
        FeedConfig("flat", count=-1)
    with ShmRing.create(ring_name, 16) as ring:
        with pytest.raises(ValueError, match="EVENT_DTYPE"):
            FeedHandler(ring, np.zeros(4), FeedConfig())
        with pytest.raises(ValueError, match="non-empty"):
            FeedHandler(ring, empty_batch(0), FeedConfig())
        feed = FeedHandler(ring, source(10), FeedConfig())
        with pytest.raises(FeedError, match="not started"):
            feed.wait(0)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros(10))
    for path in (wrong, tmp_path / "missing.npy"):
        code = cli.main(["feed", "--ring", ring_name, "--source", str(path), "--flat"])
        assert code == 1
        assert str(path) in capsys.readouterr().err
    # neither --source nor --venue, or both; --source without its pace
    for argv in (["feed", "--ring", ring_name],
                 ["feed", "--ring", ring_name, "--source", str(wrong), "--venue", "binance"],
                 ["feed", "--ring", ring_name, "--source", str(wrong)]):
        assert cli.main(argv) == 1
        assert "--source" in capsys.readouterr().err


def test_a_converted_recording_is_replayed_into_the_ring(shared_data: Path, ring_name: str,
                                                         tmp_path: Path) -> None:
    """`workbench convert RECORDING OUT.npy` writes the event file `workbench feed --source`
    replays: the ring carries its events, in order, every field but the ring's stamps."""
    from workbench.backtest.tick.events import convert

    out = convert(shared_data / "bybit/xrpusdt-ob500.data.zip", tmp_path / "xrp.npy").path
    events = np.load(out)
    with ShmRing.create(ring_name, 1 << 13) as ring:
        published, dropped = feed_summary(start_feed(ring_name, out, "--flat", "--lossless"))
        assert (published, dropped) == (len(events), 0)
        got = ring.read(len(events)).copy()
    assert len(got) == len(events)
    for name in ("ts_event_ns", "ts_recv_ns", "venue_seq", "symbol_id", "kind", "side",
                 "flags", "price", "qty"):
        np.testing.assert_array_equal(got[name], events[name], err_msg=name)
