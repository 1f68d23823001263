"""SpikeLog: causes are attached when (and only when) they ran inside the spike's window."""

from __future__ import annotations

import gc
import time

import pytest

from workbench.latency.spikes import SpikeLog


def test_cause_inside_window_is_attached_and_old_one_is_not():
    log = SpikeLog(threshold_us=100)
    log.note_cause("journal_flush", 5_000)  # before the window: not this spike's
    start = time.perf_counter_ns()
    log.begin_iteration(start_ns=start, queue_depth=3)
    log.note_cause("snapshot_publish", 250_000, detail="x")
    spike = log.end_iteration(400_000, {"book": 1000}, seq=42)
    assert spike is not None
    assert spike.seq == 42 and spike.tick_to_trade_ns == 400_000
    assert spike.cause_names() == ["snapshot_publish"]
    assert spike.causes[0].duration_ns == 250_000
    assert spike.queue_depth == 3
    assert log.cause_counts == {"snapshot_publish": 1}
    assert log.spike_count == 1 and log.spikes() == [spike]


def test_under_threshold_is_not_a_spike():
    log = SpikeLog(threshold_us=1000)
    log.begin_iteration()
    log.note_cause("journal_flush", 10)
    assert log.end_iteration(999_999) is None
    assert log.spike_count == 0


def test_backed_up_queue_is_a_cause():
    log = SpikeLog(threshold_us=1, queue_depth_cause=10)
    log.begin_iteration(queue_depth=50)
    spike = log.end_iteration(2_000)
    assert spike is not None and spike.cause_names() == ["queue_depth"]
    assert spike.causes[0].detail == "50"


def test_gc_collection_is_recorded_with_generation():
    log = SpikeLog(threshold_us=1)
    log.install_gc_hook()
    try:
        log.begin_iteration()
        gc.collect()
        spike = log.end_iteration(5_000)
    finally:
        log.remove_gc_hook()
    assert spike is not None
    gcs = [c for c in spike.causes if c.name == "gc"]
    assert gcs and gcs[-1].detail.startswith("gen2")
    assert gcs[-1].duration_ns > 0
    assert log._on_gc not in gc.callbacks


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold_us"):
        SpikeLog(threshold_us=0)
