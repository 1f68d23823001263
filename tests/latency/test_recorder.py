"""LatencyRecorder against hdrh's own per-value recording and numpy percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from workbench.latency.recorder import HIGHEST_NS, SIGNIFICANT_FIGURES, LatencyRecorder
from workbench.latency.stages import STAGES, Stage

SECOND = 1_000_000_000


def _row(t_ns: int, t2t: int, book: int = -1) -> tuple[int, ...]:
    values = dict.fromkeys(STAGES, -1)
    values[Stage.TICK_TO_TRADE] = t2t
    values[Stage.BOOK] = book
    return (t_ns, *(values[s] for s in STAGES))


def test_summary_matches_hdrh_record_value():
    rng = np.random.default_rng(3)
    values = rng.lognormal(9.0, 1.6, 20_000).astype(np.int64)
    rec = LatencyRecorder(buffer_rows=1000)  # folds 20 times on its own
    for i, v in enumerate(values.tolist()):
        rec.add(_row(5 * SECOND + i * 1000, v))
    rec.close()
    reference = HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_FIGURES)
    for v in values.tolist():
        reference.record_value(v)
    got = rec.summary()["tick_to_trade"]
    assert got["count"] == len(values)
    assert got["max_ns"] == int(values.max())
    assert got["p50_ns"] == reference.get_value_at_percentile(50)
    assert got["p99_ns"] == reference.get_value_at_percentile(99)
    assert got["p999_ns"] == reference.get_value_at_percentile(99.9)
    assert rec.summary()["book"]["count"] == 0  # -1 means not measured


def test_values_rebuild_the_distribution():
    rng = np.random.default_rng(4)
    values = rng.integers(100, 5_000_000, 5000)
    rec = LatencyRecorder()
    for v in values.tolist():
        rec.add(_row(SECOND, v))
    rec.fold()
    rebuilt = rec.values(Stage.TICK_TO_TRADE)
    assert len(rebuilt) == len(values)
    # each value is its bucket's top: within 0.1% (3 significant digits) above the truth
    truth = np.sort(values)
    assert np.all(rebuilt >= truth)
    assert np.all(rebuilt <= truth * 1.001 + 1)


def test_per_second_series():
    rec = LatencyRecorder(buffer_rows=7)
    expected = {}
    for sec in range(3):
        vals = list(range(1000 * (sec + 1), 1000 * (sec + 1) + 100))
        expected[sec + 10] = (int(np.percentile(vals, 50)), max(vals))
        for j, v in enumerate(vals):
            rec.add(_row((sec + 10) * SECOND + j, v, book=7))
    rec.close()
    series = rec.series("tick_to_trade")
    assert series["t_s"].tolist() == [10, 11, 12]
    for t, p50, mx in zip(series["t_s"], series["p50_ns"], series["max_ns"], strict=True):
        want_p50, want_max = expected[int(t)]
        assert mx == want_max
        assert abs(p50 - want_p50) <= 1 + want_p50 // 1000
    assert rec.series(Stage.BOOK)["max_ns"].tolist() == [7, 7, 7]


def test_record_single_value_and_bad_buffer():
    rec = LatencyRecorder()
    rec.record(Stage.QUEUE, 12_345)
    assert rec.pending == 1
    rec.fold()
    assert rec.summary()["queue"]["count"] == 1
    assert rec.summary()["queue"]["max_ns"] == 12_345
    with pytest.raises(ValueError, match="buffer_rows"):
        LatencyRecorder(buffer_rows=0)
