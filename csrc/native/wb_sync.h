/* wb_sync.h: the native handler's book sequencing, the C++ twin of workbench/book/sync.py's
 * BookSync with the rules of workbench/book/sequencing.py (the Python module docstrings cite
 * the venue documents). One Sequencer per connection; the handler feeds it every parsed
 * message and it decides what reaches the ring.
 *
 * Per book: deltas that follow the live book are published; stale ones (older than the book)
 * dropped; a delta that does not follow is a gap: one WB_KIND_BOOK_INVALID event is published
 * for the book, a snapshot is requested (Output::resync), and the delta is buffered, as is
 * every delta while the book waits (at most max_buffer, the oldest dropped and counted). A
 * snapshot is published (its events carry SNAPSHOT_BEGIN/END) and the buffered deltas that
 * continue it follow in order. On Coinbase the connection's sequence_num is checked on every
 * message: a jump, or a malformed (lost) message, invalidates every book and resyncs them all.
 */
#ifndef WB_SYNC_H
#define WB_SYNC_H

#include <atomic>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "wb_parse.h"

namespace wb {

enum class Rule { binance_spot, binance_futures, bybit, coinbase };

/* The rule of a WB_VENUE_*. */
Rule rule_of(int venue);

struct SyncCounters {
    std::atomic<uint64_t> gaps{0};
    std::atomic<uint64_t> resyncs{0};
    std::atomic<uint64_t> stale{0};
    std::atomic<uint64_t> buffered{0};
    std::atomic<uint64_t> buffer_overflow{0};
    std::atomic<uint64_t> invalidations{0};
};

class SyncOutput {
public:
    virtual ~SyncOutput() = default;
    /* publish one message's events (n > 0) */
    virtual void publish(const wb_event *events, uint32_t n) = 0;
    /* a book snapshot is wanted for symbol_id (0: every book of the connection) */
    virtual void resync(uint32_t symbol_id, bool after_gap) = 0;
};

class Sequencer {
public:
    Sequencer(Rule rule, uint32_t max_buffer, SyncCounters &counters)
        : rule_(rule), max_buffer_(max_buffer), c_(counters) {}

    /* One parsed message (its events and info), in receive order. */
    void on_message(const wb_event *events, uint32_t n, const wb_msg_info &info,
                    SyncOutput &out);
    /* A new connection: every valid book is published invalid; all wait for a snapshot. */
    void connection_reset(SyncOutput &out);
    /* on_message would publish this message's events first, as they are (a delta that
     * follows its live book, a snapshot, a trade or quote; no gap to report before them):
     * the handler may parse it straight into ring slots and commit them. */
    bool publishes_as_is(const wb_msg_info &info) const;

private:
    struct Delta {
        int64_t first, last, prev;
        std::vector<wb_event> events;
    };
    struct Book {
        bool live = false;
        bool valid = false;          /* a snapshot was published and not invalidated since */
        bool resync_pending = false;
        int64_t last_id = -1;
        int64_t snapshot_id = -1;
        std::deque<Delta> buffer;
    };

    bool follows(int64_t last_applied, int64_t first, int64_t last, int64_t prev) const;
    bool stale(int64_t last, int64_t reference) const;
    bool straddles(int64_t snapshot_id, int64_t first, int64_t last, int64_t prev) const;
    bool live_on_snapshot() const { return rule_ == Rule::bybit || rule_ == Rule::coinbase; }
    bool buffer_predates_snapshot() const { return rule_ == Rule::coinbase; }

    void delta(Book &b, uint32_t sid, const wb_event *events, uint32_t n,
               const wb_msg_info &info, SyncOutput &out);
    void snapshot(Book &b, uint32_t sid, const wb_event *events, uint32_t n,
                  const wb_msg_info &info, SyncOutput &out);
    void apply(Book &b, const wb_event *events, uint32_t n, int64_t last, SyncOutput &out);
    void gap(Book &b, uint32_t sid, SyncOutput &out);
    void invalidate(Book &b, uint32_t sid, SyncOutput &out);
    void connection_gap(SyncOutput &out);
    void buffer(Book &b, const wb_event *events, uint32_t n, int64_t first, int64_t last,
                int64_t prev);

    Rule rule_;
    uint32_t max_buffer_;
    SyncCounters &c_;
    std::unordered_map<uint32_t, Book> books_;
    int64_t conn_seq_ = -1;
};

}  // namespace wb

#endif /* WB_SYNC_H */
