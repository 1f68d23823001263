/* wb_event.h: the 64-byte market-data event shared by the C++ feed handler and Python.
 *
 * workbench/events.py defines EVENT_DTYPE with the same fields, offsets and sizes;
 * tests/feed/test_layout.py checks them against this header through the cffi module.
 * Times are int64 nanoseconds. ts_publish_ns and ts_recv_ns use CLOCK_MONOTONIC, the clock of
 * Python's time.perf_counter_ns() on Linux; ts_event_ns is the venue's wall-clock time (UTC).
 */
#ifndef WB_EVENT_H
#define WB_EVENT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WB_EVENT_SIZE 64

/* kind */
#define WB_KIND_TRADE 1          /* a trade print: price, qty, side = aggressor */
#define WB_KIND_BID_LEVEL 2      /* an L2 bid level set to qty at price (qty 0 removes it) */
#define WB_KIND_ASK_LEVEL 3      /* an L2 ask level set to qty at price (qty 0 removes it) */
#define WB_KIND_BBO 4            /* best bid (side = buy) or best ask (side = sell) */
#define WB_KIND_SNAPSHOT_BEGIN 5 /* the level events up to SNAPSHOT_END replace the book */
#define WB_KIND_SNAPSHOT_END 6
#define WB_KIND_HEARTBEAT 7
#define WB_KIND_BOOK_INVALID 8   /* the book of symbol_id is invalid until its next snapshot (a gap
                                    the producer found; it resyncs) */

/* side */
#define WB_SIDE_NONE 0
#define WB_SIDE_BUY 1
#define WB_SIDE_SELL 2

/* flags (bit set) */
#define WB_FLAG_SNAPSHOT 1u     /* the level belongs to a snapshot */
#define WB_FLAG_LAST_IN_MSG 2u  /* the last event decoded from one venue message */
#define WB_FLAG_GAP 4u          /* the ring consumer saw a sequence gap just before this event */

typedef struct wb_event {
    int64_t ts_event_ns;   /* exchange event time, ns since the Unix epoch */
    int64_t ts_recv_ns;    /* local receive time, CLOCK_MONOTONIC ns */
    int64_t ts_publish_ns; /* time the producer published it into the ring, CLOCK_MONOTONIC ns */
    uint64_t seq;          /* ring sequence number, 1-based, contiguous per producer */
    uint64_t venue_seq;    /* the venue's sequence number (Binance u, Bybit u, Coinbase sequence_num) */
    uint32_t symbol_id;    /* id from the symbol registry */
    uint8_t kind;          /* WB_KIND_* */
    uint8_t side;          /* WB_SIDE_* */
    uint16_t flags;        /* WB_FLAG_* */
    double price;          /* price in quote currency */
    double qty;            /* quantity in base units */
} __attribute__((aligned(64))) wb_event;

#ifdef __cplusplus
}
#endif

#endif /* WB_EVENT_H */
