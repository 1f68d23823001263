"""Every phase of the serialization, eventloop, memory, frames and spikes topics: both variants
on small real inputs agree (the phase's own check), and each check catches a real difference."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from workbench.bench import frames, memory, recorded, registry, spikes
from workbench.errors import PhaseMismatch

MY_TOPICS = ("serialization", "eventloop", "memory", "frames", "spikes")
registry.load_topics(MY_TOPICS)
PHASES = registry.select(list(MY_TOPICS))
SPIKES_MESSAGES = 600


@pytest.mark.parametrize("phase", PHASES, ids=[p.name for p in PHASES])
def test_variants_agree_on_real_input(phase: registry.Phase, shared_data: Path) -> None:
    data = phase.prepare(True)
    if phase.topic == "spikes":  # the gc.collect() baselines cost 30-300 ms a collection
        data = data[:SPIKES_MESSAGES]
    base, opt = phase.baseline(data), phase.optimized(data)
    phase.check(base.result, opt.result)
    if phase.metric in ("memory", "bytes"):
        assert base.nbytes > 0 and opt.nbytes > 0
    if phase.metric == "latency":
        assert len(base.latencies_ns) == len(opt.latencies_ns) == base.items
        assert (np.asarray(opt.latencies_ns) > 0).all()
    if phase.metric == "throughput":
        assert base.items == opt.items > 0


def test_json_check_catches_a_changed_message(shared_data: Path) -> None:
    phase = registry.select(["serialization.json_loads"])[0]
    raws = phase.prepare(True)[:50]
    a = phase.baseline(raws).result
    b = phase.optimized(raws).result
    b[17] = {**b[17], "stream": "btcusdt@other"}
    with pytest.raises(PhaseMismatch, match="item 17"):
        phase.check(a, b)


def test_decoded_messages_match_the_recording(shared_data: Path) -> None:
    msgs = recorded.messages(200)
    assert len(msgs) == 200
    assert all(stamp > 1_723_161_000_000_000_000 for stamp, _ in msgs)  # 2024-08-08 in ns
    quotes, trades = recorded.quotes_and_trades(200)
    raw_quotes = [orjson.loads(r)["data"] for _, r in msgs if b"@bookTicker" in r]
    assert len(quotes) == len(raw_quotes) > 0
    assert all(q[3] == float(r["b"]) and q[5] == float(r["a"]) and q[3] < q[5]
               for q, r in zip(quotes, raw_quotes, strict=True))
    assert all(t[3] > 0 and t[4] > 0 for t in trades)


def test_lz4_check_names_the_byte(shared_data: Path) -> None:
    phase = registry.select(["serialization.lz4_size"])[0]
    blob = phase.prepare(True)
    with pytest.raises(PhaseMismatch, match="byte 5"):
        phase.check(blob, blob[:5] + b"#" + blob[6:])


def test_slots_instance_size_matches_getsizeof(shared_data: Path) -> None:
    rows = memory._rows("trade", True)
    out = memory._build(memory.SlotTrade, rows)
    # a slotted instance holds no dict: tracemalloc's per-instance bytes are its object size
    assert out.nbytes == sys.getsizeof(memory.SlotTrade(*rows[0]))
    plain = memory._build(memory.Trade, rows)
    assert plain.nbytes > out.nbytes


def test_window_means_match_numpy(shared_data: Path) -> None:
    mids = memory._mids(True)[:3000]
    means = memory._window_deque(mids, 100).result
    arr = np.asarray(mids)
    assert means[99] == pytest.approx(arr[:100].mean(), rel=1e-12)
    assert means[2999] == pytest.approx(arr[2900:3000].mean(), rel=1e-9)
    assert means[10] == pytest.approx(arr[:11].mean(), rel=1e-12)


def test_rolling_check_reports_first_row(shared_data: Path) -> None:
    data = frames._prepare_rolling(True)
    z, vwap = frames._rolling_polars(data).result
    pz, pvwap = frames._rolling_pandas(data).result
    # independent VWAP over the last 200 trades
    t = data["pd_trades"]
    i = len(t) - 1
    window = t.iloc[i - 199:i + 1]
    assert vwap[i] == pytest.approx((window.price * window.qty).sum() / window.qty.sum())
    bad = pvwap.copy()
    bad[300] *= 1.01
    with pytest.raises(PhaseMismatch, match="vwap: first difference at row 300"):
        frames._check_rolling((z, vwap), (pz, bad))


def test_lazy_query_matches_a_hand_computed_second(shared_data: Path) -> None:
    q, t = frames._frames(True)
    out = frames._lazy((q, t)).result
    sec = out["second"][5]
    trades = [r for r in recorded.quotes_and_trades(frames.QUICK_MESSAGES)[1]
              if r[1] // 1000 == sec]
    vwap = sum(r[3] * r[4] for r in trades) / sum(r[4] for r in trades)
    assert out.filter(out["second"] == sec)["vwap"][0] == pytest.approx(vwap, rel=1e-12)
    assert out.filter(out["second"] == sec)["trades"][0] == len(trades)


def test_heap_book_best_prices_match_dict_scan(shared_data: Path) -> None:
    book = spikes.HeapBook()
    for _, raw in recorded.messages(3000):
        if b"@depth" in raw:
            d = orjson.loads(raw)["data"]
            book.apply(d["b"], True)
            book.apply(d["a"], False)
        elif b'"lastUpdateId"' in raw:
            msg = orjson.loads(raw)
            book.clear()
            book.apply(msg["bids"], True)
            book.apply(msg["asks"], False)
        else:
            continue
        assert book.best_bid() == max(book.bids)
        assert book.best_ask() == min(book.asks)
    assert book.stale() > 0
    book.rebuild()
    assert book.stale() == 0 and book.best_bid() == max(book.bids)


def test_paper_loop_decisions_alternate_on_trades(shared_data: Path) -> None:
    msgs = [raw for _, raw in recorded.messages(1000)]
    out = spikes.paper_loop(msgs, spikes.FIXED)
    decisions, tops = out.result
    assert len(decisions) >= 2
    assert [s for s, _, _ in tops] == [i for i, m in enumerate(msgs) if b"@trade" in m]
    assert all(b"@trade" in msgs[step] for step, _, _ in decisions)
    sides = [side for _, side, _ in decisions]
    assert all(a != b for a, b in itertools.pairwise(sides))
    spiky = spikes.paper_loop(msgs[:SPIKES_MESSAGES], spikes.SPIKY)
    assert spiky.extra["causes"].get("gc", 0) >= SPIKES_MESSAGES // spikes.GC_EVERY
    assert spiky.result == spikes.paper_loop(msgs[:SPIKES_MESSAGES], spikes.FIXED).result
    changed = [*decisions[:-1], (decisions[-1][0], decisions[-1][1], decisions[-1][2] + 0.1)]
    with pytest.raises(PhaseMismatch, match=f"decisions.*item {len(decisions) - 1}"):
        spikes._check((decisions, tops), (changed, tops))
    with pytest.raises(PhaseMismatch, match="book tops"):
        spikes._check((decisions, tops), (decisions, tops[:-1]))


def test_ws_echo_returns_what_was_sent(shared_data: Path) -> None:
    from workbench.bench import eventloop

    payloads = eventloop._prepare(True)[:40]
    for variant in (eventloop._default_loop, eventloop._uvloop):
        out = variant(payloads)
        assert out.result == payloads
        assert (out.latencies_ns > 0).all() and out.items == 40


def test_first_difference_names_index_and_length() -> None:
    registry.first_difference([1, 2, 3], [1, 2, 3], "same")
    with pytest.raises(PhaseMismatch, match="x: first difference at item 1: 2 != 5"):
        registry.first_difference([1, 2, 3], [1, 5, 3], "x")
    with pytest.raises(PhaseMismatch, match="y: 3 items vs 2"):
        registry.first_difference([1, 2, 3], [1, 2], "y")
