"""measure_hiccups finds the stalls another thread forces on the spinning one."""

from __future__ import annotations

import threading
import time

import pytest

from workbench.latency.hiccups import measure_hiccups


def test_stalls_forced_by_a_thread_holding_the_gil_are_counted_and_sized():
    done = threading.Event()
    held_ns: list[int] = []

    def staller() -> None:
        # a 50 MB bytes repeat runs in C holding the GIL: the spinner cannot read its clock.
        # (200 MB took up to ~0.2 s a stall on a fresh VM: the third one then ran past the
        # probe's 0.8 s, which ended late)
        for _ in range(3):
            time.sleep(0.1)
            t0 = time.perf_counter_ns()
            _ = b"x" * 50_000_000
            held_ns.append(time.perf_counter_ns() - t0)
        done.set()

    # the probe counts gaps over half a stall (one timed here first): the VM's own hiccups of
    # a few ms (at a 1 ms threshold this VM added up to 5 in 0.8 s) stay below it
    t0 = time.perf_counter_ns()
    _ = b"x" * 50_000_000
    threshold_us = (time.perf_counter_ns() - t0) / 2e3
    thread = threading.Thread(target=staller)
    thread.start()
    seen = measure_hiccups(seconds=0.8, threshold_us=threshold_us)
    thread.join()
    assert done.is_set() and len(held_ns) == 3
    shortest = min(held_ns) / 1e3
    assert shortest > max(threshold_us, 2000)  # every stall counts and stands out
    long_ones = seen.count  # the three stalls (plus, rarely, a scheduler one)
    assert 3 <= long_ones <= 6
    assert seen.max_us >= 0.9 * shortest
    assert seen.stolen_pct >= 100.0 * 0.9 * sum(held_ns) / 1e9 / seen.seconds
    assert seen.seconds == pytest.approx(0.8, abs=0.05)
    assert seen.per_s == pytest.approx(seen.count / seen.seconds)


def test_a_quiet_probe_reports_its_threshold_and_no_more_than_it_saw():
    seen = measure_hiccups(seconds=0.05, threshold_us=1_000_000.0)  # nothing lasts 1 s
    assert (seen.count, seen.max_us, seen.stolen_pct) == (0, 0.0, 0.0)
    assert seen.threshold_us == 1_000_000.0


@pytest.mark.parametrize(("seconds", "threshold_us"), [(0, 5.0), (1.0, 0), (-1, 5.0)])
def test_bad_arguments_are_refused(seconds, threshold_us):
    with pytest.raises(ValueError, match="must be > 0"):
        measure_hiccups(seconds, threshold_us)
