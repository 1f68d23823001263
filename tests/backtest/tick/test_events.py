"""Event conversion: the two-timeline layout, the same as hftbacktest's, in bounded chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.backtest.tick.events import (
    TF_EXCH,
    TF_LOCAL,
    TickData,
    convert,
    events_for,
    merge_rows,
)
from workbench.errors import ConfigError
from workbench.events import EVENT_DTYPE, K_SNAP_BEGIN

FUTURES = "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst"


def _raw(data: TickData) -> np.ndarray:
    """The rows before the merge: the local timeline, in order, flags cleared."""
    rows = np.asarray(data.rows)
    raw = rows[(rows["flags"] & TF_LOCAL) != 0].copy()
    raw["flags"] &= 0xFF
    return raw


def test_timelines_are_ordered_and_complete(usdm_events):
    rows = np.asarray(usdm_events.rows)
    ex = (rows["flags"] & TF_EXCH) != 0
    lo = (rows["flags"] & TF_LOCAL) != 0
    assert ex.all() | lo.all() or (ex | lo).all()
    assert (np.diff(rows["ts_event_ns"][ex]) >= 0).all()
    assert (np.diff(rows["ts_recv_ns"][lo]) >= 0).all()
    assert ex.sum() == lo.sum()  # every row once on each timeline
    assert (rows["ts_recv_ns"] - rows["ts_event_ns"]).min() == 0  # clock corrected
    assert usdm_events.meta.local_offset_ns > 1_200_000_000  # the recorder lagged ~1.27 s
    assert (rows["kind"] == K_SNAP_BEGIN).sum() >= 1
    assert usdm_events.meta.symbols[str(usdm_events.meta.symbol_id())] == ["binance-usdm",
                                                                           "BTCUSDT"]


def test_merge_is_hftbacktests_correct_event_order(usdm_events):
    validation = pytest.importorskip("hftbacktest.data.validation")
    from workbench.backtest.tick.peer import to_hbt

    raw = _raw(usdm_events)
    sid = usdm_events.meta.symbol_id()
    theirs_in = to_hbt(raw, sid)
    theirs = validation.correct_event_order(
        theirs_in, np.argsort(theirs_in["exch_ts"], kind="mergesort"),
        np.argsort(theirs_in["local_ts"], kind="mergesort"))
    ours = to_hbt(np.asarray(usdm_events.rows), sid)  # streamed merge of the file
    assert len(ours) == len(theirs)
    for col in ("ev", "exch_ts", "local_ts", "px", "qty"):
        assert np.array_equal(ours[col], theirs[col]), col
    assert np.array_equal(np.asarray(usdm_events.rows), merge_rows(raw))


def test_small_chunks_give_the_same_file(shared_data, tmp_path):
    whole = convert(shared_data / FUTURES, tmp_path / "whole.npy")
    chunked = convert(shared_data / FUTURES, tmp_path / "chunked.npy", chunk_events=1024)
    assert len(whole) > 3 * 1024  # several chunks
    assert np.array_equal(np.asarray(whole.rows), np.asarray(chunked.rows))
    assert len(whole.meta.symbols) == 4  # sushi, akro, keep, ctk


def test_cache_reuses_the_file(shared_data, tmp_path):
    first = events_for(shared_data / FUTURES, directory=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = events_for(shared_data / FUTURES, directory=tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    shifted = events_for(shared_data / FUTURES, base_latency_ns=5, directory=tmp_path)
    assert shifted.path != first.path
    # this capture's clock was not behind the venue's: no correction, so no base latency either
    # (hftbacktest's correct_local_timestamp adds it only with the correction)
    assert shifted.meta.local_offset_ns == first.meta.local_offset_ns == 0


def test_bad_input_is_refused(shared_data, tmp_path):
    with pytest.raises(ConfigError, match="nothing to convert"):
        convert(shared_data / "bitfinex/L3_feed.json.gz", tmp_path / "x.npy")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ConfigError, match="not a converted"):
        TickData(tmp_path / "plain.npy")
    np.save(tmp_path / "rows.npy", np.zeros(3, EVENT_DTYPE))
    (tmp_path / "rows.json").write_text(json.dumps({"format_version": 0}))
    with pytest.raises(ConfigError, match="format version"):
        TickData(tmp_path / "rows.npy")
