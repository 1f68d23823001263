/* parse_internal.h: what the venue parsers of wb_parse.h share (C++17, simdjson On-Demand).
 *
 * The wb_parser state, the per-call context (output events, message info), the symbol table,
 * and the readers that mirror the Python normalizers' value rules:
 * - msgspec's lax typed decoding (strict=False) of the small messages: `lax_float`,
 *   `lax_int`, `lax_bool`, `get_str`, `skip` (full validation of a value nobody reads);
 * - `_levels.parse_book`'s book reading (Binance depth / REST bodies, Bybit orderbook):
 *   `BookHead`, `read_book`, with `_levels._number` ported bit for bit (`level_number`).
 * See parse.cpp for the contract and the documented differences from the Python path.
 */
#ifndef WB_PARSE_INTERNAL_H
#define WB_PARSE_INTERNAL_H

#include <simdjson.h>

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "wb_parse.h"

namespace wbp {

namespace od = simdjson::ondemand;
using sv = std::string_view;

constexpr int64_t MS = 1000000;
constexpr int64_t INT64_MAX_ = INT64_MAX;
constexpr int64_t MAX_TIME_MS = INT64_MAX / 1000000;  // base.MAX_TIME_MS
constexpr int BOOK_MAX_DEPTH = 62;                     // _levels.MAX_DEPTH
constexpr int LAX_MAX_DEPTH = 960;  // nesting msgspec decodes before RecursionError (~1000
                                    // minus the Python stack under it: see parse.cpp)
constexpr size_t MAX_SYMBOL = 64;   // longest symbol the table keeps

/* One symbol of the table: upper-cased bytes, its id, Bybit's last best bid/offer. */
struct Symbol {
    char key[MAX_SYMBOL];
    uint32_t len = 0;
    uint32_t id = 0;
    double bbo[4] = {0.0, 0.0, 0.0, 0.0};  // bid, bid qty, ask, ask qty (bybit.py `_bbo`)
};

/* Open addressing over upper-cased ASCII bytes (FNV-1a); lookups never allocate. */
class SymbolTable {
   public:
    SymbolTable();
    bool add(const char *s, size_t n, uint32_t id);
    Symbol *find(const char *s, size_t n);

   private:
    std::vector<Symbol> slots_;
    size_t used_ = 0;
    // the last symbol found, by its raw bytes (messages name the same symbol over and over)
    Symbol *last_ = nullptr;
    char last_raw_[MAX_SYMBOL];
    size_t last_len_ = 0;
};

struct wb_parser_state;

/* The book object's ids and strings (`_levels` head slots), -1 / empty when absent. */
struct BookHead {
    int64_t E = -1, T = -1, U = -1, u = -1, pu = -1, last_update_id = -1, ts = -1, cts = -1,
            seq = -1;
    sv s, e, type, topic, stream;  // data() == nullptr: absent
    unsigned sides = 0;             // SIDE_* bits of the level arrays read
};
constexpr unsigned SIDE_B = 1, SIDE_A = 2, SIDE_BIDS = 4, SIDE_ASKS = 8;

/* One call: where events go and what the message was. */
struct Ctx {
    wb_event *out;
    uint64_t cap;
    uint64_t n = 0;  // events produced (written while n < cap)
    int64_t recv_ns;
    wb_msg_info *info;
    const char *msg;  // the message as parsed (padded)
    size_t len;

    /* Event n (written only when it fits); seq and LAST_IN_MSG are set by the caller. */
    void put(int64_t ts, uint64_t venue_seq, uint32_t sid, int kind, int side, int flags,
             double price, double qty) {
        if (n < cap) {
            wb_event &e = out[n];
            e.ts_event_ns = ts;
            e.ts_recv_ns = recv_ns;
            e.ts_publish_ns = 0;
            e.venue_seq = venue_seq;
            e.symbol_id = sid;
            e.kind = static_cast<uint8_t>(kind);
            e.side = static_cast<uint8_t>(side);
            e.flags = static_cast<uint16_t>(flags);
            e.price = price;
            e.qty = qty;
        }
        n++;
    }
};

/* Parser state (wb_parser is this). */
struct wb_parser_state {
    int venue;
    od::parser parser;
    std::vector<char> padded;   // copy of a message without room for simdjson's padding
    std::vector<char> scratch;  // a re-encoded Binance envelope
    SymbolTable symbols;
    uint32_t default_sid = 0;  // Binance default_symbol
    // Binance `_depth_symbols`: the first distinct raw symbol of depth messages, and whether
    // another was seen
    char depth_sym[MAX_SYMBOL];
    size_t depth_sym_len = 0;
    uint32_t depth_sid = 0;
    int depth_syms = 0;  // 0, 1 or 2 (= more than one)
    uint64_t messages = 0, events = 0;
    uint64_t bad[WB_BAD_COUNT] = {};
    // Coinbase/Bybit decode scratch (reused: no allocation once grown)
    struct Level {
        sv side;
        double price, qty;
    };
    struct Trade {
        sv symbol, side, id;
        double price, qty;
        int64_t ts;
    };
    struct Tick {
        sv symbol;
        double v[4];
        bool has[4];
    };
    struct Event {
        sv type, product;
        int lists = 0;  // bit 1 updates, 2 trades, 4 tickers present
        size_t u0 = 0, u1 = 0, t0 = 0, t1 = 0, k0 = 0, k1 = 0;
    };
    std::vector<Level> levels;
    std::vector<Trade> trades;
    std::vector<Tick> ticks;
    std::vector<Event> cb_events;

    explicit wb_parser_state(int v);
    Symbol *symbol(sv s) { return symbols.find(s.data(), s.size()); }
};

/* ---- value readers (return 0 or a WB_BAD_* kind) ---------------------------------------- */
int err_kind(simdjson::error_code e);
/* JSON number grammar (RFC 8259 section 6): the end of the number at p[i], or -1. */
long number_end(const char *p, long i, long n);
/* `_levels._number`: value of the JSON number at p[i] (ok false: none there or an integer
 * part over 18 digits); *end = the index after it. */
double level_number(const char *p, long i, long n, long *end, bool *ok);
/* The scalar token of `v` without trailing whitespace. */
int token(od::value &v, sv &out);
/* End (index after the closing quote) of the JSON string starting at p (an opening quote);
 * `escaped` tells whether it has backslashes; `valid` whether its escapes are well formed
 * (the `_levels._string_end` rule: \uXXXX needs 4 hex digits, no surrogate check). */
const char *string_end(const char *p, bool *escaped, bool *valid);

/* Validate a value nobody reads: `book` uses `_levels` string rules (escape syntax only),
 * else msgspec's (escapes decoded: lone surrogates refused). depth: containers around v;
 * entering one past `limit` is WB_BAD_DEPTH. */
int skip(od::value v, int depth, int limit, bool book);
/* A key: raw bytes when it has no escapes, else decoded (msgspec matches decoded keys). */
int key_of(od::field &f, sv &key);
int get_str(od::value &v, sv &out);  // a JSON string (decoded), else SCHEMA
/* msgspec lax float: a number or a string holding one (or nan/inf/infinity, any case, an
 * optional '-'); out of double range is SCHEMA. nullable: null or "null" (any case) ->
 * *is_null. */
int lax_float(od::value &v, double &out, bool nullable = false, bool *is_null = nullptr);
/* msgspec lax int within [lo, hi]: an integer, an integral float up to 2**53, or a string
 * holding either. */
int lax_int(od::value &v, int64_t &out, int64_t lo, int64_t hi);
int lax_bool(od::value &v, bool &out);
/* The value must be an object (else SCHEMA, JSON for a bad token). */
int get_object(od::value &v, od::object &out);
int get_array(od::value &v, od::array &out);
/* A best bid/offer field (Bybit `tickers`, Coinbase `ticker`): the key names[i] (bid price,
 * bid qty, ask price, ask qty) reads a nullable lax float into v[i] and sets has[i] when it is
 * not null; another key's value is skipped (depth: containers around it). */
int bbo_field(sv key, od::value &x, const char *const names[4], double v[4], bool has[4],
              int depth);

/* `_levels.parse_book` over the document: levels to ctx (from row ctx.n), ids to head. */
int read_book(wb_parser_state *p, Ctx &c, od::document &doc, bool in_data, bool bybit,
              BookHead &head);
/* Fill the book events of [first, c.n) (`_book_events`): a snapshot gets its brackets. */
void book_events(Ctx &c, uint64_t first, bool snapshot, int64_t ts, uint64_t venue_seq,
                 uint32_t sid);

/* ---- venues ------------------------------------------------------------------------------ */
int parse_binance(wb_parser_state *p, Ctx &c, od::document &doc, const char *rest_symbol);
/* The fast path of a Binance frame in its usual compact form `{"stream":..,"data":{..}}`
 * (parse_fast.h), read from its bytes before simdjson: 0 (accepted, events and info written),
 * or FAST_FALLBACK (c.n reset, info untouched, parser state unchanged): parse as usual. */
constexpr int FAST_FALLBACK = -1;
int parse_binance_fast(wb_parser_state *p, Ctx &c);
int parse_bybit(wb_parser_state *p, Ctx &c, od::document &doc);
int parse_coinbase(wb_parser_state *p, Ctx &c, od::document &doc);

/* ISO 8601 UTC time -> ns (coinbase.py `iso_ns`): 0 if empty, -1 if bad. */
int64_t iso_ns(sv text);

/* Nothing after the top-level value (simdjson 3.0 has no document::at_end). */
inline bool doc_at_end(od::document &doc) {
    return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

inline bool starts_with(sv s, sv prefix) {
    return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

}  // namespace wbp

#define WBP_TRY(expr)              \
    do {                           \
        int wbp_bad_ = (expr);     \
        if (wbp_bad_) return wbp_bad_; \
    } while (0)

namespace wbp {

/* ---- walks (fn returns 0 to go on, or a WB_BAD_* kind that ends the walk and is returned) - */
/* Each field of `o` in order: fn(sv key, od::value &value); keys as key_of reads them; a field
 * that does not read is WB_BAD_JSON. */
template <typename F>
inline int each_field(od::object &o, F &&fn) {
    for (auto fr : o) {
        od::field f;
        if (std::move(fr).get(f)) return WB_BAD_JSON;
        sv k;
        WBP_TRY(key_of(f, k));
        od::value x = f.value();
        WBP_TRY(fn(k, x));
    }
    return 0;
}

/* Each field of the object `v` (not an object: SCHEMA). */
template <typename F>
inline int each_field(od::value &v, F &&fn) {
    od::object o;
    WBP_TRY(get_object(v, o));
    return each_field(o, fn);
}

/* Each field of the document's top-level object (not an object: SCHEMA). */
template <typename F>
inline int each_doc_field(od::document &doc, F &&fn) {
    od::json_type t;
    if (doc.type().get(t)) return WB_BAD_JSON;
    if (t != od::json_type::object) return WB_BAD_SCHEMA;
    od::object o;
    if (doc.get_object().get(o)) return WB_BAD_JSON;
    return each_field(o, fn);
}

/* Each element of `a` in order: fn(od::value &element); one that does not read is JSON. */
template <typename F>
inline int each_element(od::array &a, F &&fn) {
    for (auto er : a) {
        od::value e;
        if (std::move(er).get(e)) return WB_BAD_JSON;
        WBP_TRY(fn(e));
    }
    return 0;
}

}  // namespace wbp

#endif /* WB_PARSE_INTERNAL_H */
