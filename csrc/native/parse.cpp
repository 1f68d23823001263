/* parse.cpp: the C API of wb_parse.h, the message boundary, and what the venue parsers share.
 *
 * One raw venue message -> wb_event records, exactly as the Python normalizers
 * (workbench/feed/venues/{binance,bybit,coinbase}.py, the specification) write them: same
 * events, order and fields (ts_publish_ns 0), same `MessageInfo` (kind, symbol_id, ids, seq,
 * ts_event_ns), same accept/refuse decision and the same malformed kind, with the differences
 * listed below. One simdjson On-Demand parser per wb_parser, reused; a message is parsed in
 * place when the caller's buffer has simdjson's 64 padding bytes after it, else copied into a
 * reused padded buffer. Nothing allocates per message once the buffers have grown (symbols are
 * found in an open-addressing table over upper-cased bytes; decoded Coinbase/Bybit lists go
 * to reused vectors). Binance stream frames in their usual compact form skip simdjson: a
 * byte scanner (parse_fast.h, parse_binance_fast) accepts only input whose result it can give
 * exactly as the general path does, and hands anything else to it.
 *
 * How the Python value rules are mirrored:
 * - Book messages (Binance depthUpdate and REST bodies, Bybit orderbook) follow
 *   `_levels.parse_book`: keys read only at their documented place, compared as raw bytes,
 *   each once (a repeated one is 'schema'); ids non-negative JSON integers within int64;
 *   strings without escapes; levels `[price, qty]` as numbers or strings holding exactly one,
 *   converted by a port of `_levels._number` (bit-identical: correctly rounded up to 15
 *   significant digits and |exponent| < 23, as every venue price is); at most 62 nested
 *   containers ('depth').
 * - Everything else follows the msgspec typed structs (strict=False): keys matched decoded,
 *   the last of a repeated key wins, a float is a number or a string holding one (nan, inf,
 *   infinity in any case; out of double range is 'schema'), an int also an integral float
 *   (<= 2**53) or a string holding one, a bool also 0/1 or "true"/"false"/"1"/"0", a missing
 *   required key or a value of another type is 'schema'. Floats are converted correctly
 *   rounded (std::from_chars, as msgspec).
 * - Every value is validated, read or not (RFC 8259), as msgspec and parse_book do.
 *
 * Deliberate differences from the Python path (the fuzz test, tests/feed/test_native_fuzz.py,
 * checks the rest):
 * 1. Symbols: only symbols added with wb_parser_add_symbol are known; a message naming another
 *    is refused 'unknown_symbol' (Python registers it on first use), after every other check
 *    (where Python would have registered it).
 * 2. Invalid JSON: simdjson checks the whole input's UTF-8, string termination and control
 *    bytes before anything is read, then the rest as it reads. So for input that is not valid
 *    JSON the kind is 'json' wherever simdjson finds the fault first, while Python names the
 *    first fault it meets in reading order (e.g. a level truncated inside a quoted price is
 *    'bad_price' in `_levels`, a top-level array is 'schema' in msgspec, 'json' here). Both
 *    refuse such input, with one exception: invalid UTF-8 inside a string nobody decodes
 *    (a skipped value, a book message's strings) is accepted by msgspec and `_levels` and
 *    refused 'json' here (RFC 8259 section 8.1 requires UTF-8).
 * 3. Nesting: book messages refuse a 63rd nested container ('depth') like `_levels`; other
 *    messages refuse nesting deeper than LAX_MAX_DEPTH (960) containers, where msgspec raises
 *    RecursionError at Python's recursion limit (1000) minus the stack under it: between the
 *    two the kinds differ.
 * 4. NO_ROOM: events are written while they fit `cap`; a call returning WB_PARSE_NO_ROOM or
 *    refusing a message may have written rows it does not count (scratch: only the returned
 *    count is valid).
 */
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <charconv>
#include <cstring>
#include <new>

#include "parse_internal.h"
#include "wb_parse.h"

struct wb_parser : public wbp::wb_parser_state {
    explicit wb_parser(int v) : wb_parser_state(v) {}
};

namespace wbp {

/* ---- symbols -------------------------------------------------------------------------------- */
static inline unsigned char upper(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') ? static_cast<unsigned char>(ch - 32) : ch;
}

static inline uint64_t symbol_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= upper(static_cast<unsigned char>(s[i]));
        h *= 1099511628211ull;
    }
    return h;
}

SymbolTable::SymbolTable() : slots_(64) {}

Symbol *SymbolTable::find(const char *s, size_t n) {
    if (n == 0 || n > MAX_SYMBOL) return nullptr;
    if (n == last_len_ && std::memcmp(s, last_raw_, n) == 0) return last_;
    size_t mask = slots_.size() - 1;
    for (size_t i = symbol_hash(s, n) & mask;; i = (i + 1) & mask) {
        Symbol &e = slots_[i];
        if (e.id == 0) return nullptr;
        if (e.len == n) {
            size_t j = 0;
            while (j < n && static_cast<unsigned char>(e.key[j]) ==
                                upper(static_cast<unsigned char>(s[j])))
                j++;
            if (j == n) {
                std::memcpy(last_raw_, s, n);
                last_len_ = n;
                last_ = &e;
                return &e;
            }
        }
    }
}

bool SymbolTable::add(const char *s, size_t n, uint32_t id) {
    if (n == 0 || n > MAX_SYMBOL || id == 0) return false;
    last_len_ = 0;  // slots move when the table grows
    Symbol *found = find(s, n);
    if (found != nullptr) {
        found->id = id;
        return true;
    }
    if (2 * (used_ + 1) > slots_.size()) {  // keep the load under 1/2
        std::vector<Symbol> old(slots_.size() * 2);
        old.swap(slots_);
        used_ = 0;
        for (const Symbol &e : old)
            if (e.id != 0) {
                size_t mask = slots_.size() - 1;
                size_t i = symbol_hash(e.key, e.len) & mask;
                while (slots_[i].id != 0) i = (i + 1) & mask;
                slots_[i] = e;
                used_++;
            }
    }
    size_t mask = slots_.size() - 1;
    size_t i = symbol_hash(s, n) & mask;
    while (slots_[i].id != 0) i = (i + 1) & mask;
    Symbol &e = slots_[i];
    for (size_t j = 0; j < n; j++) e.key[j] = static_cast<char>(upper(static_cast<unsigned char>(s[j])));
    e.len = static_cast<uint32_t>(n);
    e.id = id;
    used_++;
    return true;
}

wb_parser_state::wb_parser_state(int v) : venue(v) {}

/* ---- value readers -------------------------------------------------------------------------- */
int err_kind(simdjson::error_code e) {
    if (e == simdjson::DEPTH_ERROR) return WB_BAD_DEPTH;
    if (e == simdjson::MEMALLOC) return WB_BAD_MEMORY;
    return WB_BAD_JSON;
}

static inline bool digit(char ch) { return ch >= '0' && ch <= '9'; }
static inline bool space(char ch) { return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t'; }

long number_end(const char *p, long i, long n) {
    if (i < n && p[i] == '-') i++;
    if (i >= n || !digit(p[i])) return -1;
    if (p[i] == '0') {
        i++;
    } else {
        while (i < n && digit(p[i])) i++;
    }
    if (i < n && p[i] == '.') {
        i++;
        if (i >= n || !digit(p[i])) return -1;
        while (i < n && digit(p[i])) i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '-' || p[i] == '+')) i++;
        if (i >= n || !digit(p[i])) return -1;
        while (i < n && digit(p[i])) i++;
    }
    return i;
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
constexpr int MAX_DIGITS = 18;
constexpr int MAX_EXP = 400;

double level_number(const char *p, long i, long n, long *end, bool *ok) {
    bool neg = false;
    *ok = false;
    if (i < n && p[i] == '-') {
        neg = true;
        i++;
    }
    *end = i;
    if (i >= n || !digit(p[i])) return 0.0;
    int64_t mant = 0;
    int digits = 0;
    long exp = 0;
    if (p[i] == '0') {
        i++;
        if (i < n && digit(p[i])) {
            *end = i;
            return 0.0;
        }
    } else {
        while (i < n && digit(p[i])) {
            if (digits == MAX_DIGITS) {
                *end = i;
                return 0.0;
            }
            mant = mant * 10 + (p[i] - '0');
            digits++;
            i++;
        }
    }
    if (i < n && p[i] == '.') {
        i++;
        if (i >= n || !digit(p[i])) {
            *end = i;
            return 0.0;
        }
        while (i < n && digit(p[i])) {
            if (digits < MAX_DIGITS) {
                mant = mant * 10 + (p[i] - '0');
                if (mant) digits++;
                exp--;
            }
            i++;
        }
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        bool eneg = false;
        if (i < n && (p[i] == '-' || p[i] == '+')) {
            eneg = p[i] == '-';
            i++;
        }
        if (i >= n || !digit(p[i])) {
            *end = i;
            return 0.0;
        }
        long e = 0;
        while (i < n && digit(p[i])) {
            if (e < MAX_EXP) e = e * 10 + (p[i] - '0');
            i++;
        }
        e = std::min(e, static_cast<long>(MAX_EXP));
        exp += eneg ? -e : e;
    }
    double value = static_cast<double>(mant);
    if (mant == 0) {
        value = 0.0;
    } else if (exp < 0) {
        value = -exp < 23 ? value / POW10[-exp] : value * std::pow(10.0, static_cast<double>(exp));
    } else if (exp > 0) {
        value = exp < 23 ? value * POW10[exp] : value * std::pow(10.0, static_cast<double>(exp));
    }
    *end = i;
    *ok = true;
    return neg ? -value : value;
}

int token(od::value &v, sv &out) {
    out = v.raw_json_token();
    while (!out.empty() && space(out.back())) out.remove_suffix(1);
    if (out.empty()) return WB_BAD_JSON;
    return 0;
}

static inline bool hex(char ch) {
    return digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

const char *string_end(const char *p, bool *escaped, bool *valid) {
    *escaped = false;
    *valid = true;
    p++;
    for (;;) {
        char ch = *p;
        if (ch == '"') return p + 1;
        if (ch == '\\') {
            *escaped = true;
            char e = p[1];
            if (e == 'u') {
                for (int j = 2; j < 6; j++)
                    if (!hex(p[j])) {
                        *valid = false;
                        return p;
                    }
                p += 6;
                continue;
            }
            if (!(e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                  e == 'r' || e == 't')) {
                *valid = false;
                return p;
            }
            p += 2;
            continue;
        }
        p++;
    }
}

int key_of(od::field &f, sv &key) {
    const char *start = f.key().raw();
    bool escaped, valid;
    const char *end = string_end(start - 1, &escaped, &valid);
    if (!escaped) {
        key = sv(start, static_cast<size_t>(end - 1 - start));
        return 0;
    }
    if (f.unescaped_key().get(key)) return WB_BAD_JSON;
    return 0;
}

int skip(od::value v, int depth, int limit, bool book) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    sv tok;
    switch (t) {
        case od::json_type::object: {
            if (depth >= limit) return WB_BAD_DEPTH;
            od::object o;
            if (v.get_object().get(o)) return WB_BAD_JSON;
            for (auto fr : o) {
                od::field f;
                if (std::move(fr).get(f)) return WB_BAD_JSON;
                if (book) {
                    bool escaped, valid;
                    string_end(f.key().raw() - 1, &escaped, &valid);
                    if (!valid) return WB_BAD_JSON;
                } else {
                    sv k;
                    WBP_TRY(key_of(f, k));
                }
                WBP_TRY(skip(f.value(), depth + 1, limit, book));
            }
            return 0;
        }
        case od::json_type::array: {
            if (depth >= limit) return WB_BAD_DEPTH;
            od::array a;
            if (v.get_array().get(a)) return WB_BAD_JSON;
            return each_element(a, [&](od::value &e) { return skip(e, depth + 1, limit, book); });
        }
        case od::json_type::string: {
            if (book) {
                WBP_TRY(token(v, tok));
                bool escaped, valid;
                string_end(tok.data(), &escaped, &valid);
                return valid ? 0 : WB_BAD_JSON;
            }
            sv s;
            return v.get_string().get(s) ? WB_BAD_JSON : 0;
        }
        case od::json_type::number:
            WBP_TRY(token(v, tok));
            return number_end(tok.data(), 0, static_cast<long>(tok.size())) ==
                           static_cast<long>(tok.size())
                       ? 0
                       : WB_BAD_JSON;
        case od::json_type::boolean:
            WBP_TRY(token(v, tok));
            return (tok == "true" || tok == "false") ? 0 : WB_BAD_JSON;
        case od::json_type::null:
            WBP_TRY(token(v, tok));
            return tok == "null" ? 0 : WB_BAD_JSON;
    }
    return WB_BAD_JSON;
}

int get_str(od::value &v, sv &out) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    if (t != od::json_type::string) return WB_BAD_SCHEMA;
    return v.get_string().get(out) ? WB_BAD_JSON : 0;
}

int get_object(od::value &v, od::object &out) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    if (t != od::json_type::object) return WB_BAD_SCHEMA;
    return v.get_object().get(out) ? WB_BAD_JSON : 0;
}

int get_array(od::value &v, od::array &out) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    if (t != od::json_type::array) return WB_BAD_SCHEMA;
    return v.get_array().get(out) ? WB_BAD_JSON : 0;
}

int bbo_field(sv key, od::value &x, const char *const names[4], double v[4], bool has[4],
              int depth) {
    int i = 0;
    while (i < 4 && key != names[i]) i++;
    if (i == 4) return skip(x, depth, LAX_MAX_DEPTH, false);
    bool null;
    WBP_TRY(lax_float(x, v[i], true, &null));
    has[i] = !null;
    return 0;
}

static bool ieq(sv a, const char *b) {
    size_t n = std::strlen(b);
    if (a.size() != n) return false;
    for (size_t i = 0; i < n; i++)
        if (upper(static_cast<unsigned char>(a[i])) != upper(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

/* A JSON number's text -> double, correctly rounded; false when out of double range
 * (underflow gives a signed zero, as msgspec). */
static bool to_double(sv text, double &out) {
    auto r = std::from_chars(text.data(), text.data() + text.size(), out,
                             std::chars_format::general);
    if (r.ec == std::errc::result_out_of_range) {
        // from_chars leaves `out` alone: tell overflow from underflow by the exponent sign
        const char *e = static_cast<const char *>(std::memchr(text.data(), 'e', text.size()));
        if (e == nullptr) e = static_cast<const char *>(std::memchr(text.data(), 'E', text.size()));
        bool tiny = e != nullptr && e + 1 < text.data() + text.size() && e[1] == '-';
        if (!tiny) return false;
        out = text[0] == '-' ? -0.0 : 0.0;
        return true;
    }
    return r.ec == std::errc();
}

/* The content of a string value, decoded when it has escapes. */
static int string_content(od::value &v, sv &out) {
    sv tok;
    WBP_TRY(token(v, tok));
    bool escaped, valid;
    const char *end = string_end(tok.data(), &escaped, &valid);
    if (!escaped) {
        out = sv(tok.data() + 1, static_cast<size_t>(end - tok.data() - 2));
        return 0;
    }
    return v.get_string().get(out) ? WB_BAD_JSON : 0;
}

/* A float from JSON number text as msgspec reads it: an integer (no fraction, no exponent)
 * goes through int, so "-0" is +0.0. */
static bool float_text(sv text, double &out) {
    if (!to_double(text, out)) return false;
    if (out == 0.0 && text.find_first_of(".eE") == sv::npos) out = 0.0;
    return true;
}

static inline bool is_number_text(sv s) {
    return !s.empty() && number_end(s.data(), 0, static_cast<long>(s.size())) ==
                             static_cast<long>(s.size());
}

int lax_float(od::value &v, double &out, bool nullable, bool *is_null) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    if (is_null) *is_null = false;
    sv text;
    if (t == od::json_type::number) {
        WBP_TRY(token(v, text));
        if (!is_number_text(text)) return WB_BAD_JSON;
        return float_text(text, out) ? 0 : WB_BAD_SCHEMA;
    }
    if (t == od::json_type::null) {
        WBP_TRY(token(v, text));
        if (text != "null") return WB_BAD_JSON;
        if (!nullable) return WB_BAD_SCHEMA;
        *is_null = true;
        return 0;
    }
    if (t != od::json_type::string) return WB_BAD_SCHEMA;
    WBP_TRY(string_content(v, text));
    if (nullable && ieq(text, "null")) {
        *is_null = true;
        return 0;
    }
    if (is_number_text(text)) return float_text(text, out) ? 0 : WB_BAD_SCHEMA;
    sv word = text;
    bool neg = !word.empty() && word[0] == '-';
    if (neg) word.remove_prefix(1);
    if (ieq(word, "nan")) {
        out = std::nan("");
        return 0;
    }
    if (ieq(word, "inf") || ieq(word, "infinity")) {
        out = neg ? -HUGE_VAL : HUGE_VAL;
        return 0;
    }
    return WB_BAD_SCHEMA;
}

/* An integer from JSON number text (msgspec lax): an integer token, or an integral float up
 * to 2**53. Returns false when it is not one; `big` when an integer token overflows int64. */
static bool text_int(sv text, int64_t &out, bool &big) {
    big = false;
    bool integer = text.find_first_of(".eE") == sv::npos;
    if (integer) {
        size_t i = text[0] == '-' ? 1 : 0;
        bool neg = i == 1;
        uint64_t acc = 0;
        for (; i < text.size(); i++) {
            uint64_t d = static_cast<uint64_t>(text[i] - '0');
            if (acc > (UINT64_MAX - d) / 10) {
                big = true;
                return true;
            }
            acc = acc * 10 + d;
        }
        if (neg) {
            if (acc > static_cast<uint64_t>(INT64_MAX) + 1) {
                big = true;
                return true;
            }
            out = acc == 0 ? 0 : static_cast<int64_t>(0 - acc);
        } else {
            if (acc > static_cast<uint64_t>(INT64_MAX)) {
                big = true;
                return true;
            }
            out = static_cast<int64_t>(acc);
        }
        return true;
    }
    double d;
    if (!to_double(text, d)) return false;
    if (!(std::fabs(d) <= 9007199254740992.0) || d != std::floor(d)) return false;
    out = static_cast<int64_t>(d);
    return true;
}

int lax_int(od::value &v, int64_t &out, int64_t lo, int64_t hi) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    sv text;
    if (t == od::json_type::number) {
        WBP_TRY(token(v, text));
        if (!is_number_text(text)) return WB_BAD_JSON;
    } else if (t == od::json_type::string) {
        WBP_TRY(string_content(v, text));
        if (!is_number_text(text)) return WB_BAD_SCHEMA;
    } else {
        if (t == od::json_type::null || t == od::json_type::boolean) {
            WBP_TRY(token(v, text));
            if (text != "null" && text != "true" && text != "false") return WB_BAD_JSON;
        }
        return WB_BAD_SCHEMA;
    }
    bool big;
    if (!text_int(text, out, big) || big) return WB_BAD_SCHEMA;
    return (out >= lo && out <= hi) ? 0 : WB_BAD_SCHEMA;
}

/* msgspec's lax bool of a number text: the integers 0 and 1 (-0 too), nothing else. */
static bool bool_text(sv text, bool &out) {
    if (!is_number_text(text) || text.find_first_of(".eE") != sv::npos) return false;
    sv digits = text[0] == '-' ? text.substr(1) : text;
    if (digits == "1" && text[0] != '-') {
        out = true;
        return true;
    }
    if (digits == "0") {
        out = false;
        return true;
    }
    return false;
}

int lax_bool(od::value &v, bool &out) {
    od::json_type t;
    if (v.type().get(t)) return WB_BAD_JSON;
    sv text;
    if (t == od::json_type::boolean || t == od::json_type::null) {
        WBP_TRY(token(v, text));
        if (text == "true" || text == "false") {
            out = text == "true";
            return 0;
        }
        return text == "null" ? WB_BAD_SCHEMA : WB_BAD_JSON;
    }
    if (t == od::json_type::number) {
        WBP_TRY(token(v, text));
        if (!is_number_text(text)) return WB_BAD_JSON;
        return bool_text(text, out) ? 0 : WB_BAD_SCHEMA;
    }
    if (t != od::json_type::string) return WB_BAD_SCHEMA;
    WBP_TRY(string_content(v, text));
    if (ieq(text, "true") || ieq(text, "false")) {
        out = ieq(text, "true");
        return 0;
    }
    return bool_text(text, out) ? 0 : WB_BAD_SCHEMA;
}

/* ---- books (_levels.parse_book) --------------------------------------------------------------- */
namespace {

enum Action { SKIP, INT, STR, LEVELS, ENTER };
enum Slot { H_E, H_T, H_U, H_u, H_pu, H_LUI, H_ts, H_cts, H_seq, H_s, H_e, H_TYPE, H_TOPIC,
            H_STREAM, H_DATA };

struct KeyAction {
    Action action;
    int slot;  // a Slot, or the SIDE_* bit of a level array
};

inline bool key_is(sv k, const char *name) { return k == name; }

KeyAction book_key(sv k, bool bybit) {
    if (k.size() == 1) {
        switch (k[0]) {
            case 'b': return {LEVELS, static_cast<int>(SIDE_B)};
            case 'a': return {LEVELS, static_cast<int>(SIDE_A)};
            case 'u': return {INT, H_u};
            case 's': return {STR, H_s};
            default: break;
        }
        if (bybit) return {SKIP, 0};
        switch (k[0]) {
            case 'U': return {INT, H_U};
            case 'E': return {INT, H_E};
            case 'T': return {INT, H_T};
            case 'e': return {STR, H_e};
            default: return {SKIP, 0};
        }
    }
    if (bybit) return key_is(k, "seq") ? KeyAction{INT, H_seq} : KeyAction{SKIP, 0};
    if (key_is(k, "pu")) return {INT, H_pu};
    if (key_is(k, "bids")) return {LEVELS, static_cast<int>(SIDE_BIDS)};
    if (key_is(k, "asks")) return {LEVELS, static_cast<int>(SIDE_ASKS)};
    if (key_is(k, "lastUpdateId")) return {INT, H_LUI};
    return {SKIP, 0};
}

KeyAction top_key(sv k, bool bybit) {
    if (key_is(k, "data")) return {ENTER, H_DATA};
    if (bybit) {
        if (key_is(k, "topic")) return {STR, H_TOPIC};
        if (key_is(k, "type")) return {STR, H_TYPE};
        if (key_is(k, "ts")) return {INT, H_ts};
        if (key_is(k, "cts")) return {INT, H_cts};
        return {SKIP, 0};
    }
    if (key_is(k, "stream")) return {STR, H_STREAM};
    return {SKIP, 0};
}

/* `_levels._int`: a non-negative JSON integer within int64 at the start of `t`: its value and
 * end, or -1. */
int64_t book_int(sv t, size_t *end) {
    size_t n = t.size();
    if (n == 0 || !digit(t[0])) return -1;
    int64_t v = 0;
    size_t j = 1;
    if (t[0] != '0') {
        j = 0;
        int digits = 0;
        while (j < n && digit(t[j])) {
            int64_t d = t[j] - '0';
            digits++;
            if (digits > MAX_DIGITS && (digits > MAX_DIGITS + 1 || v > (INT64_MAX - d) / 10))
                return -1;
            v = v * 10 + d;
            j++;
        }
    }
    if (j < n && (t[j] == '.' || t[j] == 'e' || t[j] == 'E' || digit(t[j]))) return -1;
    *end = j;
    return v;
}

int64_t *int_slot(BookHead &h, int slot) {
    switch (slot) {
        case H_E: return &h.E;
        case H_T: return &h.T;
        case H_U: return &h.U;
        case H_u: return &h.u;
        case H_pu: return &h.pu;
        case H_LUI: return &h.last_update_id;
        case H_ts: return &h.ts;
        case H_cts: return &h.cts;
        default: return &h.seq;
    }
}

sv *str_slot(BookHead &h, int slot) {
    switch (slot) {
        case H_s: return &h.s;
        case H_e: return &h.e;
        case H_TYPE: return &h.type;
        case H_TOPIC: return &h.topic;
        default: return &h.stream;
    }
}

/* `_levels._level_array`: [[price, qty], ...] -> level events (kind and side set). */
int level_array(Ctx &c, od::value &v, int kind, int side) {
    od::array arr;
    if (v.get_array().get(arr)) return WB_BAD_JSON;
    for (auto er : arr) {
        od::value lv;
        if (std::move(er).get(lv)) return WB_BAD_JSON;
        sv lt;
        WBP_TRY(token(lv, lt));
        if (lt[0] != '[') return WB_BAD_SCHEMA;
        od::array la;
        if (lv.get_array().get(la)) return WB_BAD_JSON;
        int idx = 0;
        double price = 0.0;
        for (auto ir : la) {
            od::value x;
            if (std::move(ir).get(x)) return WB_BAD_JSON;
            if (idx == 2) return WB_BAD_SCHEMA;  // more than two values
            sv xt;
            WBP_TRY(token(x, xt));
            long n = static_cast<long>(xt.size()), j;
            bool ok;
            double value;
            if (xt[0] == '"') {
                value = level_number(xt.data(), 1, n, &j, &ok);
                ok = ok && j < n && xt[j] == '"';
                j++;
            } else if (xt[0] == '-' || digit(xt[0])) {
                value = level_number(xt.data(), 0, n, &j, &ok);
            } else {
                return WB_BAD_SCHEMA;
            }
            if (idx == 0) {
                if (!ok || !(value > 0.0) || value == HUGE_VAL) return WB_BAD_PRICE;
                price = value;
            } else {
                if (!ok || !(value >= 0.0) || value == HUGE_VAL) return WB_BAD_QTY;
                c.put(0, 0, 0, kind, side, 0, price, value);
            }
            if (j != n) return WB_BAD_SCHEMA;  // more after the number: `[1x` ...
            idx++;
        }
        if (idx < 2) return WB_BAD_SCHEMA;  // `[]` or `[price]`
    }
    return 0;
}

int book_object(wb_parser_state *p, Ctx &c, od::object &o, int depth, bool top, bool bybit,
                BookHead &h, uint64_t &seen);

int book_value(wb_parser_state *p, Ctx &c, od::value v, KeyAction a, int depth, bool bybit,
               BookHead &h, uint64_t &seen) {
    if (a.action == SKIP) return skip(v, depth, BOOK_MAX_DEPTH, true);
    uint64_t bit = 1ull << (a.action == LEVELS ? 24 + a.slot : a.slot);
    if (seen & bit) return WB_BAD_SCHEMA;
    seen |= bit;
    sv t;
    WBP_TRY(token(v, t));
    switch (a.action) {
        case LEVELS: {
            if (t[0] != '[') return WB_BAD_SCHEMA;
            bool bid = a.slot & (SIDE_B | SIDE_BIDS);
            WBP_TRY(level_array(c, v, bid ? WB_KIND_BID_LEVEL : WB_KIND_ASK_LEVEL,
                                bid ? WB_SIDE_BUY : WB_SIDE_SELL));
            h.sides |= static_cast<unsigned>(a.slot);
            return 0;
        }
        case INT: {
            size_t end = 0;
            int64_t value = book_int(t, &end);
            if (value < 0) {
                bool value_start = std::strchr("\"[ftn{", t[0]) != nullptr ||
                                   number_end(t.data(), 0, static_cast<long>(t.size())) >= 0;
                return value_start ? WB_BAD_SCHEMA : WB_BAD_JSON;
            }
            if (end != t.size()) return WB_BAD_JSON;
            *int_slot(h, a.slot) = value;
            return 0;
        }
        case STR: {
            if (t[0] != '"') return WB_BAD_SCHEMA;
            bool escaped, valid;
            const char *end = string_end(t.data(), &escaped, &valid);
            if (!valid) return WB_BAD_JSON;
            if (escaped) return WB_BAD_SCHEMA;
            *str_slot(h, a.slot) = sv(t.data() + 1, static_cast<size_t>(end - t.data() - 2));
            return 0;
        }
        default: {  // ENTER: the book object under "data"
            if (t[0] != '{') return WB_BAD_SCHEMA;
            od::object o;
            if (v.get_object().get(o)) return WB_BAD_JSON;
            return book_object(p, c, o, depth + 1, false, bybit, h, seen);
        }
    }
}

int book_object(wb_parser_state *p, Ctx &c, od::object &o, int depth, bool top, bool bybit,
                BookHead &h, uint64_t &seen) {
    for (auto fr : o) {
        od::field f;
        if (std::move(fr).get(f)) return WB_BAD_JSON;
        const char *start = f.key().raw();
        bool escaped, valid;
        const char *end = string_end(start - 1, &escaped, &valid);
        if (!valid) return WB_BAD_JSON;
        sv k(start, static_cast<size_t>(end - 1 - start));
        KeyAction a = top ? top_key(k, bybit) : book_key(k, bybit);
        WBP_TRY(book_value(p, c, f.value(), a, depth, bybit, h, seen));
    }
    return 0;
}

}  // namespace

int read_book(wb_parser_state *p, Ctx &c, od::document &doc, bool in_data, bool bybit,
              BookHead &head) {
    od::json_type t;
    if (doc.type().get(t)) return WB_BAD_JSON;
    uint64_t seen = 0;
    if (t == od::json_type::array) {  // no keys: validated only
        od::array a;
        if (doc.get_array().get(a)) return WB_BAD_JSON;
        WBP_TRY(each_element(a, [](od::value &e) { return skip(e, 1, BOOK_MAX_DEPTH, true); }));
    } else if (t == od::json_type::object) {
        od::object o;
        if (doc.get_object().get(o)) return WB_BAD_JSON;
        WBP_TRY(book_object(p, c, o, 1, in_data, bybit, head, seen));
    } else {
        return WB_BAD_JSON;  // parse_book: the message must be an object
    }
    return doc_at_end(doc) ? 0 : WB_BAD_JSON;
}

void book_events(Ctx &c, uint64_t first, bool snapshot, int64_t ts, uint64_t venue_seq,
                 uint32_t sid) {
    uint64_t k = c.n - first;
    uint64_t row = first;
    if (snapshot) {
        if (first + k + 2 <= c.cap)
            std::memmove(c.out + first + 1, c.out + first, k * sizeof(wb_event));
        c.n = first;
        c.put(ts, venue_seq, sid, WB_KIND_SNAPSHOT_BEGIN, WB_SIDE_NONE, WB_FLAG_SNAPSHOT, 0.0,
              0.0);
        row = first + 1;
        c.n = row + k;
    }
    uint64_t stop = std::min(row + k, c.cap);
    for (uint64_t r = row; r < stop; r++) {
        wb_event &e = c.out[r];
        e.ts_event_ns = ts;
        e.ts_recv_ns = c.recv_ns;
        e.ts_publish_ns = 0;
        e.venue_seq = venue_seq;
        e.symbol_id = sid;
        e.flags = snapshot ? WB_FLAG_SNAPSHOT : 0;
    }
    if (snapshot)
        c.put(ts, venue_seq, sid, WB_KIND_SNAPSHOT_END, WB_SIDE_NONE, WB_FLAG_SNAPSHOT, 0.0, 0.0);
}

}  // namespace wbp

/* ---- C API ------------------------------------------------------------------------------------ */
using namespace wbp;

static void reset_info(wb_msg_info *info) {
    info->kind = WB_MSG_OTHER;
    info->bad = WB_BAD_NONE;
    info->symbol_id = 0;
    info->n_events = 0;
    info->first_id = -1;
    info->last_id = -1;
    info->prev_id = -1;
    info->seq = -1;
    info->ts_event_ns = 0;
}

/* One message through the boundary: nothing escapes. rest_symbol: a REST body's symbol. */
static int64_t run(wb_parser *p, const char *msg, size_t len, size_t capacity, int64_t recv_ns,
                   const char *rest_symbol, wb_event *out, uint64_t cap, wb_msg_info *info) {
    reset_info(info);
    Ctx c{out, cap, 0, recv_ns, info, msg, len};
    int bad = FAST_FALLBACK;
    if (rest_symbol == nullptr && p->venue <= WB_VENUE_BINANCE_COINM)
        bad = parse_binance_fast(p, c);
    if (bad == FAST_FALLBACK) try {  // the general path
        if (capacity < len + simdjson::SIMDJSON_PADDING) {
            if (p->padded.size() < len + simdjson::SIMDJSON_PADDING) p->padded.resize(len + simdjson::SIMDJSON_PADDING);
            if (len) std::memcpy(p->padded.data(), msg, len);
            c.msg = p->padded.data();
            capacity = p->padded.size();
        }
        od::document doc;
        auto err = p->parser.iterate(c.msg, len, capacity).get(doc);
        if (err) {
            bad = err_kind(err);
        } else if (rest_symbol != nullptr && p->venue > WB_VENUE_BINANCE_COINM) {
            bad = WB_BAD_UNKNOWN_TYPE;
        } else {
            switch (p->venue) {
                case WB_VENUE_BINANCE_SPOT:
                case WB_VENUE_BINANCE_USDM:
                case WB_VENUE_BINANCE_COINM: bad = parse_binance(p, c, doc, rest_symbol); break;
                case WB_VENUE_COINBASE: bad = parse_coinbase(p, c, doc); break;
                default: bad = parse_bybit(p, c, doc); break;
            }
        }
    } catch (const std::bad_alloc &) {
        bad = WB_BAD_MEMORY;
    } catch (...) {
        bad = WB_BAD_INTERNAL;
    }
    if (!bad && c.n > cap) {
        info->n_events = static_cast<uint32_t>(std::min<uint64_t>(c.n, UINT32_MAX));
        return WB_PARSE_NO_ROOM;
    }
    uint64_t seq = ++p->messages;
    if (bad) {
        p->bad[bad]++;
        reset_info(info);
        info->kind = WB_MSG_MALFORMED;
        info->bad = bad;
        return 0;
    }
    for (uint64_t i = 0; i < c.n; i++) out[i].seq = seq;
    if (c.n) out[c.n - 1].flags |= WB_FLAG_LAST_IN_MSG;
    p->events += c.n;
    info->n_events = static_cast<uint32_t>(c.n);
    return static_cast<int64_t>(c.n);
}

extern "C" {

wb_parser *wb_parser_new(int venue) {
    if (venue < WB_VENUE_BINANCE_SPOT || venue > WB_VENUE_COINBASE) return nullptr;
    try {
        wb_parser *p = new wb_parser(venue);
        if (p->parser.allocate(1 << 16, 1024)) {
            delete p;
            return nullptr;
        }
        return p;
    } catch (...) {
        return nullptr;
    }
}

void wb_parser_free(wb_parser *p) { delete p; }

int wb_parser_add_symbol(wb_parser *p, const char *symbol, uint32_t symbol_id) {
    if (p == nullptr || symbol == nullptr || symbol_id == 0) return -1;
    try {
        return p->symbols.add(symbol, std::strlen(symbol), symbol_id) ? 0 : -1;
    } catch (...) {
        return -1;
    }
}

int wb_parser_default_symbol(wb_parser *p, const char *symbol) {
    if (p == nullptr || symbol == nullptr || p->venue > WB_VENUE_BINANCE_COINM) return -1;
    Symbol *s = p->symbols.find(symbol, std::strlen(symbol));
    if (s == nullptr) return -1;
    p->default_sid = s->id;
    return 0;
}

int64_t wb_parser_parse(wb_parser *p, const char *msg, size_t len, size_t capacity,
                        int64_t recv_ns, wb_event *out, uint64_t cap, wb_msg_info *info) {
    return run(p, msg, len, capacity, recv_ns, nullptr, out, cap, info);
}

int64_t wb_parser_snapshot(wb_parser *p, const char *body, size_t len, size_t capacity,
                           int64_t recv_ns, const char *symbol, wb_event *out, uint64_t cap,
                           wb_msg_info *info) {
    return run(p, body, len, capacity, recv_ns, symbol != nullptr ? symbol : "", out, cap,
               info);
}

int64_t wb_parser_parse_many(wb_parser *p, const char *buf, size_t size,
                             const uint64_t *offsets, uint64_t n, const int64_t *recv_ns,
                             wb_event *out, uint64_t cap, uint64_t *ends, wb_msg_info *infos) {
    uint64_t total = 0;
    wb_msg_info local;
    for (uint64_t i = 0; i < n; i++) {
        wb_msg_info *info = infos != nullptr ? infos + i : &local;
        uint64_t start = offsets[i];
        int64_t got = run(p, buf + start, offsets[i + 1] - start, size - start, recv_ns[i],
                          nullptr, out + total, cap - total, info);
        if (got == WB_PARSE_NO_ROOM) return static_cast<int64_t>(i);
        total += static_cast<uint64_t>(got);
        ends[i] = total;
    }
    return static_cast<int64_t>(n);
}

void wb_parser_counters(const wb_parser *p, uint64_t *messages, uint64_t *events,
                        uint64_t *out_bad) {
    *messages = p->messages;
    *events = p->events;
    for (int i = 0; i < WB_BAD_COUNT; i++) out_bad[i] = p->bad[i];
}

}  // extern "C"
