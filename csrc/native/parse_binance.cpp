/* parse_binance.cpp: Binance spot / USD-M / COIN-M messages (workbench/feed/venues/binance.py).
 *
 * The dispatch is the Python one: a frame starting `{"stream":"` is routed by the bytes after
 * the first '@' in bytes 11..63 (b: bookTicker, tr: trade, ag: aggTrade, d: depth, else the
 * `data.e` type); any other frame is read like `_HEAD` first (an envelope with its keys in
 * another order is re-encoded compactly, as msgspec would, and parsed again), then as a REST
 * body / depthUpdate, bookTicker, trade or aggTrade, another event type, or a response.
 * Before all that, `parse_binance_fast` reads a stream frame in its usual compact form (a
 * bookTicker, trade, aggTrade or depthUpdate) straight from its bytes (parse_fast.h) and falls
 * back to this path on anything else.
 */
#include <algorithm>
#include <cmath>
#include <cstring>

#include "parse_fast.h"
#include "parse_internal.h"

namespace wbp {
namespace {

constexpr double INF = HUGE_VAL;

bool other_type(sv e) {
    static const char *const names[] = {"kline",          "response",       "markPriceUpdate",
                                        "24hrTicker",     "24hrMiniTicker", "forceOrder",
                                        "continuous_kline", "indexPriceUpdate"};
    for (const char *n : names)
        if (e == n) return true;
    return false;
}

bool futures(const wb_parser_state *p) { return p->venue != WB_VENUE_BINANCE_SPOT; }

/* `_Ticker` (lax). */
struct Ticker {
    int64_t u = -1, T = 0, E = 0;
    sv s;
    double b = 0, B = 0, a = 0, A = 0;
    unsigned have = 0;  // bits: s, b, B, a, A
};

/* A bookTicker's info and its two BBO events (exchange time: E, else T). */
void emit_ticker(Ctx &c, const Ticker &t, uint32_t sid) {
    int64_t ts = (t.E ? t.E : t.T) * MS;
    wb_msg_info *info = c.info;
    info->kind = WB_MSG_BBO;
    info->symbol_id = sid;
    info->last_id = t.u;
    info->ts_event_ns = ts;
    uint64_t u = t.u < 0 ? 0 : static_cast<uint64_t>(t.u);
    c.put(ts, u, sid, WB_KIND_BBO, WB_SIDE_BUY, 0, t.b, t.B);
    c.put(ts, u, sid, WB_KIND_BBO, WB_SIDE_SELL, 0, t.a, t.A);
}

int decode_ticker(od::value &v, Ticker &t) {
    WBP_TRY(each_field(v, [&](sv k, od::value &x) -> int {
        sv str;
        if (k == "e") {
            WBP_TRY(get_str(x, str));
        } else if (k == "u") {
            WBP_TRY(lax_int(x, t.u, 0, INT64_MAX));
        } else if (k == "s") {
            WBP_TRY(get_str(x, t.s));
            if (t.s.empty()) return WB_BAD_SCHEMA;
            t.have |= 1;
        } else if (k == "b") {
            WBP_TRY(lax_float(x, t.b));
            t.have |= 2;
        } else if (k == "B") {
            WBP_TRY(lax_float(x, t.B));
            t.have |= 4;
        } else if (k == "a") {
            WBP_TRY(lax_float(x, t.a));
            t.have |= 8;
        } else if (k == "A") {
            WBP_TRY(lax_float(x, t.A));
            t.have |= 16;
        } else if (k == "T") {
            WBP_TRY(lax_int(x, t.T, 1, MAX_TIME_MS));
        } else if (k == "E") {
            WBP_TRY(lax_int(x, t.E, 1, MAX_TIME_MS));
        } else {
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    return t.have == 31 ? 0 : WB_BAD_SCHEMA;
}

/* `_Trade` (lax). */
struct Trade {
    int64_t E = 0, T = 0, t = -1, a = -1;
    sv s;
    double p = 0, q = 0;
    bool m = false;
    unsigned have = 0;  // bits: s, p, q, m
};

/* A trade's info and its TRADE event (exchange time: T, else E; id: t, else the aggTrade's
 * a; side: the aggressor's, SELL when the buyer is the maker). */
void emit_trade(Ctx &c, const Trade &t, uint32_t sid) {
    int64_t ts = (t.T ? t.T : t.E) * MS;
    int64_t id = t.t >= 0 ? t.t : t.a;
    wb_msg_info *info = c.info;
    info->kind = WB_MSG_TRADE;
    info->symbol_id = sid;
    info->last_id = id;
    info->ts_event_ns = ts;
    c.put(ts, static_cast<uint64_t>(id), sid, WB_KIND_TRADE, t.m ? WB_SIDE_SELL : WB_SIDE_BUY, 0,
          t.p, t.q);
}

int decode_trade(od::value &v, Trade &t) {
    WBP_TRY(each_field(v, [&](sv k, od::value &x) -> int {
        sv str;
        if (k == "e" || k == "X") {
            WBP_TRY(get_str(x, str));
        } else if (k == "E") {
            WBP_TRY(lax_int(x, t.E, 1, MAX_TIME_MS));
        } else if (k == "T") {
            WBP_TRY(lax_int(x, t.T, 1, MAX_TIME_MS));
        } else if (k == "s") {
            WBP_TRY(get_str(x, t.s));
            if (t.s.empty()) return WB_BAD_SCHEMA;
            t.have |= 1;
        } else if (k == "t") {
            WBP_TRY(lax_int(x, t.t, 0, INT64_MAX));
        } else if (k == "p") {
            WBP_TRY(lax_float(x, t.p));
            t.have |= 2;
        } else if (k == "q") {
            WBP_TRY(lax_float(x, t.q));
            t.have |= 4;
        } else if (k == "m") {
            WBP_TRY(lax_bool(x, t.m));
            t.have |= 8;
        } else if (k == "a") {
            WBP_TRY(lax_int(x, t.a, 0, INT64_MAX));
        } else {
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    return t.have == 15 ? 0 : WB_BAD_SCHEMA;
}

/* `_Event`: only `e` (a string) is read. */
int decode_event(od::value &v, sv &e) {
    return each_field(v, [&](sv k, od::value &x) {
        return k == "e" ? get_str(x, e) : skip(x, 1, LAX_MAX_DEPTH, false);
    });
}

enum Kind { TICKER, TRADE, EVENT };

/* `{"data": <struct>}` envelopes (`_enveloped`): or the bare struct. */
template <typename F>
int decode_doc(od::document &doc, bool enveloped, F &&decode) {
    od::json_type t;
    if (doc.type().get(t)) return WB_BAD_JSON;
    if (t != od::json_type::object) return WB_BAD_SCHEMA;
    if (!enveloped) {
        od::value v;
        if (doc.get_value().get(v)) return WB_BAD_JSON;
        WBP_TRY(decode(v));
        return doc_at_end(doc) ? 0 : WB_BAD_JSON;
    }
    bool data = false;
    WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
        if (k != "data") return skip(x, 1, LAX_MAX_DEPTH, false);
        data = true;
        return decode(x);
    }));
    if (!data) return WB_BAD_SCHEMA;
    return doc_at_end(doc) ? 0 : WB_BAD_JSON;
}

int ticker(wb_parser_state *p, Ctx &c, od::document &doc, bool enveloped) {
    Ticker t;
    WBP_TRY(decode_doc(doc, enveloped, [&](od::value &v) {
        t = Ticker();
        return decode_ticker(v, t);
    }));
    if (!(0.0 < t.b && t.b < INF && 0.0 < t.a && t.a < INF && 0.0 <= t.B && t.B < INF &&
          0.0 <= t.A && t.A < INF)) {
        bool bad_price = !(0.0 < t.b && t.b < INF && 0.0 < t.a && t.a < INF);
        return bad_price ? WB_BAD_PRICE : WB_BAD_QTY;
    }
    Symbol *s = p->symbol(t.s);
    if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
    emit_ticker(c, t, s->id);
    return 0;
}

int trade(wb_parser_state *p, Ctx &c, od::document &doc, bool enveloped) {
    Trade t;
    WBP_TRY(decode_doc(doc, enveloped, [&](od::value &v) {
        t = Trade();
        return decode_trade(v, t);
    }));
    if (!(0.0 < t.p && t.p < INF && 0.0 <= t.q && t.q < INF && (t.t >= 0 || t.a >= 0))) {
        if (t.t < 0 && t.a < 0) return WB_BAD_SCHEMA;
        return (0.0 < t.p && t.p < INF) ? WB_BAD_QTY : WB_BAD_PRICE;
    }
    Symbol *s = p->symbol(t.s);
    if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
    emit_trade(c, t, s->id);
    return 0;
}

int other(sv channel) { return other_type(channel) ? 0 : WB_BAD_UNKNOWN_TYPE; }

/* Remember a depth message's raw symbol (`_depth_symbols`). */
void saw_depth_symbol(wb_parser_state *p, sv raw, uint32_t sid) {
    if (p->depth_syms == 0) {
        std::memcpy(p->depth_sym, raw.data(), raw.size());
        p->depth_sym_len = raw.size();
        p->depth_sid = sid;
        p->depth_syms = 1;
    } else if (p->depth_syms == 1 && sv(p->depth_sym, p->depth_sym_len) != raw) {
        p->depth_syms = 2;
    }
}

/* A book message's info and events (`_book_events`; exchange time: E, else T): a REST snapshot
 * (lastUpdateId) or a depthUpdate (U, u, pu). */
void emit_book(Ctx &c, const BookHead &h, bool snapshot, uint32_t sid) {
    int64_t ts = (h.E > 0 ? h.E : std::max<int64_t>(h.T, 0)) * MS;
    wb_msg_info *info = c.info;
    info->symbol_id = sid;
    info->ts_event_ns = ts;
    int64_t last = h.u;
    if (snapshot) {
        last = h.last_update_id;
        info->kind = WB_MSG_SNAPSHOT;
        info->last_id = last;
    } else {
        info->kind = WB_MSG_DELTA;
        info->first_id = h.U;
        info->last_id = h.u;
        info->prev_id = h.pu;
    }
    book_events(c, 0, snapshot, ts, static_cast<uint64_t>(last), sid);
}

/* `_book`: depthUpdate or REST snapshot. */
int book(wb_parser_state *p, Ctx &c, od::document &doc, bool enveloped, sv stream_symbol,
         const char *rest_symbol) {
    BookHead h;
    WBP_TRY(read_book(p, c, doc, enveloped, false, h));
    bool snapshot = h.last_update_id >= 0;
    if (h.E == 0 || h.T == 0 || h.E > MAX_TIME_MS || h.T > MAX_TIME_MS) return WB_BAD_SCHEMA;
    if (snapshot) {
        if (h.e.data() != nullptr || h.sides != (SIDE_BIDS | SIDE_ASKS)) return WB_BAD_SCHEMA;
    } else if (rest_symbol != nullptr) {
        return WB_BAD_SCHEMA;
    } else if (h.e.data() == nullptr) {
        return WB_BAD_SCHEMA;
    } else if (h.e != "depthUpdate") {
        return WB_BAD_UNKNOWN_TYPE;
    } else if (!(h.E > 0 && !h.s.empty() && 0 <= h.U && h.U <= h.u &&
                 h.sides == (SIDE_B | SIDE_A)) ||
               (h.pu < 0 && futures(p))) {
        return WB_BAD_SCHEMA;
    }
    uint32_t sid = 0;
    if (rest_symbol != nullptr) {
        Symbol *s = p->symbol(sv(rest_symbol));
        if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
        sid = s->id;
    } else if (h.s.data() != nullptr) {
        Symbol *s = p->symbol(h.s);
        if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
        sid = s->id;
        saw_depth_symbol(p, h.s, sid);
    } else if (!stream_symbol.empty()) {
        Symbol *s = p->symbol(stream_symbol);
        if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
        sid = s->id;
    } else if (p->default_sid != 0) {
        sid = p->default_sid;
    } else if (p->depth_syms == 1) {
        sid = p->depth_sid;
    } else {
        return WB_BAD_UNKNOWN_SYMBOL;
    }
    emit_book(c, h, snapshot, sid);
    return 0;
}

/* A frame starting `{"stream":"`. */
int compact(wb_parser_state *p, Ctx &c, od::document &doc) {
    const char *m = c.msg;
    size_t len = c.len;
    size_t stop = std::min<size_t>(len, 64);
    const void *found = stop > 11 ? std::memchr(m + 11, '@', stop - 11) : nullptr;
    if (found != nullptr) {
        size_t at = static_cast<size_t>(static_cast<const char *>(found) - m) + 1;
        if (at >= len) return WB_BAD_SCHEMA;  // IndexError in Python
        char ch = m[at];
        if (ch == 'b') return ticker(p, c, doc, true);
        if (at + 1 >= len) return WB_BAD_SCHEMA;
        char ch2 = m[at + 1];
        if ((ch == 't' && ch2 == 'r') || (ch == 'a' && ch2 == 'g')) return trade(p, c, doc, true);
        if (ch == 'd') return book(p, c, doc, true, sv(m + 11, at - 12), nullptr);
    }
    sv e;
    WBP_TRY(decode_doc(doc, true, [&](od::value &v) {
        e = sv();
        return decode_event(v, e);
    }));
    return other(e.empty() ? sv("stream") : e);
}

/* msgspec's JSON string encoding (`_ENCODE`): escapes ", \ and control bytes. */
void encode_string(std::vector<char> &out, sv s) {
    static const char digits[] = "0123456789abcdef";
    out.push_back('"');
    for (char ch : s) {
        unsigned char u = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            out.push_back('\\');
            out.push_back(ch);
        } else if (u < 0x20) {
            out.push_back('\\');
            switch (ch) {
                case '\n': out.push_back('n'); break;
                case '\r': out.push_back('r'); break;
                case '\t': out.push_back('t'); break;
                case '\b': out.push_back('b'); break;
                case '\f': out.push_back('f'); break;
                default:
                    out.insert(out.end(), {'u', '0', '0', digits[u >> 4], digits[u & 15]});
            }
        } else {
            out.push_back(ch);
        }
    }
    out.push_back('"');
}

enum Route { R_NONE, R_BOOK, R_TICKER, R_TRADE, R_OTHER, R_RESPONSE, R_UNKNOWN };

/* Any other frame: `_HEAD` then `_bare`. */
int bare(wb_parser_state *p, Ctx &c, od::document &doc) {
    sv stream, e;
    bool data = false, last_update = false, A = false, response = false;
    // not an object: SCHEMA (msgspec: "Expected `object`")
    WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
        if (k == "stream") return get_str(x, stream);
        if (k == "e") return get_str(x, e);
        WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        if (k == "data") data = true;
        else if (k == "lastUpdateId") last_update = true;
        else if (k == "A") A = true;
        else if (k == "result" || k == "error") response = true;
        return 0;
    }));
    if (!doc_at_end(doc)) return WB_BAD_JSON;
    if (!stream.empty()) {
        if (!data) return WB_BAD_SCHEMA;
        // re-encode `{"stream":..,"data":..}` compactly and parse that (`_Envelope`)
        std::vector<char> &buf = p->scratch;
        buf.clear();
        const char head[] = "{\"stream\":";
        buf.insert(buf.end(), head, head + sizeof(head) - 1);
        encode_string(buf, stream);
        doc.rewind();
        sv raw;
        WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
            if (k != "data") return skip(x, 1, LAX_MAX_DEPTH, false);
            const char *start = x.raw_json_token().data();  // the data value's bytes
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
            const char *end;
            if (doc.current_location().get(end)) return WB_BAD_JSON;
            raw = sv(start, static_cast<size_t>(end - start));
            return 0;
        }));
        while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\r' ||
                                raw.back() == '\t'))
            raw.remove_suffix(1);
        const char mid[] = ",\"data\":";
        buf.insert(buf.end(), mid, mid + sizeof(mid) - 1);
        buf.insert(buf.end(), raw.begin(), raw.end());
        buf.push_back('}');
        size_t n = buf.size();
        buf.resize(n + simdjson::SIMDJSON_PADDING);
        od::document doc2;
        auto err = p->parser.iterate(buf.data(), n, buf.size()).get(doc2);
        if (err) return err_kind(err);
        Ctx c2 = c;
        c2.msg = buf.data();
        c2.len = n;
        int bad = compact(p, c2, doc2);
        c.n = c2.n;
        return bad;
    }
    Route route = R_UNKNOWN;
    if (last_update || e == "depthUpdate") route = R_BOOK;
    else if (e == "bookTicker" || (e.empty() && A)) route = R_TICKER;
    else if (e == "trade" || e == "aggTrade") route = R_TRADE;
    else if (!e.empty()) route = R_OTHER;
    else if (response) route = R_RESPONSE;
    switch (route) {
        case R_BOOK: doc.rewind(); return book(p, c, doc, false, sv(), nullptr);
        case R_TICKER: doc.rewind(); return ticker(p, c, doc, false);
        case R_TRADE: doc.rewind(); return trade(p, c, doc, false);
        case R_OTHER: return other(e);
        case R_RESPONSE: return 0;
        default: return WB_BAD_UNKNOWN_TYPE;
    }
}


/* ---- the fast path: `{"stream":"...","data":{...}}` frames in their usual form ---------------
 * Each reader returns true only for a message the general path accepts, with the events and
 * info it writes (see parse_fast.h); false leaves info alone and the events uncounted. */
using fast::Cur;

/* `,` (more keys) or `}` (the object's end; *done set): anything else is false. */
inline bool next_key(Cur &r, bool &done) {
    if (r.eat(',')) return true;
    if (r.eat('}')) {
        done = true;
        return true;
    }
    return false;
}

/* The envelope's `}` ends the message. */
inline bool closes(Cur &r) { return r.eat('}') && r.p == r.end; }

/* The data object of a bookTicker (decode_ticker's keys, each once). */
bool fast_ticker(wb_parser_state *p, Ctx &c, Cur &r) {
    Ticker t;
    unsigned seen = 0;
    if (!r.eat('{')) return false;
    for (bool done = false; !done;) {
        sv k, str;
        if (!fast::key(r, k)) return false;
        unsigned bit = 0;
        bool ok;
        switch (k.size() == 1 ? k[0] : 0) {
            case 'e': bit = 1; ok = fast::str(r, str); break;
            case 'u': bit = 2; ok = fast::natural(r, t.u); break;
            case 's': bit = 4; ok = fast::str(r, t.s) && !t.s.empty(); break;
            case 'b': bit = 8; ok = fast::lax_float(r, t.b); break;
            case 'B': bit = 16; ok = fast::lax_float(r, t.B); break;
            case 'a': bit = 32; ok = fast::lax_float(r, t.a); break;
            case 'A': bit = 64; ok = fast::lax_float(r, t.A); break;
            case 'T': bit = 128; ok = fast::natural(r, t.T) && t.T >= 1 && t.T <= MAX_TIME_MS; break;
            case 'E': bit = 256; ok = fast::natural(r, t.E) && t.E >= 1 && t.E <= MAX_TIME_MS; break;
            default: ok = fast::skip_scalar(r); break;
        }
        if (!ok || (seen & bit) || !next_key(r, done)) return false;
        seen |= bit;
    }
    // s, b, B, a, A
    if ((seen & 0x7c) != 0x7c || !closes(r)) return false;
    if (!(0.0 < t.b && t.b < INF && 0.0 < t.a && t.a < INF && t.B < INF && t.A < INF))
        return false;
    Symbol *s = p->symbol(t.s);
    if (s == nullptr) return false;
    emit_ticker(c, t, s->id);
    return true;
}

/* The data object of a trade or aggTrade (decode_trade's keys, each once; others skipped). */
bool fast_trade(wb_parser_state *p, Ctx &c, Cur &r) {
    Trade t;
    unsigned seen = 0;
    if (!r.eat('{')) return false;
    for (bool done = false; !done;) {
        sv k, str;
        if (!fast::key(r, k)) return false;
        unsigned bit = 0;
        bool ok;
        switch (k.size() == 1 ? k[0] : 0) {
            case 'e': bit = 1; ok = fast::str(r, str); break;
            case 'X': bit = 2; ok = fast::str(r, str); break;
            case 'E': bit = 4; ok = fast::natural(r, t.E) && t.E >= 1 && t.E <= MAX_TIME_MS; break;
            case 'T': bit = 8; ok = fast::natural(r, t.T) && t.T >= 1 && t.T <= MAX_TIME_MS; break;
            case 's': bit = 16; ok = fast::str(r, t.s) && !t.s.empty(); break;
            case 't': bit = 32; ok = fast::natural(r, t.t); break;
            case 'p': bit = 64; ok = fast::lax_float(r, t.p); break;
            case 'q': bit = 128; ok = fast::lax_float(r, t.q); break;
            case 'm': bit = 256; ok = r.lit("true", 4) ? (t.m = true) : r.lit("false", 5); break;
            case 'a': bit = 512; ok = fast::natural(r, t.a); break;
            default: ok = fast::skip_scalar(r); break;
        }
        if (!ok || (seen & bit) || !next_key(r, done)) return false;
        seen |= bit;
    }
    if ((seen & (16 | 64 | 128 | 256)) != (16 | 64 | 128 | 256) || !closes(r)) return false;
    if (!(0.0 < t.p && t.p < INF && t.q < INF && (t.t >= 0 || t.a >= 0))) return false;
    Symbol *s = p->symbol(t.s);
    if (s == nullptr) return false;
    emit_trade(c, t, s->id);
    return true;
}

/* `[["price","qty"],...]` -> level events (`_levels._level_array` of quoted numbers). */
bool fast_levels(Ctx &c, Cur &r, int kind, int side) {
    if (!r.eat('[')) return false;
    if (r.eat(']')) return true;
    for (;;) {
        double price, qty;
        if (!r.eat('[') || !fast::level_number(r, price) || !r.eat(',') ||
            !fast::level_number(r, qty) || !r.eat(']'))
            return false;
        if (!(price > 0.0)) return false;
        c.put(0, 0, 0, kind, side, 0, price, qty);
        if (r.eat(']')) return true;
        if (!r.eat(',')) return false;
    }
}

/* The data object of a depthUpdate (`_levels` keys, each once). */
bool fast_depth(wb_parser_state *p, Ctx &c, Cur &r) {
    BookHead h;
    unsigned seen = 0;
    if (!r.eat('{')) return false;
    for (bool done = false; !done;) {
        sv k;
        if (!fast::key(r, k)) return false;
        unsigned bit;
        bool ok;
        if (k.size() == 1) {
            switch (k[0]) {
                case 'e': bit = 1; ok = fast::str(r, h.e); break;
                case 'E': bit = 2; ok = fast::natural(r, h.E); break;
                case 'T': bit = 4; ok = fast::natural(r, h.T); break;
                case 's': bit = 8; ok = fast::str(r, h.s); break;
                case 'U': bit = 16; ok = fast::natural(r, h.U); break;
                case 'u': bit = 32; ok = fast::natural(r, h.u); break;
                case 'b': bit = 64; ok = fast_levels(c, r, WB_KIND_BID_LEVEL, WB_SIDE_BUY); break;
                case 'a': bit = 128; ok = fast_levels(c, r, WB_KIND_ASK_LEVEL, WB_SIDE_SELL); break;
                default: return false;
            }
        } else if (k == "pu") {
            bit = 256;
            ok = fast::natural(r, h.pu);
        } else {
            return false;
        }
        if (!ok || (seen & bit) || !next_key(r, done)) return false;
        seen |= bit;
    }
    // book(): E and T in range, a depthUpdate with a symbol, both sides, U <= u, pu (futures)
    if (!((seen & (1 | 2 | 8 | 16 | 32 | 64 | 128)) == (1 | 2 | 8 | 16 | 32 | 64 | 128) &&
          h.e == "depthUpdate" && h.E > 0 && h.E <= MAX_TIME_MS && h.T != 0 &&
          h.T <= MAX_TIME_MS && !h.s.empty() && h.U <= h.u && (h.pu >= 0 || !futures(p)) &&
          closes(r)))
        return false;
    Symbol *s = p->symbol(h.s);
    if (s == nullptr) return false;
    saw_depth_symbol(p, h.s, s->id);
    emit_book(c, h, false, s->id);  // E > 0 here: the exchange time is E
    return true;
}

}  // namespace

int parse_binance_fast(wb_parser_state *p, Ctx &c) {
    const char *m = c.msg;
    size_t len = c.len;
    if (len == 0 || m[len - 1] != '}') return FAST_FALLBACK;  // (parse_fast.h: digit loops)
    Cur r{m, m + len};
    if (!r.lit("{\"stream\":", 10)) return FAST_FALLBACK;
    // the route of compact(): the bytes after the first '@' in bytes 11..63
    size_t stop = std::min<size_t>(len, 64);
    const void *found = stop > 11 ? std::memchr(m + 11, '@', stop - 11) : nullptr;
    if (found == nullptr) return FAST_FALLBACK;
    size_t at = static_cast<size_t>(static_cast<const char *>(found) - m) + 1;
    if (at + 1 >= len) return FAST_FALLBACK;
    char ch = m[at], ch2 = m[at + 1];
    sv stream;
    if (!fast::str(r, stream) || !r.lit(",\"data\":", 8)) return FAST_FALLBACK;
    bool ok;
    if (ch == 'b') ok = fast_ticker(p, c, r);
    else if ((ch == 't' && ch2 == 'r') || (ch == 'a' && ch2 == 'g')) ok = fast_trade(p, c, r);
    else if (ch == 'd') ok = fast_depth(p, c, r);
    else return FAST_FALLBACK;
    if (ok) return 0;
    c.n = 0;
    return FAST_FALLBACK;
}

int parse_binance(wb_parser_state *p, Ctx &c, od::document &doc, const char *rest_symbol) {
    if (rest_symbol != nullptr) return book(p, c, doc, false, sv(), rest_symbol);
    if (starts_with(sv(c.msg, c.len), "{\"stream\":\"")) return compact(p, c, doc);
    return bare(p, c, doc);
}

}  // namespace wbp
