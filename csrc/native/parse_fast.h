/* parse_fast.h: a byte scanner for the fast paths of the venue parsers (parse_binance.cpp).
 *
 * A fast path reads a message in its venues' usual, compact form straight from its bytes
 * (no simdjson pass) and accepts only a strict subset of JSON whose every value it can decode
 * exactly as the general (simdjson) path does: no whitespace, strings of printable ASCII
 * without escapes, unsigned numbers without exponent. On anything else a reader returns false
 * and the caller falls back to the general path, which then decides (accept or refuse) as
 * before. So both paths give identical results for every message the fast path accepts.
 * The readers never read past `end` (no padding needed).
 */
#ifndef WB_PARSE_FAST_H
#define WB_PARSE_FAST_H

#include <cstdint>
#include <cstring>
#include <string_view>

namespace wbp {
namespace fast {

/* Where the scan is: [p, end) is left to read. */
struct Cur {
    const char *p;
    const char *end;

    bool more() const { return p < end; }
    /* The byte ch is next: consume it. */
    bool eat(char ch) {
        if (p < end && *p == ch) {
            p++;
            return true;
        }
        return false;
    }
    /* The bytes s[0..n) are next: consume them. */
    bool lit(const char *s, size_t n) {
        if (static_cast<size_t>(end - p) < n || std::memcmp(p, s, n) != 0) return false;
        p += n;
        return true;
    }
};

inline bool digit(char ch) { return static_cast<unsigned char>(ch - '0') < 10; }

/* Bytes a fast string may hold: printable ASCII but '"' and '\\'. */
struct Plain {
    bool ok[256] = {};
    constexpr Plain() {
        for (int ch = 0x20; ch < 0x7f; ch++) ok[ch] = ch != '"' && ch != '\\';
    }
};
constexpr Plain PLAIN{};

/* 8 bytes at p (p[0] the low byte: little-endian, as x86-64 and aarch64 Linux). */
inline uint64_t load8(const char *p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
}

constexpr uint64_t ONES = 0x0101010101010101ull;
constexpr uint64_t HIGHS = 0x8080808080808080ull;

/* High bit of each byte of w that is zero (exact). */
inline uint64_t zero_bytes(uint64_t w) { return ~((((w & ~HIGHS) + ~HIGHS) | w) | ~HIGHS); }

/* A string of printable ASCII without escapes at p (its opening quote): its content. Eight
 * bytes at a time while they are all plain. */
inline bool str(Cur &c, std::string_view &out) {
    if (!c.eat('"')) return false;
    const char *s = c.p;
    const char *q = s;
    while (c.end - q >= 8) {
        uint64_t w = load8(q);
        uint64_t stops = zero_bytes(w ^ ('"' * ONES)) | zero_bytes(w ^ ('\\' * ONES)) |
                         zero_bytes(w & (0xe0 * ONES)) | zero_bytes(w ^ (0x7f * ONES)) |
                         (w & HIGHS);  // '"', '\\', < 0x20, DEL, >= 0x80
        if (stops) break;
        q += 8;
    }
    while (q < c.end && PLAIN.ok[static_cast<unsigned char>(*q)]) q++;
    if (q >= c.end || *q != '"') return false;
    out = std::string_view(s, static_cast<size_t>(q - s));
    c.p = q + 1;
    return true;
}

/* A key: its string and the ':' after it (a one-byte key, the usual, read directly). */
inline bool key(Cur &c, std::string_view &out) {
    const char *q = c.p;
    if (c.end - q >= 4 && q[0] == '"' && q[2] == '"' && q[3] == ':' &&
        PLAIN.ok[static_cast<unsigned char>(q[1])]) {
        out = std::string_view(q + 1, 1);
        c.p = q + 4;
        return true;
    }
    return str(c, out) && c.eat(':');
}

/* Digit loops need no bound: the message's last byte, before `end`, is a '}' (the entry
 * point checks it), so a run of digits stops before `end`. */

/* High bit of each byte of w that is not an ASCII digit (exact for the first such byte: a
 * carry out of a byte >= 0xfa only reaches the bytes after it). */
inline uint64_t non_digits(uint64_t w) {
    uint64_t x = ((w & (0xf0 * ONES)) | (((w + 0x06 * ONES) & (0xf0 * ONES)) >> 4)) ^
                 (0x33 * ONES);  // 0 iff the byte is 0x30..0x39
    return (((x & ~HIGHS) + ~HIGHS) | x) & HIGHS;
}

/* The value of the k (1..8) digits at the start of w (simdjson's 8-digit SWAR conversion,
 * the digits moved to the top with zero bytes, i.e. leading zeros, below). */
inline uint64_t digits_value(uint64_t w, int k) {
    w <<= 8 * (8 - k);
    w = (w & 0x0F0F0F0F0F0F0F0Full) * 2561 >> 8;
    w = (w & 0x00FF00FF00FF00FFull) * 6553601 >> 16;
    return (w & 0x0000FFFF0000FFFFull) * 42949672960001ull >> 32;
}

/* Digits of an unsigned JSON integer (no leading zero, at most 18 digits), not followed by a
 * fraction, an exponent or another digit. */
inline bool natural(Cur &c, int64_t &out) {
    const char *q = c.p;
    if (q >= c.end || !digit(*q)) return false;
    uint64_t v = 0;
    if (*q == '0') {
        q++;
    } else {
        const char *s = q;
        while (c.end - q >= 8) {
            uint64_t w = load8(q);
            if (non_digits(w)) break;
            v = v * 100000000 + digits_value(w, 8);
            q += 8;
        }
        while (digit(*q)) v = v * 10 + static_cast<uint64_t>(*q++ - '0');
        if (q - s > 18) return false;  // (v may have wrapped: refused)
    }
    if (*q == '.' || *q == 'e' || *q == 'E' || digit(*q)) return false;
    out = static_cast<int64_t>(v);
    c.p = q;
    return true;
}

/* An unsigned decimal `int[.frac]` (JSON grammar, no exponent) of at most 18 digits in all:
 * its digits as an integer and the number of fraction digits. */
inline bool decimal(Cur &c, uint64_t &mant, int &frac) {
    const char *q = c.p;
    if (q >= c.end || !digit(*q)) return false;
    if (c.end - q >= 9) {  // a short `int.frac` (<= 8 bytes with the point) in one word
        uint64_t w = load8(q);
        uint64_t stops = non_digits(w);
        int k1 = __builtin_ctzll(stops | (uint64_t{1} << 63)) >> 3;  // (k1 >= 1: digit(*q))
        if (stops && q[k1] == '.' && (*q != '0' || k1 == 1)) {
            uint64_t rest = stops & (stops - 1);  // the stops after the point
            int k2 = rest ? __builtin_ctzll(rest) >> 3 : 8;
            const char *after = q + k2;
            if (k2 > k1 + 1 && !digit(*after) && *after != 'e' && *after != 'E') {
                uint64_t below = (uint64_t{1} << (8 * k1)) - 1;  // the integer digits
                uint64_t joined = (w & below) | ((w >> 8) & ~below);  // the point removed
                mant = digits_value(joined, k2 - 1);
                frac = k2 - k1 - 1;
                c.p = after;
                return true;
            }
        }
    }
    const char *first = q;
    uint64_t m = 0;
    if (*q == '0') {
        q++;
    } else {
        while (digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
    }
    long n = q - first;
    int f = 0;
    if (*q == '.') {
        const char *s = ++q;
        while (digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
        f = static_cast<int>(q - s);
        if (f == 0) return false;
        n += f;
    }
    if (n > 18) return false;  // (m may have wrapped: refused)
    if (*q == 'e' || *q == 'E' || digit(*q)) return false;
    mant = m;
    frac = f;
    c.p = q;
    return true;
}

constexpr double POW10[19] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                              1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};

/* A number (quoted or not) as msgspec's lax float reads it, correctly rounded: only when
 * its digits are exact in a double (<= 2**53), so that one division by an exact power of ten
 * is the correctly rounded value (Clinger's fast path), the value std::from_chars gives. */
inline bool lax_float(Cur &c, double &out) {
    Cur d = c;
    bool quoted = d.eat('"');
    uint64_t mant;
    int frac;
    if (!decimal(d, mant, frac) || mant > (uint64_t{1} << 53)) return false;
    if (quoted && !d.eat('"')) return false;
    out = static_cast<double>(mant) / POW10[frac];
    c = d;
    return true;
}

/* A `_levels` book number in a string ("price" / "qty"): `_levels._number`'s value
 * (level_number in parse.cpp: the 18-digit integer over 10**fraction digits). */
inline bool level_number(Cur &c, double &out) {
    Cur d = c;
    uint64_t mant;
    int frac;
    if (!d.eat('"') || !decimal(d, mant, frac) || !d.eat('"')) return false;
    out = mant == 0 ? 0.0 : static_cast<double>(static_cast<int64_t>(mant)) / POW10[frac];
    c = d;
    return true;
}

/* A value nobody reads: a string, a number (full JSON grammar) or a literal. */
inline bool skip_scalar(Cur &c) {
    if (!c.more()) return false;
    char ch = *c.p;
    if (ch == '"') {
        std::string_view s;
        return str(c, s);
    }
    if (ch == 't') return c.lit("true", 4);
    if (ch == 'f') return c.lit("false", 5);
    if (ch == 'n') return c.lit("null", 4);
    const char *q = c.p;
    if (q < c.end && *q == '-') q++;
    if (q >= c.end || !digit(*q)) return false;
    if (*q == '0') {
        q++;
    } else {
        while (q < c.end && digit(*q)) q++;
    }
    if (q < c.end && *q == '.') {
        q++;
        if (q >= c.end || !digit(*q)) return false;
        while (q < c.end && digit(*q)) q++;
    }
    if (q < c.end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < c.end && (*q == '+' || *q == '-')) q++;
        if (q >= c.end || !digit(*q)) return false;
        while (q < c.end && digit(*q)) q++;
    }
    c.p = q;
    return true;
}

}  // namespace fast
}  // namespace wbp

#endif /* WB_PARSE_FAST_H */
