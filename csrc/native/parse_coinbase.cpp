/* parse_coinbase.cpp: Coinbase Advanced Trade messages (workbench/feed/venues/coinbase.py).
 *
 * `_Message` is decoded whole first (every event's updates / trades / tickers, whatever the
 * channel), into the parser's reused lists; then the channel's checks and events in the
 * Python order: l2_data (snapshot brackets), market_trades (`side` is the maker's: the
 * aggressor is the other side; trade_id digits -> venue_seq), ticker / ticker_batch (BBO),
 * heartbeats (one HEARTBEAT), subscriptions / candles / status / user /
 * futures_balance_summary OTHER. sequence_num goes to seq, first_id and last_id.
 */
#include <cmath>
#include <cstring>

#include "parse_internal.h"

namespace wbp {
namespace {

constexpr double INF = HUGE_VAL;
using State = wb_parser_state;

enum { HAS_UPDATES = 1, HAS_TRADES = 2, HAS_TICKERS = 4 };

int decode_update(od::value &v, State::Level &u) {
    unsigned have = 0;
    WBP_TRY(each_field(v, [&](sv k, od::value &x) -> int {
        if (k == "side") {
            WBP_TRY(get_str(x, u.side));
            have |= 1;
        } else if (k == "price_level") {
            WBP_TRY(lax_float(x, u.price));
            have |= 2;
        } else if (k == "new_quantity") {
            WBP_TRY(lax_float(x, u.qty));
            have |= 4;
        } else {
            WBP_TRY(skip(x, 4, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    return have == 7 ? 0 : WB_BAD_SCHEMA;
}

int decode_trade(od::value &v, State::Trade &t) {
    unsigned have = 0;
    t.id = sv("");
    WBP_TRY(each_field(v, [&](sv k, od::value &x) -> int {
        if (k == "product_id") {
            WBP_TRY(get_str(x, t.symbol));
            if (t.symbol.empty()) return WB_BAD_SCHEMA;
            have |= 1;
        } else if (k == "price") {
            WBP_TRY(lax_float(x, t.price));
            have |= 2;
        } else if (k == "size") {
            WBP_TRY(lax_float(x, t.qty));
            have |= 4;
        } else if (k == "side") {
            WBP_TRY(get_str(x, t.side));
            have |= 8;
        } else if (k == "trade_id") {
            WBP_TRY(get_str(x, t.id));
        } else {
            WBP_TRY(skip(x, 4, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    return have == 15 ? 0 : WB_BAD_SCHEMA;
}

int decode_tick(od::value &v, State::Tick &t) {
    static const char *const names[4] = {"best_bid", "best_bid_quantity", "best_ask",
                                         "best_ask_quantity"};
    od::object o;
    WBP_TRY(get_object(v, o));
    bool symbol = false;
    for (int i = 0; i < 4; i++) t.has[i] = false;
    WBP_TRY(each_field(o, [&](sv k, od::value &x) -> int {
        if (k == "product_id") {
            WBP_TRY(get_str(x, t.symbol));
            if (t.symbol.empty()) return WB_BAD_SCHEMA;
            symbol = true;
            return 0;
        }
        return bbo_field(k, x, names, t.v, t.has, 4);
    }));
    return symbol ? 0 : WB_BAD_SCHEMA;
}

/* A list of structs into `list`; [*first, *last) are this occurrence's. */
template <typename T, typename F>
int decode_list(od::value &v, std::vector<T> &list, size_t *first, size_t *last, F &&decode) {
    od::array a;
    WBP_TRY(get_array(v, a));
    *first = list.size();
    WBP_TRY(each_element(a, [&](od::value &e) {
        list.emplace_back();
        return decode(e, list.back());
    }));
    *last = list.size();
    return 0;
}

int decode_event(State *p, od::value &v, State::Event &ev) {
    return each_field(v, [&](sv k, od::value &x) -> int {
        if (k == "type") {
            WBP_TRY(get_str(x, ev.type));
        } else if (k == "product_id") {
            WBP_TRY(get_str(x, ev.product));
        } else if (k == "updates") {
            WBP_TRY(decode_list(x, p->levels, &ev.u0, &ev.u1, decode_update));
            ev.lists |= HAS_UPDATES;
        } else if (k == "trades") {
            WBP_TRY(decode_list(x, p->trades, &ev.t0, &ev.t1, decode_trade));
            ev.lists |= HAS_TRADES;
        } else if (k == "tickers") {
            WBP_TRY(decode_list(x, p->ticks, &ev.k0, &ev.k1, decode_tick));
            ev.lists |= HAS_TICKERS;
        } else {
            WBP_TRY(skip(x, 2, LAX_MAX_DEPTH, false));
        }
        return 0;
    });
}

struct Message {
    sv channel, timestamp;
    int64_t seq = -1;
    bool events = false;
};

int decode_message(State *p, od::document &doc, Message &m) {
    unsigned have = 0;
    p->levels.clear();
    p->trades.clear();
    p->ticks.clear();
    p->cb_events.clear();
    WBP_TRY(each_doc_field(doc, [&](sv k, od::value &x) -> int {
        if (k == "channel") {
            WBP_TRY(get_str(x, m.channel));
            have |= 1;
        } else if (k == "sequence_num") {
            WBP_TRY(lax_int(x, m.seq, 0, INT64_MAX));
            have |= 2;
        } else if (k == "timestamp") {
            WBP_TRY(get_str(x, m.timestamp));
        } else if (k == "events") {
            od::array a;
            WBP_TRY(get_array(x, a));
            p->cb_events.clear();  // a repeated key: the last list wins
            WBP_TRY(each_element(a, [&](od::value &e) {
                p->cb_events.emplace_back();
                return decode_event(p, e, p->cb_events.back());
            }));
            m.events = true;
        } else {
            WBP_TRY(skip(x, 1, LAX_MAX_DEPTH, false));
        }
        return 0;
    }));
    if (have != 3) return WB_BAD_SCHEMA;
    return doc_at_end(doc) ? 0 : WB_BAD_JSON;
}

/* `_digits`: ASCII digits that fit uint64, else 0. */
uint64_t digits(sv s) {
    if (s.empty()) return 0;
    uint64_t v = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') return 0;
        uint64_t d = static_cast<uint64_t>(ch - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    return v;
}

int time_of(const Message &m, int64_t &ts) {
    ts = iso_ns(m.timestamp);
    return ts < 0 ? WB_BAD_SCHEMA : 0;
}

int side_kind(sv side) {
    if (side == "bid") return WB_KIND_BID_LEVEL;
    if (side == "offer" || side == "ask") return WB_KIND_ASK_LEVEL;
    return 0;
}

int l2(State *p, Ctx &c, const Message &m) {
    for (const auto &ev : p->cb_events) {
        if ((ev.type != "snapshot" && ev.type != "update") || ev.product.empty())
            return ev.product.empty() ? WB_BAD_SCHEMA : WB_BAD_UNKNOWN_TYPE;
        for (size_t i = ev.u0; i < ev.u1; i++) {
            const auto &u = p->levels[i];
            if (!(0.0 < u.price && u.price < INF)) return WB_BAD_PRICE;
            if (!(0.0 <= u.qty && u.qty < INF)) return WB_BAD_QTY;
            if (!side_kind(u.side)) return WB_BAD_SCHEMA;
        }
    }
    int64_t ts;
    WBP_TRY(time_of(m, ts));
    for (const auto &ev : p->cb_events) {
        if (p->symbol(ev.product) == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
    }
    uint64_t vseq = static_cast<uint64_t>(m.seq);
    for (const auto &ev : p->cb_events) {
        uint32_t sid = p->symbol(ev.product)->id;
        bool snap = ev.type == "snapshot";
        int flags = snap ? WB_FLAG_SNAPSHOT : 0;
        if (snap)
            c.put(ts, vseq, sid, WB_KIND_SNAPSHOT_BEGIN, WB_SIDE_NONE, WB_FLAG_SNAPSHOT, 0.0, 0.0);
        for (size_t i = ev.u0; i < ev.u1; i++) {
            const auto &u = p->levels[i];
            int kind = side_kind(u.side);
            c.put(ts, vseq, sid, kind, kind == WB_KIND_BID_LEVEL ? WB_SIDE_BUY : WB_SIDE_SELL,
                  flags, u.price, u.qty);
        }
        if (snap)
            c.put(ts, vseq, sid, WB_KIND_SNAPSHOT_END, WB_SIDE_NONE, WB_FLAG_SNAPSHOT, 0.0, 0.0);
        c.info->kind = snap ? WB_MSG_SNAPSHOT : WB_MSG_DELTA;
        c.info->symbol_id = sid;
    }
    c.info->ts_event_ns = ts;
    return 0;
}

int trades(State *p, Ctx &c, const Message &m) {
    // the events' trades in order (each event's occurrence of `trades`)
    for (const auto &ev : p->cb_events)
        for (size_t i = ev.t0; i < ev.t1; i++) {
            const auto &t = p->trades[i];
            if (!(0.0 < t.price && t.price < INF)) return WB_BAD_PRICE;
            if (!(0.0 <= t.qty && t.qty < INF)) return WB_BAD_QTY;
        }
    int64_t ts;
    WBP_TRY(time_of(m, ts));
    uint32_t sid = 0;
    bool any = false;
    for (const auto &ev : p->cb_events)
        for (size_t i = ev.t0; i < ev.t1; i++) {
            const auto &t = p->trades[i];
            Symbol *s = p->symbol(t.symbol);
            if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
            sid = s->id;
            any = true;
            c.put(ts, digits(t.id), sid, WB_KIND_TRADE,
                  t.side == "BUY" ? WB_SIDE_SELL : WB_SIDE_BUY, 0, t.price, t.qty);
        }
    if (!any) return 0;
    c.info->kind = WB_MSG_TRADE;
    c.info->symbol_id = sid;
    c.info->ts_event_ns = ts;
    return 0;
}

int tickers(State *p, Ctx &c, const Message &m) {
    for (const auto &ev : p->cb_events)
        for (size_t i = ev.k0; i < ev.k1; i++) {
            const auto &t = p->ticks[i];
            if (!(t.has[0] && t.has[2])) continue;
            if (!(0.0 < t.v[0] && t.v[0] < INF && 0.0 < t.v[2] && t.v[2] < INF))
                return WB_BAD_PRICE;
            double bq = t.has[1] ? t.v[1] : 0.0, aq = t.has[3] ? t.v[3] : 0.0;
            if (!(0.0 <= bq && bq < INF && 0.0 <= aq && aq < INF)) return WB_BAD_QTY;
        }
    int64_t ts;
    WBP_TRY(time_of(m, ts));
    uint64_t vseq = static_cast<uint64_t>(m.seq);
    uint32_t sid = 0;
    bool any = false;
    for (const auto &ev : p->cb_events)
        for (size_t i = ev.k0; i < ev.k1; i++) {
            const auto &t = p->ticks[i];
            if (!(t.has[0] && t.has[2])) continue;
            Symbol *s = p->symbol(t.symbol);
            if (s == nullptr) return WB_BAD_UNKNOWN_SYMBOL;
            sid = s->id;
            any = true;
            // `or 0.0`: an absent (None) or zero quantity is 0.0 (a -0.0 too)
            double bq = t.has[1] && t.v[1] != 0.0 ? t.v[1] : 0.0;
            double aq = t.has[3] && t.v[3] != 0.0 ? t.v[3] : 0.0;
            c.put(ts, vseq, sid, WB_KIND_BBO, WB_SIDE_BUY, 0, t.v[0], bq);
            c.put(ts, vseq, sid, WB_KIND_BBO, WB_SIDE_SELL, 0, t.v[2], aq);
        }
    if (!any) return 0;
    c.info->kind = WB_MSG_BBO;
    c.info->symbol_id = sid;
    c.info->ts_event_ns = ts;
    return 0;
}

bool other_channel(sv ch) {
    return ch == "subscriptions" || ch == "candles" || ch == "status" || ch == "user" ||
           ch == "futures_balance_summary";
}

}  // namespace

int64_t iso_ns(sv text) {
    if (text.empty()) return 0;
    // (\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z, nothing after
    const char *s = text.data();
    size_t n = text.size();
    auto num = [&](size_t at, size_t len, int64_t &out) {
        if (at + len > n) return false;
        out = 0;
        for (size_t i = at; i < at + len; i++) {
            if (s[i] < '0' || s[i] > '9') return false;
            out = out * 10 + (s[i] - '0');
        }
        return true;
    };
    int64_t y, mo, d, h, mi, se;
    if (!(num(0, 4, y) && n > 4 && s[4] == '-' && num(5, 2, mo) && n > 7 && s[7] == '-' &&
          num(8, 2, d) && n > 10 && s[10] == 'T' && num(11, 2, h) && n > 13 && s[13] == ':' &&
          num(14, 2, mi) && n > 16 && s[16] == ':' && num(17, 2, se)))
        return -1;
    size_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        size_t j = i + 1;
        while (j < n && s[j] >= '0' && s[j] <= '9') j++;
        size_t len = j - i - 1;
        if (len < 1 || len > 9) return -1;
        num(i + 1, len, frac);
        for (size_t k = len; k < 9; k++) frac *= 10;
        i = j;
    }
    if (!(i + 1 == n && s[i] == 'Z')) return -1;
    if (y < 1970 || y >= 2262) return -1;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12) return -1;
    int dim = mdays[mo - 1] + (mo == 2 && leap ? 1 : 0);
    if (d < 1 || d > dim || h > 23 || mi > 59 || se > 59) return -1;
    // days from civil (Howard Hinnant's algorithm)
    int64_t yy = mo <= 2 ? y - 1 : y;
    int64_t era = yy / 400;
    int64_t yoe = yy - era * 400;
    int64_t mp = (mo + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    __int128 ns = (static_cast<__int128>(days) * 86400 + h * 3600 + mi * 60 + se) * 1000000000 +
                  frac;
    if (ns <= 0 || ns > INT64_MAX) return -1;
    return static_cast<int64_t>(ns);
}

int parse_coinbase(wb_parser_state *p, Ctx &c, od::document &doc) {
    Message m;
    WBP_TRY(decode_message(p, doc, m));
    static const struct {
        const char *channel;
        int list;
    } lists[] = {{"l2_data", HAS_UPDATES},
                 {"market_trades", HAS_TRADES},
                 {"ticker", HAS_TICKERS},
                 {"ticker_batch", HAS_TICKERS}};
    for (const auto &l : lists)
        if (m.channel == l.channel) {
            if (p->cb_events.empty()) return WB_BAD_SCHEMA;
            for (const auto &ev : p->cb_events)
                if (!(ev.lists & l.list)) return WB_BAD_SCHEMA;
        }
    if (m.channel == "l2_data") {
        WBP_TRY(l2(p, c, m));
    } else if (m.channel == "market_trades") {
        WBP_TRY(trades(p, c, m));
    } else if (m.channel == "ticker" || m.channel == "ticker_batch") {
        WBP_TRY(tickers(p, c, m));
    } else if (m.channel == "heartbeats") {
        int64_t ts;
        WBP_TRY(time_of(m, ts));
        c.info->kind = WB_MSG_HEARTBEAT;
        c.info->ts_event_ns = ts;
        c.put(ts, static_cast<uint64_t>(m.seq), 0, WB_KIND_HEARTBEAT, WB_SIDE_NONE, 0, 0.0, 0.0);
    } else if (!other_channel(m.channel)) {
        return WB_BAD_UNKNOWN_TYPE;
    }
    c.info->seq = c.info->first_id = c.info->last_id = m.seq;
    return 0;
}

}  // namespace wbp
