/* parse_bybit.cpp: Bybit v5 public messages (workbench/feed/venues/bybit.py).
 *
 * The topic is found by a byte search in the first 40 bytes (`"orderbook.`, `"publicTrade.`,
 * `"tickers.`), else by decoding `_Topic`. orderbook.N: `_levels` book reading, a snapshot when
 * type is "snapshot" or u == 1; publicTrade: `_Trades`; tickers: `_Ticker` with the last best
 * bid/offer kept per symbol (in its symbol table entry); op responses and other topics OTHER.
 */
#include <cmath>
#include <cstring>

#include "parse_internal.h"

namespace wbp {
namespace {

constexpr double INF = HUGE_VAL;
constexpr size_t HEAD_BYTES = 40;

bool in_head(const Ctx &c, const char *needle) {
    size_t n = c.len < HEAD_BYTES ? c.len : HEAD_BYTES;
    return memmem(c.msg, n, needle, std::strlen(needle)) != nullptr;
}

bool other_topic(sv channel) {
    static const char *const names[] = {"kline", "allLiquidation", "liquidation", "lt",
                                        "insurance", "adlAlert", "priceLimit"};
    for (const char *n : names)
        if (channel == n) return true;
    return false;
}

int book(wb_parser_state *p, Ctx &c, od::document &doc) {
    BookHead h;
    WBP_TRY(read_book(p, c, doc, true, true, h));
    if (!(starts_with(h.topic, "orderbook.") && !h.s.empty() && h.type.data() != nullptr &&
          h.u >= 0 && 0 < h.ts && h.ts <= MAX_TIME_MS && h.cts != 0 && h.cts <= MAX_TIME_MS &&
          h.sides == (SIDE_B | SIDE_A)))
        return WB_BAD_SCHEMA;
    if (h.type != "snapshot" && h.type != "delta") return WB_BAD_UNKNOWN_TYPE;
    bool snapshot = h.type == "snapshot" || h.u == 1;
    Symbol *s = p->symbol(h.s);
    if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
    int64_t ts = h.ts * MS;
    wb_msg_info *info = c.info;
    info->kind = snapshot ? WB_MSG_SNAPSHOT : WB_MSG_DELTA;
    info->symbol_id = s->id;
    info->first_id = info->last_id = h.u;
    info->seq = h.seq;
    info->ts_event_ns = ts;
    book_events(c, 0, snapshot, ts, static_cast<uint64_t>(h.u), s->id);
    return 0;
}

/* `_Trade` of `_Trades.data`. */
int decode_trade(od::value &v, wb_parser_state::Trade &t) {
    unsigned have = 0;
    WBP_TRY(each_field(v, [&](sv k, od::value &x) -> int {
        if (k == "T") {
            WBP_TRY(lax_int(x, t.ts, 1, MAX_TIME_MS));
            have |= 1;
        } else if (k == "s") {
            WBP_TRY(get_str(x, t.symbol));
            if (t.symbol.empty()) return WB_BAD_SCHEMA;
            have |= 2;
        } else if (k == "S") {
            WBP_TRY(get_str(x, t.side));
            have |= 4;
        } else if (k == "v") {
            WBP_TRY(lax_float(x, t.qty));
            have |= 8;
        } else if (k == "p") {
            WBP_TRY(lax_float(x, t.price));
            have |= 16;
        } else {
            WBP_TRY(skip(x, 2, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    return have == 31 ? 0 : WB_BAD_SCHEMA;
}

/* `_Trades` / `_Ticker`: topic, data (decoded by `data`), ts. */
template <typename F>
int decode_message(od::document &doc, sv &topic, int64_t &ts, F &&data) {
    unsigned have = 0;
    WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
        if (k == "topic") {
            WBP_TRY(get_str(x, topic));
            have |= 1;
        } else if (k == "data") {
            WBP_TRY(data(x));
            have |= 2;
        } else if (k == "ts") {
            WBP_TRY(lax_int(x, ts, 1, MAX_TIME_MS));
        } else {
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    if (have != 3) return WB_BAD_SCHEMA;
    return doc_at_end(doc) ? 0 : WB_BAD_JSON;
}

int trades(wb_parser_state *p, Ctx &c, od::document &doc) {
    auto &list = p->trades;
    sv topic;
    int64_t ts = 0;
    WBP_TRY(decode_message(doc, topic, ts, [&](od::value &x) {
        list.clear();
        od::array a;
        WBP_TRY(get_array(x, a));
        return each_element(a, [&](od::value &e) {
            list.emplace_back();
            return decode_trade(e, list.back());
        });
    }));
    if (!starts_with(topic, "publicTrade.")) return WB_BAD_SCHEMA;
    for (const auto &t : list) {
        if (!(0.0 < t.price && t.price < INF)) return WB_BAD_PRICE;
        bool side = t.side == "Buy" || t.side == "Sell";
        if (!(0.0 <= t.qty && t.qty < INF) || !side) return side ? WB_BAD_QTY : WB_BAD_SCHEMA;
    }
    if (list.empty()) return 0;
    uint32_t sid = 0;
    for (const auto &t : list) {
        Symbol *s = p->symbol(t.symbol);
        if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
        sid = s->id;
        c.put(t.ts * MS, 0, sid, WB_KIND_TRADE, t.side == "Buy" ? WB_SIDE_BUY : WB_SIDE_SELL, 0,
              t.price, t.qty);
    }
    wb_msg_info *info = c.info;
    info->kind = WB_MSG_TRADE;
    info->symbol_id = sid;
    info->ts_event_ns = ts * MS;
    return 0;
}

int ticker(wb_parser_state *p, Ctx &c, od::document &doc) {
    sv topic, symbol;
    int64_t ts = 0;
    double v[4] = {0, 0, 0, 0};
    bool has[4] = {false, false, false, false};
    static const char *const names[4] = {"bid1Price", "bid1Size", "ask1Price", "ask1Size"};
    WBP_TRY(decode_message(doc, topic, ts, [&](od::value &x) {
        od::object o;
        WBP_TRY(get_object(x, o));
        bool have_symbol = false;
        for (int i = 0; i < 4; i++) has[i] = false;
        WBP_TRY(each_field(o, [&](sv k, od::value &y) -> int {
            if (k == "symbol") {
                WBP_TRY(get_str(y, symbol));
                if (symbol.empty()) return WB_BAD_SCHEMA;
                have_symbol = true;
                return 0;
            }
            return bbo_field(k, y, names, v, has, 2);
        }));
        return have_symbol ? 0 : WB_BAD_SCHEMA;
    }));
    if (!starts_with(topic, "tickers.")) return WB_BAD_SCHEMA;
    if (!(has[0] || has[1] || has[2] || has[3])) return 0;  // spot tickers: no BBO
    for (int i = 0; i < 4; i++)
        if (has[i] && !(i % 2 == 0 ? (0.0 < v[i] && v[i] < INF) : (0.0 <= v[i] && v[i] < INF)))
            return i % 2 == 0 ? WB_BAD_PRICE : WB_BAD_QTY;
    Symbol *s = p->symbol(symbol);
    if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
    c.info->symbol_id = s->id;
    double bbo[4];
    for (int i = 0; i < 4; i++) bbo[i] = has[i] ? v[i] : s->bbo[i];
    bool complete = bbo[0] > 0.0 && bbo[2] > 0.0;
    if (complete && c.cap < 2) {  // NO_ROOM: keep the state for the call again
        c.n = 2;
        return 0;
    }
    std::memcpy(s->bbo, bbo, sizeof(bbo));
    if (!complete) return 0;  // one side not known yet
    int64_t t_ns = ts * MS;
    c.info->kind = WB_MSG_BBO;
    c.info->ts_event_ns = t_ns;
    c.put(t_ns, 0, s->id, WB_KIND_BBO, WB_SIDE_BUY, 0, bbo[0], bbo[1]);
    c.put(t_ns, 0, s->id, WB_KIND_BBO, WB_SIDE_SELL, 0, bbo[2], bbo[3]);
    return 0;
}

/* `_Topic` (strict): topic, op, success. */
int other(od::document &doc) {
    sv topic, op;
    bool success = false;
    WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
        if (k == "topic") {
            WBP_TRY(get_str(x, topic));
        } else if (k == "op") {
            WBP_TRY(get_str(x, op));
        } else if (k == "success") {
            od::json_type xt;
            if (x.type().get(xt)) return WB_BAD_JSON;
            sv tok;
            WBP_TRY(token(x, tok));
            if (xt == od::json_type::boolean) {
                if (tok != "true" && tok != "false") return WB_BAD_JSON;
                success = true;
            } else if (xt == od::json_type::null) {
                if (tok != "null") return WB_BAD_JSON;
                success = false;
            } else {
                return WB_BAD_SCHEMA;
            }
        } else {
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    if (!doc_at_end(doc)) return WB_BAD_JSON;
    sv channel = topic.substr(0, topic.find('.'));
    if (channel == "orderbook") return 1000;
    if (channel == "publicTrade") return 1001;
    if (channel == "tickers") return 1002;
    if (!op.empty() || success) return 0;
    return other_topic(channel) ? 0 : WB_BAD_UNKNOWN_TYPE;
}

}  // namespace

int parse_bybit(wb_parser_state *p, Ctx &c, od::document &doc) {
    int route;
    if (in_head(c, "\"orderbook.")) {
        route = 1000;
    } else if (in_head(c, "\"publicTrade.")) {
        route = 1001;
    } else if (in_head(c, "\"tickers.")) {
        route = 1002;
    } else {
        route = other(doc);
        if (route < 1000) return route;
        doc.rewind();
    }
    if (route == 1000) return book(p, c, doc);
    if (route == 1001) return trades(p, c, doc);
    return ticker(p, c, doc);
}

}  // namespace wbp
