"""SpikeLog: causes are attached when (and only when) they ran inside the spike's window; the
whole-run store is exact whatever the number of spikes."""

from __future__ import annotations

import gc
import time

import orjson
import pytest

from workbench.latency.attribution import attribution_line, attribution_rows
from workbench.latency.spikes import (
    HIST_EDGES_NS,
    TIMELINE_BUCKETS,
    Cause,
    Spike,
    SpikeLog,
    SpikeSummary,
    dominant_stage,
    primary_cause,
)


def test_cause_inside_window_is_attached_and_old_one_is_not():
    log = SpikeLog(threshold_us=100)
    log.note_cause("journal_flush", 5_000)  # before the window: not this spike's
    start = time.perf_counter_ns()
    log.begin_iteration(start_ns=start, queue_depth=3)
    log.note_cause("snapshot_publish", 250_000, detail="x")
    spike = log.end_iteration(400_000, {"book": 1000, "queue": 300_000}, seq=42)
    assert spike is not None
    assert spike.seq == 42 and spike.tick_to_trade_ns == 400_000
    assert spike.cause_names() == ["snapshot_publish"]
    assert spike.causes[0].duration_ns == 250_000
    assert spike.queue_depth == 3
    assert spike.dominant == "queue" and spike.primary == "snapshot_publish"
    assert log.cause_counts == {"snapshot_publish": 1}
    assert log.spike_count == 1 and log.spikes() == [spike]
    assert log.housekeeping_spikes == 1


def test_under_threshold_is_not_a_spike():
    log = SpikeLog(threshold_us=1000)
    log.begin_iteration()
    log.note_cause("journal_flush", 10)
    assert log.end_iteration(999_999) is None
    assert log.spike_count == 0
    assert log.summary().count == 0


def test_backed_up_queue_is_a_cause():
    log = SpikeLog(threshold_us=1, queue_depth_cause=10)
    log.begin_iteration(queue_depth=50)
    spike = log.end_iteration(2_000)
    assert spike is not None and spike.cause_names() == ["queue_depth"]
    assert spike.causes[0].detail == "50"
    assert spike.dominant == "unmeasured"  # no breakdown given


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
    assert spike.primary == "gc"
    assert log._on_gc not in gc.callbacks


def test_dominant_stage_and_primary_cause():
    assert dominant_stage({"parse": 5, "queue": 9, "book": 9, "order": -1}) == "queue"
    assert dominant_stage({}) == dominant_stage(None) == "unmeasured"
    assert primary_cause([]) == "unexplained"
    assert primary_cause([Cause("gc", 10, 0), Cause("burst", 30, 0)]) == "burst"
    assert primary_cause([Cause("someone_else", 10, 0)]) == "other"


def test_more_spikes_than_the_detail_size_keep_exact_totals_and_the_worst():
    log = SpikeLog(threshold_us=1, detail=50, origin_ns=0)
    values = [(i * 7919) % 100_003 + 2_000 for i in range(20_000)]
    stages = ("parse", "queue", "book", "strategy", "order")
    for i, v in enumerate(values):
        log.begin_iteration(start_ns=0)
        log.end_iteration(v, {stages[i % 5]: v}, seq=i)
    s = log.summary()
    assert s.count == log.spike_count == len(values)
    assert s.max_ns == max(values) and s.total_ns == sum(values)
    assert len(s.worst) == 50
    assert [x.tick_to_trade_ns for x in s.worst] == sorted(values, reverse=True)[:50]
    assert s.by_stage == {**dict.fromkeys(stages, 4_000), "unmeasured": 0}
    assert sum(s.by_cause.values()) == s.count == s.unexplained
    assert sum(map(sum, s.hist_by_stage.values())) == s.count
    assert len(HIST_EDGES_NS) == len(s.hist_by_stage["queue"]) + 1
    assert [x.tick_to_trade_ns for x in log.worst(3)] == sorted(values, reverse=True)[:3]


def test_timeline_buckets_double_past_capacity():
    log = SpikeLog(threshold_us=1, origin_ns=0)
    n = 3 * TIMELINE_BUCKETS
    for second in range(n):  # spikes stamped one second apart
        log.add(Spike(second, second * 1_000_000_000 + 1, 5_000, {"book": 4_000}, 0,
                           (), "book", "unexplained"))
    s = log.summary()
    assert s.bucket_s == 4.0
    assert len(s.timeline_stage["book"]) <= TIMELINE_BUCKETS
    assert sum(s.timeline_stage["book"]) == n
    assert s.timeline_t_s[-1] + s.bucket_s >= n - 1  # the last second is in the last bucket
    assert s.timeline_stage["book"][0] == 4


def test_summary_round_trips_through_json():
    log = SpikeLog(threshold_us=1, detail=5)
    for i in range(12):
        log.begin_iteration()
        log.note_cause("journal_flush", 100 + i, detail="d")
        log.end_iteration(10_000 + i, {"strategy": 9_000}, seq=i)
    s = log.summary()
    back = SpikeSummary.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert back == s
    assert back.worst[0].causes[0].name == "journal_flush"


def test_attribution_rows_add_up_and_state_the_unexplained_share():
    log = SpikeLog(threshold_us=1)
    for i in range(10):
        log.begin_iteration()
        if i < 3:
            log.note_cause("gc", 1_000)
        log.end_iteration(5_000, {"queue": 4_000 if i < 8 else 0, "book": 1_000})
    s = log.summary()
    rows = attribution_rows(s)
    stages = {r.name: r.spikes for r in rows if r.group == "dominant stage"}
    causes = {r.name: r.spikes for r in rows if r.group == "primary cause"}
    assert stages == {"queue": 8, "book": 2}
    assert causes == {"gc": 3, "unexplained": 7}
    assert sum(causes.values()) == sum(stages.values()) == 10
    line = attribution_line(s)
    assert "10 spikes over 1 µs" in line and "queue 8 (80%)" in line
    assert "unexplained 7 (70%)" in line


def test_bad_threshold_and_detail():
    with pytest.raises(ValueError, match="threshold_us"):
        SpikeLog(threshold_us=0)
    with pytest.raises(ValueError, match="detail"):
        SpikeLog(detail=0)
