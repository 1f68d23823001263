/* wb_sync.cpp: see wb_sync.h. */
#include "wb_sync.h"

#include "wb_internal.h"
#include "wb_native.h"

namespace wb {

Rule rule_of(int venue) {
    switch (venue) {
    case WB_VENUE_BINANCE_SPOT:
        return Rule::binance_spot;
    case WB_VENUE_BINANCE_USDM:
    case WB_VENUE_BINANCE_COINM:
        return Rule::binance_futures;
    case WB_VENUE_COINBASE:
        return Rule::coinbase;
    default:
        return Rule::bybit;
    }
}

bool Sequencer::follows(int64_t last_applied, int64_t first, int64_t last, int64_t prev) const {
    switch (rule_) {
    case Rule::binance_spot:
        return first == last_applied + 1;
    case Rule::binance_futures:
        return prev == last_applied;
    case Rule::bybit:
        return last == last_applied + 1;
    default:
        return true;
    }
}

bool Sequencer::stale(int64_t last, int64_t reference) const {
    switch (rule_) {
    case Rule::binance_spot:
    case Rule::bybit:
        return last <= reference;
    case Rule::binance_futures:
        return last < reference;
    default:
        return false;
    }
}

bool Sequencer::straddles(int64_t snapshot_id, int64_t first, int64_t last,
                          int64_t prev) const {
    switch (rule_) {
    case Rule::binance_spot:
        return first <= snapshot_id + 1 && snapshot_id + 1 <= last;
    case Rule::binance_futures:
        return (first <= snapshot_id && snapshot_id <= last) || prev == snapshot_id;
    case Rule::bybit:
        return last == snapshot_id + 1;
    default:
        return true;
    }
}

bool Sequencer::publishes_as_is(const wb_msg_info &info) const {
    if (info.kind == WB_MSG_MALFORMED)
        return false;
    if (rule_ == Rule::coinbase && info.seq >= 0 && conn_seq_ >= 0 && info.seq != conn_seq_ + 1)
        return false;
    if (info.kind != WB_MSG_DELTA)
        return true;
    auto it = books_.find(info.symbol_id);
    return it != books_.end() && it->second.live &&
           follows(it->second.last_id, info.first_id, info.last_id, info.prev_id);
}

void Sequencer::on_message(const wb_event *events, uint32_t n, const wb_msg_info &info,
                           SyncOutput &out) {
    if (rule_ == Rule::coinbase) {
        if (info.kind == WB_MSG_MALFORMED) {
            /* a numbered message whose body is lost: every live book resyncs */
            conn_seq_ = -1;
            bool any = false;
            for (auto &kv : books_) {
                if (!kv.second.resync_pending) {
                    any = true;
                    invalidate(kv.second, kv.first, out);
                    kv.second.resync_pending = true;
                }
            }
            if (any) {
                c_.gaps.fetch_add(1, std::memory_order_relaxed);
                c_.resyncs.fetch_add(1, std::memory_order_relaxed);
                out.resync(0, true);
            }
            return;
        }
        if (info.seq >= 0) {
            if (conn_seq_ >= 0 && info.seq != conn_seq_ + 1)
                connection_gap(out);
            conn_seq_ = info.seq;
        }
    }
    if (info.kind == WB_MSG_DELTA) {
        delta(books_[info.symbol_id], info.symbol_id, events, n, info, out);
    } else if (info.kind == WB_MSG_SNAPSHOT) {
        snapshot(books_[info.symbol_id], info.symbol_id, events, n, info, out);
    } else if (n > 0) {
        out.publish(events, n);
    }
}

void Sequencer::delta(Book &b, uint32_t sid, const wb_event *events, uint32_t n,
                      const wb_msg_info &info, SyncOutput &out) {
    const int64_t first = info.first_id, last = info.last_id, prev = info.prev_id;
    if (b.live) {
        if (follows(b.last_id, first, last, prev)) {
            apply(b, events, n, last, out);
            return;
        }
        if (stale(last, b.last_id)) {
            c_.stale.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        gap(b, sid, out);
    } else if (b.snapshot_id >= 0) { /* snapshot in, waiting for the straddling delta */
        if (stale(last, b.snapshot_id)) {
            c_.stale.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        if (straddles(b.snapshot_id, first, last, prev)) {
            b.live = true;
            apply(b, events, n, last, out);
            return;
        }
        gap(b, sid, out);
    } else if (!b.resync_pending) {
        b.resync_pending = true;
        out.resync(sid, false);
    }
    buffer(b, events, n, first, last, prev);
}

void Sequencer::snapshot(Book &b, uint32_t sid, const wb_event *events, uint32_t n,
                         const wb_msg_info &info, SyncOutput &out) {
    (void)sid;
    if (n > 0)
        out.publish(events, n);
    b.valid = true;
    b.resync_pending = false;
    b.snapshot_id = b.last_id = info.last_id;
    b.live = live_on_snapshot();
    std::deque<Delta> buffered;
    buffered.swap(b.buffer);
    if (buffer_predates_snapshot()) {
        c_.stale.fetch_add(buffered.size(), std::memory_order_relaxed);
        return;
    }
    while (!buffered.empty()) {
        Delta &d = buffered.front();
        bool ok;
        if (b.live) {
            ok = follows(b.last_id, d.first, d.last, d.prev);
        } else {
            if (stale(d.last, b.snapshot_id)) {
                c_.stale.fetch_add(1, std::memory_order_relaxed);
                buffered.pop_front();
                continue;
            }
            ok = straddles(b.snapshot_id, d.first, d.last, d.prev);
            b.live = ok;
        }
        if (ok) {
            apply(b, d.events.data(), uint32_t(d.events.size()), d.last, out);
            buffered.pop_front();
            continue;
        }
        if (b.live && stale(d.last, b.last_id)) {
            c_.stale.fetch_add(1, std::memory_order_relaxed);
            buffered.pop_front();
            continue;
        }
        gap(b, sid, out);
        b.buffer.swap(buffered); /* the rest waits for the next snapshot */
        return;
    }
}

void Sequencer::apply(Book &b, const wb_event *events, uint32_t n, int64_t last,
                      SyncOutput &out) {
    if (n > 0)
        out.publish(events, n);
    b.last_id = last;
}

void Sequencer::invalidate(Book &b, uint32_t sid, SyncOutput &out) {
    if (b.valid) {
        wb_event ev{};
        ev.ts_recv_ns = wb_monotonic_ns();
        ev.symbol_id = sid;
        ev.kind = WB_KIND_BOOK_INVALID;
        ev.flags = WB_FLAG_LAST_IN_MSG;
        out.publish(&ev, 1);
        c_.invalidations.fetch_add(1, std::memory_order_relaxed);
    }
    b.valid = false;
    b.live = false;
    b.snapshot_id = -1;
}

void Sequencer::gap(Book &b, uint32_t sid, SyncOutput &out) {
    c_.gaps.fetch_add(1, std::memory_order_relaxed);
    invalidate(b, sid, out);
    b.resync_pending = true;
    c_.resyncs.fetch_add(1, std::memory_order_relaxed);
    out.resync(sid, true);
}

void Sequencer::connection_gap(SyncOutput &out) {
    c_.gaps.fetch_add(1, std::memory_order_relaxed);
    for (auto &kv : books_) {
        invalidate(kv.second, kv.first, out);
        kv.second.resync_pending = true;
    }
    c_.resyncs.fetch_add(1, std::memory_order_relaxed);
    out.resync(0, true);
}

void Sequencer::connection_reset(SyncOutput &out) {
    conn_seq_ = -1;
    for (auto &kv : books_) {
        invalidate(kv.second, kv.first, out);
        kv.second.buffer.clear();
        kv.second.resync_pending = false;
    }
}

void Sequencer::buffer(Book &b, const wb_event *events, uint32_t n, int64_t first, int64_t last,
                       int64_t prev) {
    if (b.buffer.size() >= max_buffer_) {
        b.buffer.pop_front();
        c_.buffer_overflow.fetch_add(1, std::memory_order_relaxed);
    }
    b.buffer.push_back(Delta{first, last, prev, std::vector<wb_event>(events, events + n)});
    c_.buffered.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace wb
