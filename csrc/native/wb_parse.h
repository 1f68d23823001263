/* wb_parse.h: venue message -> wb_event parsers of the native feed handler (simdjson On-Demand).
 *
 * One wb_parser per venue dialect and connection. wb_parser_parse reads one raw websocket
 * message and writes its events exactly as the Python normalizer of that venue does
 * (workbench/feed/venues/{binance,bybit,coinbase}.py): same events, same order, same fields,
 * `seq` = the parser's running message count (1-based, every parse call that is not
 * WB_PARSE_NO_ROOM counts one message), ts_publish_ns = 0. `info` mirrors the Python
 * `MessageInfo` (workbench/events.py) that sequencing needs.
 *
 * Bad input never crashes: the message is refused, no events are written, info->kind is
 * WB_MSG_MALFORMED, info->bad the WB_BAD_* kind (the same kinds as the Python
 * `MALFORMED_KINDS`), and the parser's counters count it. Symbols: only symbols added with
 * wb_parser_add_symbol are known (upper-cased, as the Python registry keys them); a message
 * naming another symbol is refused as WB_BAD_UNKNOWN_SYMBOL.
 *
 * Padding: simdjson reads up to SIMDJSON_PADDING (64) bytes past the message. When
 * `capacity` >= len + 64 the message is parsed in place; otherwise the parser copies it into
 * its own padded buffer first.
 */
#ifndef WB_PARSE_H
#define WB_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "wb_event.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WB_PARSE_PADDING 64

/* venue dialects (the Python venue keys in brackets) */
#define WB_VENUE_BINANCE_SPOT 1   /* binance */
#define WB_VENUE_BINANCE_USDM 2   /* binance-usdm */
#define WB_VENUE_BINANCE_COINM 3  /* binance-coinm */
#define WB_VENUE_BYBIT_LINEAR 4   /* bybit */
#define WB_VENUE_BYBIT_SPOT 5     /* bybit-spot */
#define WB_VENUE_BYBIT_INVERSE 6  /* bybit-inverse */
#define WB_VENUE_COINBASE 7       /* coinbase */

/* message kinds: the values of workbench.events.MessageKind (M_*) */
#define WB_MSG_OTHER 0
#define WB_MSG_SNAPSHOT 1
#define WB_MSG_DELTA 2
#define WB_MSG_TRADE 3
#define WB_MSG_BBO 4
#define WB_MSG_HEARTBEAT 5
#define WB_MSG_MALFORMED 6

/* malformed kinds (workbench/feed/venues/base.py MALFORMED_KINDS, plus oversize) */
#define WB_BAD_NONE 0
#define WB_BAD_JSON 1           /* 'json' */
#define WB_BAD_SCHEMA 2         /* 'schema' */
#define WB_BAD_UNKNOWN_TYPE 3   /* 'unknown_type' */
#define WB_BAD_PRICE 4          /* 'bad_price' */
#define WB_BAD_QTY 5            /* 'bad_qty' */
#define WB_BAD_UNKNOWN_SYMBOL 6 /* 'unknown_symbol' */
#define WB_BAD_DEPTH 7          /* 'depth' */
#define WB_BAD_MEMORY 8         /* 'memory' */
#define WB_BAD_INTERNAL 9       /* 'internal' */
#define WB_BAD_OVERSIZE 10      /* 'oversize': a frame over the handler's limit */
#define WB_BAD_COUNT 11

/* wb_parser_parse return values besides an event count >= 0 */
#define WB_PARSE_NO_ROOM -1 /* the events do not fit `cap`: info->n_events says how many are
                               needed; nothing was written or counted; call again */

typedef struct wb_msg_info {
    int32_t kind;        /* WB_MSG_* */
    int32_t bad;         /* WB_BAD_* (WB_BAD_NONE unless kind is WB_MSG_MALFORMED) */
    uint32_t symbol_id;  /* 0 when the message has none */
    uint32_t n_events;   /* events written (or needed, with WB_PARSE_NO_ROOM) */
    int64_t first_id;    /* MessageInfo.first_id (-1 when absent) */
    int64_t last_id;     /* MessageInfo.last_id */
    int64_t prev_id;     /* MessageInfo.prev_id */
    int64_t seq;         /* MessageInfo.seq */
    int64_t ts_event_ns; /* MessageInfo.ts_event_ns */
} wb_msg_info;

typedef struct wb_parser wb_parser;

/* NULL for an unknown venue. */
wb_parser *wb_parser_new(int venue);
void wb_parser_free(wb_parser *p);
/* Makes `symbol` (any case) known as `symbol_id` (> 0). Returns 0, or -1 for a bad argument. */
int wb_parser_add_symbol(wb_parser *p, const char *symbol, uint32_t symbol_id);
/* One websocket message -> up to `cap` events in `out`. Returns the event count, or
 * WB_PARSE_NO_ROOM. Never throws. */
int64_t wb_parser_parse(wb_parser *p, const char *msg, size_t len, size_t capacity,
                        int64_t recv_ns, wb_event *out, uint64_t cap, wb_msg_info *info);
/* A REST depth snapshot body of `symbol` (Binance GET /api/v3/depth, /fapi/v1/depth,
 * /dapi/v1/depth) -> events, as the Python normalize_snapshot. Same contract as parse; for a
 * venue without REST snapshots every body is refused (WB_BAD_UNKNOWN_TYPE). */
int64_t wb_parser_snapshot(wb_parser *p, const char *body, size_t len, size_t capacity,
                           int64_t recv_ns, const char *symbol, wb_event *out, uint64_t cap,
                           wb_msg_info *info);
/* Makes `symbol` (added before) the symbol of Binance depth snapshots that name none (the
 * Python BinanceNormalizer's `default_symbol`: a bare REST body in a one-symbol recording).
 * Returns 0, or -1 when `symbol` was not added or the venue is not Binance. */
int wb_parser_default_symbol(wb_parser *p, const char *symbol);
/* Many messages in one call (benchmarks, bulk replay): message i is
 * buf[offsets[i]:offsets[i+1]] (offsets has n + 1 entries, buf `size` bytes: a message is
 * parsed in place when size - offsets[i] >= its length + 64), received at recv_ns[i]. Their
 * events go to `out` one message after another; ends[i] = the events of messages 0..i;
 * infos (NULL or n entries) gets each message's info. Returns the number of messages parsed:
 * fewer than n when the next one's events do not fit `cap` (call again from there with room). */
int64_t wb_parser_parse_many(wb_parser *p, const char *buf, size_t size,
                             const uint64_t *offsets, uint64_t n, const int64_t *recv_ns,
                             wb_event *out, uint64_t cap, uint64_t *ends, wb_msg_info *infos);
/* Counters since creation: messages (every counted call), events, and malformed by kind
 * (out_bad has WB_BAD_COUNT entries, index = WB_BAD_*). */
void wb_parser_counters(const wb_parser *p, uint64_t *messages, uint64_t *events,
                        uint64_t *out_bad);

#ifdef __cplusplus
}
#endif

#endif /* WB_PARSE_H */
