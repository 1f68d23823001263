/* wb_native.h: the native feed handler. One venue connection (websocket over TCP or TLS) on one
 * thread running one boost::asio io_context, never touching Python: it reads the venue's
 * messages, parses them with the wb_parse.h parsers, sequences the books by the venue's rules
 * and publishes normalized wb_event records into a wb_ring (POSIX shared memory).
 *
 * What reaches the ring, per message: its events (one push, one ts_publish_ns), in order; book
 * deltas only while their book is live. Sequencing (wb_sync.h) follows the venue's documented
 * rules (Binance "How to manage a local order book correctly"; Bybit v5 orderbook; Coinbase
 * Advanced Trade sequence_num): deltas are buffered while a book waits for its snapshot, stale
 * ones dropped, and on a gap the handler publishes one WB_KIND_BOOK_INVALID event for the book,
 * asks for a new snapshot (REST depth for Binance, honouring Retry-After and the used-weight
 * header; the subscribe frames again otherwise, as the Python WebSocketFeed does), keeps buffering, and publishes the snapshot
 * (bracketed by SNAPSHOT_BEGIN/END) followed by the buffered deltas that continue it.
 * Connections that end, fail or stay silent are reopened with full-jitter exponential backoff
 * and resubscribed; every live book is then invalid until its new snapshot. Pings are
 * answered by Beast. wb_nf_switch_endpoint moves to another URL keeping the subscriptions.
 *
 * Stamps: ts_recv_ns is the CLOCK_MONOTONIC time of the socket read that completed the message
 * (several messages of one read share it), ts_publish_ns the ring push, ts_event_ns the venue's.
 * Counters are atomics, readable from any thread while the handler runs.
 */
#ifndef WB_NATIVE_H
#define WB_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "wb_parse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* handler states */
#define WB_NF_IDLE 0       /* created, not started */
#define WB_NF_CONNECTING 1 /* opening a connection (or waiting to reconnect) */
#define WB_NF_LIVE 2       /* connected and subscribed */
#define WB_NF_STOPPED 3    /* ended by wb_nf_stop */
#define WB_NF_FAILED 4     /* ended by itself: see wb_nf_error */

#define WB_NF_HIST_BUCKETS 1216 /* read-to-publish histogram buckets (wb_nf_bucket_low) */

typedef struct wb_nf_config {
    int32_t venue;            /* WB_VENUE_* */
    const char *url;          /* ws://host[:port]/path?query or wss://... */
    const char *ring;         /* name of an existing ring (wb_ring_attach) */
    const char *rest_url;     /* http(s)://host[:port] of the REST depth market; "" none */
    const char *rest_path;    /* e.g. /fapi/v1/depth */
    int32_t rest_limit;       /* depth levels asked for */
    int32_t rest_weight;      /* request weight of one depth request at that limit */
    int32_t rest_budget;      /* request weight allowed per minute */
    const char *ca_file;      /* PEM CA bundle for wss/https; "" = the system's */
    int32_t verify;           /* 1: verify the peer's certificate and host name */
    double silence_s;         /* no frame for this long: the connection is dead */
    double backoff_s;         /* reconnect backoff base (full jitter, doubling) */
    double backoff_max_s;     /* reconnect backoff cap */
    double open_timeout_s;    /* connect + TLS + websocket handshake limit */
    double resync_retry_s;    /* a failed REST snapshot is fetched again after this */
    uint64_t max_frame;       /* bytes; a longer message is skipped and counted oversize */
    int32_t max_connects;     /* > 0: fail after this many connections in a row delivered
                                 nothing; 0: retry for ever */
    uint32_t max_buffer;      /* deltas buffered per book while it waits for a snapshot */
    int32_t cpu;              /* >= 0: pin the handler thread to this CPU */
    int32_t rt_priority;      /* > 0: SCHED_FIFO at this priority when permitted */
    uint64_t seed;            /* backoff jitter seed */
} wb_nf_config;

typedef struct wb_nf_stats {
    uint64_t messages;        /* websocket messages read (data frames) */
    uint64_t bytes;           /* their bytes */
    uint64_t events;          /* events published into the ring */
    uint64_t dropped;         /* events the full ring dropped */
    uint64_t malformed;       /* messages refused (sum of malformed_by) */
    uint64_t malformed_by[WB_BAD_COUNT]; /* by WB_BAD_* kind */
    uint64_t gaps;            /* sequence gaps detected (book or connection) */
    uint64_t resyncs;         /* snapshot requests after a gap */
    uint64_t snapshot_fetches;/* REST depth snapshots fetched (HTTP 200) */
    uint64_t snapshot_failures;/* REST attempts that failed (status, transport, body) */
    uint64_t rest_throttled;  /* REST waits for Retry-After or the weight budget */
    uint64_t stale;           /* deltas dropped as older than their book */
    uint64_t buffered;        /* deltas buffered while a book waited */
    uint64_t buffer_overflow; /* buffered deltas dropped (buffer full) */
    uint64_t connects;        /* connections opened and subscribed */
    uint64_t reconnects;      /* connections reopened after one ended */
    uint64_t silences;        /* connections closed by the silence watchdog */
    uint64_t switches;        /* endpoint switches */
    uint64_t invalidations;   /* WB_KIND_BOOK_INVALID events published */
    int64_t last_read_ns;     /* CLOCK_MONOTONIC of the last socket read, 0 before one */
    int32_t state;            /* WB_NF_* */
    int32_t pinned_cpu;       /* the CPU the thread runs pinned to, -1 none */
    int32_t pin_errno;        /* errno of a refused pinning, 0 */
    int32_t rt_errno;         /* errno of a refused real-time priority, 0 */
    int32_t rt_priority;      /* the SCHED_FIFO priority in force, 0 none */
    int32_t _pad;
} wb_nf_stats;

typedef struct wb_nf wb_nf;

/* Validates the config (copying what it needs) and attaches the ring. NULL + err on failure. */
wb_nf *wb_nf_new(const wb_nf_config *cfg, char *err, size_t errlen);
/* Before start: a symbol the handler knows (parser and books). 0, or -1 on a bad argument. */
int wb_nf_add_symbol(wb_nf *h, const char *symbol, uint32_t symbol_id);
/* Before start: a frame sent after each connect, in order (the venue's subscribe frames). */
int wb_nf_add_subscribe(wb_nf *h, const char *frame);
/* Starts the handler thread. 0, or -1 + err. */
int wb_nf_start(wb_nf *h, char *err, size_t errlen);
/* Asks the thread to stop (any thread, idempotent, returns at once). */
void wb_nf_stop(wb_nf *h);
/* Waits up to timeout_ns for the thread to end (and joins it): 1 ended, 0 still running. */
int wb_nf_wait(wb_nf *h, int64_t timeout_ns);
/* Moves to `url` (same venue), keeping the subscriptions. 0, or -1 for a bad URL. */
int wb_nf_switch_endpoint(wb_nf *h, const char *url);
void wb_nf_stats_get(const wb_nf *h, wb_nf_stats *out);
/* Copies min(n, WB_NF_HIST_BUCKETS) read-to-publish bucket counts; returns the total count. */
uint64_t wb_nf_histogram(const wb_nf *h, uint64_t *out, uint64_t n);
/* The lowest ns value of histogram bucket i. */
uint64_t wb_nf_bucket_low(uint64_t i);
/* The last error (why the handler failed, or the last connection error), "" if none. */
void wb_nf_error(const wb_nf *h, char *out, size_t n);
/* The URL in use. */
void wb_nf_url(const wb_nf *h, char *out, size_t n);
/* Stops, joins and frees (detaching the ring). */
void wb_nf_free(wb_nf *h);

#ifdef __cplusplus
}
#endif

#endif /* WB_NATIVE_H */
