"""L3 FIFO queue backtest: the Bitfinex raw-book reader, the FIFO book and its queue ahead, the
fill rules, and the quoting backtest on the real recording against plain recomputations."""

from __future__ import annotations

import gzip
import math
import random

import numpy as np
import orjson
import pytest

from workbench.backtest.tick.l3_backtest import L3Config, L3Gateway, L3Quoter, l3_backtest
from workbench.backtest.tick.l3_book import ASK, BID, L3Book
from workbench.backtest.tick.l3_events import (
    A_ADD,
    A_CLEAR,
    A_DELETE,
    A_MODIFY,
    parse_messages,
    read_l3,
)
from workbench.backtest.tick.latency import ConstantLatency
from workbench.engine.compiled import CANCELED, EXPIRED, FILLED, NEW
from workbench.errors import ConfigError, RecordingError

L3_FILE = "bitfinex/L3_feed.json.gz"
MS = 1_000_000


@pytest.fixture(scope="module")
def raw_messages(shared_data) -> list:
    return orjson.loads(gzip.decompress((shared_data / L3_FILE).read_bytes()))


def _apply(book: L3Book, row) -> None:
    action, oid = int(row["action"]), int(row["order_id"])
    if action == A_ADD:
        book.add(oid, int(row["side"]), float(row["price"]), float(row["qty"]))
    elif action == A_MODIFY:
        book.modify(oid, int(row["side"]), float(row["price"]), float(row["qty"]))
    elif action == A_DELETE:
        book.delete(oid)


# ---- FIFO book: hand-computed cases ---------------------------------------------------------

def _level(book: L3Book, side: int, price: float) -> list[int]:
    return [k for k, _ in book.level_orders(side, price)]


def test_own_order_joins_back_and_queue_ahead_changes_only_for_orders_ahead():
    book = L3Book()
    book.add(11, BID, 100.0, 1.0)
    book.add(12, BID, 100.0, 2.0)
    book.add(13, BID, 99.0, 5.0)  # another level: never ahead
    assert book.add_own(1, BID, 100.0, 0.3) == 3.0
    book.add(14, BID, 100.0, 0.5)  # later: behind us
    assert _level(book, BID, 100.0) == [11, 12, -1, 14]
    assert book.queue_ahead(1) == 3.0
    book.delete(11)  # ahead, cancelled
    assert book.queue_ahead(1) == 2.0
    book.modify(12, BID, 100.0, 1.25)  # ahead, reduced: keeps its place
    assert _level(book, BID, 100.0) == [12, -1, 14]
    assert book.queue_ahead(1) == 1.25
    book.delete(14)  # behind, cancelled
    book.modify(13, BID, 99.0, 1.0)
    assert book.queue_ahead(1) == 1.25
    book.add(15, BID, 100.0, 7.0)
    book.modify(15, BID, 100.0, 1.0)  # behind, reduced
    assert book.queue_ahead(1) == 1.25
    # the L2 view holds the feed orders only
    assert book.depth(BID) == [(100.0, 2.25), (99.0, 1.0)]
    assert book.best_bid() == 100.0


def test_amount_increase_or_price_change_loses_priority():
    book = L3Book()
    book.add(21, ASK, 50.0, 1.0)
    book.add(22, ASK, 50.0, 1.0)
    book.add_own(2, ASK, 50.0, 0.1)
    assert book.queue_ahead(2) == 2.0
    book.modify(21, ASK, 50.0, 3.0)  # increase: back of the level, now behind us
    assert _level(book, ASK, 50.0) == [22, -2, 21]
    assert book.queue_ahead(2) == 1.0
    book.modify(22, ASK, 51.0, 1.0)  # moves away
    book.modify(22, ASK, 50.0, 1.0)  # and back: behind everyone
    assert _level(book, ASK, 50.0) == [-2, 21, 22]
    assert book.queue_ahead(2) == 0.0
    assert book.depth(ASK) == [(50.0, 4.0)]
    assert book.own_ahead_of(21) == [2]
    book.add(23, ASK, 49.0, 1.0)
    book.add_own(3, ASK, 49.0, 0.1)
    book.add(24, ASK, 49.0, 1.0)
    assert book.own_ahead_of(24) == []  # feed order 23 is ahead of 24
    assert book.own_ahead_of(23) == []


def test_book_errors():
    book = L3Book()
    book.add(1, BID, 10.0, 1.0)
    with pytest.raises(ValueError):
        book.add(1, BID, 10.0, 1.0)
    with pytest.raises(ValueError):
        book.add(2, 0, 10.0, 1.0)
    with pytest.raises(KeyError):
        book.delete(3)
    assert math.isnan(book.best_ask()) and math.isnan(book.mid())


# ---- FIFO book against independent aggregation / priority ----------------------------------

def _independent(live: dict, prio: dict, own: dict):
    """L2 per side (fsum of live orders per price) and each own order's queue ahead: the feed
    quantity at its side and price with an earlier priority stamp."""
    l2 = {}
    for side in (BID, ASK):
        prices = sorted({p for s, p, _ in live.values() if s == side}, reverse=side == BID)
        l2[side] = [(p, math.fsum(q for s, pp, q in live.values() if s == side and pp == p))
                    for p in prices]
    ahead = {k: math.fsum(q for o, (s, p, q) in live.items()
                          if s == os_ and p == op and prio[o] < prio[("own", k)])
             for k, (os_, op) in own.items()}
    return l2, ahead


@pytest.mark.parametrize("seed", range(5))
def test_random_sequences_match_independent_aggregation(seed):
    rng = random.Random(seed)
    book, live, prio, own = L3Book(), {}, {}, {}
    for step in range(1500):
        stamp = step  # priority stamp: later actions have larger stamps
        r = rng.random()
        if r < 0.35 or not live:
            oid = 1000 + step
            side, price = rng.choice((BID, ASK)), float(rng.randint(95, 105))
            qty = rng.randint(1, 50) / 10
            book.add(oid, side, price, qty)
            live[oid], prio[oid] = (side, price, qty), stamp
        elif r < 0.7:
            oid = rng.choice(list(live))
            side, price, qty = live[oid]
            new_price = price if rng.random() < 0.6 else float(rng.randint(95, 105))
            new_qty = rng.randint(1, 50) / 10
            book.modify(oid, side, new_price, new_qty)
            if new_price != price or new_qty > qty:
                prio[oid] = stamp
            live[oid] = (side, new_price, new_qty)
        elif r < 0.93:
            oid = rng.choice(list(live))
            book.delete(oid)
            del live[oid]
        elif r < 0.97 or not own:
            k = step + 1
            side, price = rng.choice((BID, ASK)), float(rng.randint(95, 105))
            book.add_own(k, side, price, 0.1)
            own[k], prio[("own", k)] = (side, price), stamp
        else:
            k = rng.choice(list(own))
            book.remove_own(k)
            del own[k]
        l2, ahead = _independent(live, prio, own)
        assert book.depth(BID) == l2[BID] and book.depth(ASK) == l2[ASK]
        assert {k: book.queue_ahead(k) for k in own} == ahead
        bids, asks = l2[BID], l2[ASK]
        assert (book.best_bid() == bids[0][0]) if bids else math.isnan(book.best_bid())
        assert (book.best_ask() == asks[0][0]) if asks else math.isnan(book.best_ask())


def test_real_file_book_matches_independent_aggregation(shared_data, raw_messages):
    ev = read_l3(shared_data / L3_FILE)
    assert ev.messages == 100_001 and ev.snapshots == 1 and ev.malformed == 0
    assert ev.info_events == 2 and ev.unknown_deletes == 0
    # independent: a plain dict of the raw messages, aggregated per price
    live: dict[int, tuple[float, float]] = {}
    book = L3Book()
    rows = ev.rows
    r = 0
    checked = 0
    for index, msg in enumerate(raw_messages):
        if not isinstance(msg, list) or msg[1] == "hb":
            continue
        entries = msg[1] if isinstance(msg[1][0], list) else [msg[1]]
        for oid, price, amount in entries:
            if price == 0:
                live.pop(oid)
            else:
                live[oid] = (price, amount)
        while r < len(rows) and rows[r]["ts_event_ns"] == index * MS:
            _apply(book, rows[r])
            r += 1
        if index % 97 == 0 or index == len(raw_messages) - 1:
            for side in (BID, ASK):
                prices = sorted({p for p, a in live.values() if (a > 0) == (side == BID)},
                                reverse=side == BID)
                want = [(p, math.fsum(abs(a) for pp, a in live.values()
                                      if pp == p and (a > 0) == (side == BID)))
                        for p in prices]
                assert book.depth(side) == want
            checked += 1
    assert r == len(rows) and checked > 1000
    assert len(live) == sum(len(book.level_orders(s, p)) for s in (BID, ASK)
                            for p, _ in book.depth(s))


# ---- reader ---------------------------------------------------------------------------------

def test_reader_rows_and_malformed_messages_counted():
    msgs = [
        {"event": "info", "version": 2},
        {"event": "subscribed", "channel": "book", "chanId": 7, "prec": "R0"},
        [7, [[1, 100.0, 0.5], [2, 101.0, -0.25]]],
        [7, "hb"],
        [7, [3, 99.5, 1.0]],  # add
        [7, [1, 100.0, 0.2]],  # modify
        [7, [2, 0, -1]],  # delete
        [7, [9, 0, 1]],  # delete of an unknown order
        "garbage", [7], [7, [1, 2]], [7, [1, "x", 1.0]], [7, [1, 100.0, 0]], [7, [-5, 1.0, 1.0]],
        [7, [[4, 100.0, 1.0], [5, 0, 1.0]]],  # a snapshot holding a removal
        [7, [3, 99.5, float("nan")]], None, {"event": "error"},
        [7, [[6, 98.0, 2.0]]],  # a second snapshot: the book restarts
    ]
    ev = parse_messages(msgs, interval_ns=10, start_ns=1000)
    assert ev.messages == len(msgs)
    assert ev.malformed == 9 and ev.unknown_deletes == 1 and ev.heartbeats == 1
    assert ev.info_events == 3 and ev.snapshots == 2 and ev.updates == 3 and ev.channel == 7
    rows = ev.rows
    assert rows["action"].tolist() == [A_ADD, A_ADD, A_ADD, A_MODIFY, A_DELETE, A_CLEAR, A_ADD]
    assert rows["order_id"].tolist() == [1, 2, 3, 1, 2, 0, 6]
    assert rows["side"].tolist() == [1, -1, 1, 1, -1, 0, 1]
    assert rows["qty"].tolist() == [0.5, 0.25, 1.0, 0.2, 0.0, 0.0, 2.0]
    assert rows["ts_event_ns"].tolist() == [1020, 1020, 1040, 1050, 1060, 1180, 1180]
    assert (rows["ts_recv_ns"] == rows["ts_event_ns"]).all()


def test_reader_file_errors(tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(b'{"not": "an array"}'))
    with pytest.raises(RecordingError):
        read_l3(bad)
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(RecordingError):
        read_l3(broken)
    plain = tmp_path / "ok.json"
    plain.write_bytes(b'[[1, [[5, 10.0, 1.0]]], [1, [6, 11.0, -1.0]], [1, [7, 12.0, -1.0]]]')
    assert len(read_l3(plain, max_messages=2)) == 2


# ---- driver: hand-computed cases -------------------------------------------------------------

class _Script:
    """Submits the planned orders at the given feed times (ms) and cancels at others."""

    def __init__(self, plan: dict[int, list]) -> None:
        self.plan = plan
        self.ids: list[int] = []

    def __call__(self, gw: L3Gateway) -> None:
        for action in self.plan.get(gw.ts_ns // MS, []):
            if action[0] == "cancel":
                gw.cancel(self.ids[action[1]])
            else:
                self.ids.append(gw.submit(*action))


def _feed(*updates) -> list:
    return [[1, [[10, 100.0, 1.0], [11, 100.0, 2.0], [20, 101.0, -1.5]]],
            *[[1, list(u)] for u in updates]]


def test_cross_fill_with_latency_and_queue_diagnostics():
    # t=0 snapshot; we buy 0.5 @100 at t=0, it arrives at t=2 (entry 2 ms) behind 3.0
    msgs = _feed([12, 100.0, 0.7],  # t=1: added before ours arrives: ahead
                 [13, 100.0, 0.4],  # t=2: our order arrives first: behind
                 [10, 0, 1],  # t=3: ahead removed
                 [21, 100.0, -0.2])  # t=4: an ask at our price: the book trades through us
    script = _Script({0: [(1, 100.0, 0.5)]})
    cfg = L3Config(latency=ConstantLatency(2 * MS, 3 * MS), maker_fee_bps=-2.0)
    r = l3_backtest(parse_messages(msgs), script, cfg)
    f = r.fills
    assert f.height == 1
    row = f.row(0, named=True)
    assert (row["side"], row["price"], row["qty"], row["rule"]) == (1, 100.0, 0.5, "cross")
    assert (row["ts_sent_ns"], row["ts_exch_ns"], row["ts_local_ns"]) == (0, 4 * MS, 7 * MS)
    assert row["queue_ahead_entry"] == pytest.approx(3.7)
    assert row["queue_ahead_fill"] == pytest.approx(2.7)
    assert row["fee"] == pytest.approx(-100.0 * 0.5 * 2e-4) and row["maker"]
    o = r.orders.row(0, named=True)
    assert (o["status"], o["ts_exch_ns"], o["ts_done_exch_ns"]) == (FILLED, 2 * MS, 4 * MS)
    assert r.position == 0.5 and r.balance == -50.0
    assert r.records["position"].to_list()[-1] == 0.5


def test_inferred_fill_only_when_nothing_ahead_of_the_removed_order():
    msgs = _feed([12, 100.0, 0.7],  # t=1: behind ours (ours arrives at t=1 with entry 1 ms)
                 [11, 0, 1],  # t=2: order 10 still ahead of 11: a cancel under FIFO
                 [10, 100.0, 0.5],  # t=3: front order reduced: executed, but ours is behind
                 [10, 0, 1],  # t=4: front order removed: ours is next
                 [12, 100.0, 0.3])  # t=5: the order behind ours reduced: it executed us
    cfg = L3Config(latency=ConstantLatency(MS, MS), infer_trades=True)
    r = l3_backtest(parse_messages(msgs), _Script({0: [(1, 100.0, 0.5)]}), cfg)
    row = r.fills.row(0, named=True)
    assert r.fills.height == 1
    assert (row["rule"], row["ts_exch_ns"], row["queue_ahead_fill"]) == ("inferred", 5 * MS, 0.0)
    assert row["queue_ahead_entry"] == 3.0
    # below the best bid a removal behind ours is no execution: 100 would trade first
    below = _feed([12, 99.0, 0.7], [12, 0, 1], [11, 0, 1])
    r = l3_backtest(parse_messages(below), _Script({0: [(1, 99.0, 0.5)]}), cfg)
    assert r.fills.height == 0 and r.orders["status"].to_list() == [NEW]
    off = l3_backtest(parse_messages(msgs), _Script({0: [(1, 100.0, 0.5)]}),
                      L3Config(latency=ConstantLatency(MS, MS)))
    assert off.fills.height == 0 and off.orders["status"].to_list() == [NEW]


def test_post_only_expiry_cancel_and_taker():
    msgs = _feed([30, 99.0, 1.0], [31, 98.0, 1.0], [32, 98.5, 1.0], [33, 97.0, 1.0])
    plan = {0: [(1, 101.0, 0.1),  # post-only buy at the ask: expired
                (-1, 100.0, 1.0, False),  # sell 1.0 @100 taking the bids: 1.0 @100
                (-1, 99.0, 4.0, False)],  # sell 4.0 down to 99 when only 100 (3.0) is bid:
            # 3.0 @100 (the feed is not consumed by the previous order), the rest expires
            1: [(1, 98.0, 0.2)],  # arrives at t=2 before order 31: nothing ahead
            2: [("cancel", 3)]}
    cfg = L3Config(latency=ConstantLatency(MS, MS), taker_fee_bps=10.0)
    r = l3_backtest(parse_messages(msgs), _Script(plan), cfg)
    o = r.orders
    assert o["status"].to_list() == [EXPIRED, FILLED, EXPIRED, CANCELED]
    assert o["ts_cancel_exch_ns"].to_list() == [-1, -1, -1, 3 * MS]
    f = r.fills
    assert f["order_id"].to_list() == [2, 3]
    assert f["price"].to_list() == [100.0, 100.0] and f["qty"].to_list() == [1.0, 3.0]
    assert f["rule"].to_list() == ["taker", "taker"] and not f["maker"].any()
    assert f["fee"].to_list() == pytest.approx([0.1, 0.3])
    assert o["queue_ahead"].to_list()[3] == 0.0 and math.isnan(o["queue_ahead"].to_list()[2])
    assert r.position == -4.0 and r.balance == 400.0
    with pytest.raises(ConfigError):
        l3_backtest(parse_messages(msgs), _Script({}), L3Config(record_every_ns=0))


# ---- the quoting strategy on the real file, against a plain recomputation ------------------

def _recompute(msgs: list, orders: dict, infer: bool, interval: int = MS):
    """Plain-Python replay of the raw messages with the orders as the backtest sent them:
    fills by the cross rule (and the inferred rule), post-only expiries, queue ahead at entry.
    Own orders reach the book before the rows at or after their arrival time and leave it
    before the rows at or after their cancel's arrival. FIFO by priority stamps."""
    live: dict[int, list] = {}  # oid -> [side, price, qty, stamp]
    active: dict[int, list] = {}  # own id -> [side, price, qty, stamp]
    events = sorted([(o["ts_exch_ns"], 0, k) for k, o in orders.items()]
                    + [(o["ts_cancel_exch_ns"], 1, k) for k, o in orders.items()
                       if o["ts_cancel_exch_ns"] >= 0])
    fills, expired, ahead_at_entry, best_at = {}, set(), {}, []
    stamp, e = 0, 0

    def best(side):
        ps = [p for s, p, _, _ in live.values() if s == side]
        return (max(ps) if side == BID else min(ps)) if ps else math.nan

    for index, msg in enumerate(msgs):
        ts = index * interval
        while e < len(events) and events[e][0] <= ts:
            _, kind, k = events[e]
            e += 1
            o = orders[k]
            if kind == 1:
                active.pop(k, None)
                continue
            if (o["price"] >= best(ASK)) if o["side"] == BID else (o["price"] <= best(BID)):
                expired.add(k)
                continue
            stamp += 1
            active[k] = [o["side"], o["price"], o["qty"], stamp]
            ahead_at_entry[k] = math.fsum(q for s, p, q, _ in live.values()
                                          if s == o["side"] and p == o["price"])
        if not isinstance(msg, list) or msg[1] == "hb":
            best_at.append((best(BID), best(ASK)))
            continue
        entries = msg[1] if isinstance(msg[1][0], list) else [msg[1]]
        for oid, price, amount in entries:
            side = BID if amount > 0 else ASK
            old = live.get(oid)
            removed = old is not None and (price == 0 or (price == old[1] and abs(amount)
                                                           < old[2]))
            if infer and removed and old[1] == best(old[0]) and not any(
                    s == old[0] and p == old[1] and st < old[3]
                    for s, p, _, st in live.values()):
                for k, (s, p, _, st) in list(active.items()):
                    if s == old[0] and p == old[1] and st < old[3]:
                        fills[k] = ts
                        del active[k]
            if price == 0:
                del live[oid]
                continue
            stamp += 1
            keep = old is not None and old[1] == price and abs(amount) <= old[2]
            live[oid] = [side, price, abs(amount), old[3] if keep else stamp]
        bid, ask = best(BID), best(ASK)
        best_at.append((bid, ask))
        for k, (s, p, _, _) in list(active.items()):
            if (s == BID and p >= ask) or (s == ASK and p <= bid):
                fills[k] = ts
                del active[k]
    mid_end = (best(BID) + best(ASK)) / 2
    return fills, expired, ahead_at_entry, best_at, mid_end


@pytest.mark.parametrize("infer", [False, True])
def test_quoter_on_real_file_matches_plain_recomputation(shared_data, raw_messages, infer):
    n = len(raw_messages)
    cfg = L3Config(max_messages=n, infer_trades=infer, maker_fee_bps=-1.0,
                   latency=ConstantLatency(2 * MS, 1 * MS))
    r = l3_backtest(shared_data / L3_FILE, L3Quoter(0.01, max_position=0.03), cfg)
    orders = {row["order_id"]: row for row in r.orders.iter_rows(named=True)}
    fills, expired, ahead, best_at, mid_end = _recompute(raw_messages[:n], orders, infer)
    f = r.fills
    assert f.height >= (50 if infer else 3)
    assert f["order_id"].n_unique() == f.height
    assert dict(zip(f["order_id"].to_list(), f["ts_exch_ns"].to_list(), strict=True)) == fills
    assert {k for k, o in orders.items() if o["status"] == EXPIRED} == expired
    assert {k: o["queue_ahead"] for k, o in orders.items() if k in ahead} == ahead
    assert f["queue_ahead_entry"].to_list() == [ahead[k] for k in f["order_id"].to_list()]
    # PnL from the recomputed fills: cash + fees + inventory marked at the final mid
    side = np.array([orders[k]["side"] for k in fills], float)
    price = np.array([orders[k]["price"] for k in fills])
    qty = np.array([orders[k]["qty"] for k in fills])
    fees = price * qty * -1e-4
    pos = float((side * qty).sum())
    total = float((-side * qty * price).sum() - fees.sum() + pos * mid_end)
    pnl = r.pnl()
    assert pnl["total"] == pytest.approx(total, abs=1e-6)
    assert pnl["total"] == pytest.approx(pnl["spread"] + pnl["inventory"] + pnl["fees"])
    # the quoter posts at the feed's best price of the message it saw (local = exchange time)
    for o in orders.values():
        bid, ask = best_at[o["ts_sent_ns"] // MS]
        assert o["price"] == (bid if o["side"] == BID else ask)
    assert len(orders) > 1000


def test_l3_backtest_on_the_command_line(shared_data, tmp_path):
    from workbench.cli import main

    stats_file = tmp_path / "stats.json"
    assert main(["backtest", str(shared_data / L3_FILE), "--l3", "--qty", "0.01",
                 "--max-position", "0.03", "--entry-us", "2000", "--response-us", "1000",
                 "--maker-bps", "-1", "--infer-trades", "--json", str(stats_file)]) == 0
    stats = orjson.loads(stats_file.read_bytes())
    expected = l3_backtest(shared_data / L3_FILE, L3Quoter(0.01, 0.03), L3Config(
        latency=ConstantLatency(2 * MS, MS), maker_fee_bps=-1.0, infer_trades=True))
    assert stats["fills"] == expected.fills.height > 0
    assert stats["orders"] == expected.orders.height
    assert stats["total"] == pytest.approx(expected.pnl()["total"])
