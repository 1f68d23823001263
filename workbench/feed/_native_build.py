"""cffi build script of `workbench._native`: the native feed handler of `csrc/native/` (C++17).

A cffi extension of its own, so the ring's module (`workbench._feed`, `_feed_build.py`) does not
rebuild with it. It compiles `csrc/native/*.cpp` with `csrc/wb_ring.cpp` (the handler publishes
into rings itself) and links simdjson, OpenSSL (ssl, crypto) and Boost.Beast/Asio (headers only).
Portable flags: -O3, no -march=native.

Used by setup.py (`cffi_modules`), so `pip install -e .` compiles it. Run directly,
`python -m workbench.feed._native_build [--sanitize] [--feed] [--out DIR]` builds the extension
in place (or into DIR): `--sanitize` makes the AddressSanitizer + UndefinedBehaviorSanitizer
debug build that `tests/feed/test_sanitized.py` runs in CI; `--feed` builds `workbench._feed`
(the ring, the replay handler, the hiccup probe: `_feed_build.builder`) instead.

A missing header fails the build with one line naming the packages to install (`check_headers`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
NATIVE = CSRC / "native"
HEADERS = ("simdjson.h", "boost/beast/websocket.hpp", "boost/beast/ssl.hpp", "openssl/ssl.h")
PACKAGES = ("Debian: apt-get install libboost-dev libsimdjson-dev libssl-dev; conda-forge: "
            "conda install libboost-headers simdjson openssl")

PARSE_CDEF = """
#define WB_PARSE_PADDING ...
#define WB_VENUE_BINANCE_SPOT ...
#define WB_VENUE_BINANCE_USDM ...
#define WB_VENUE_BINANCE_COINM ...
#define WB_VENUE_BYBIT_LINEAR ...
#define WB_VENUE_BYBIT_SPOT ...
#define WB_VENUE_BYBIT_INVERSE ...
#define WB_VENUE_COINBASE ...
#define WB_MSG_OTHER ...
#define WB_MSG_SNAPSHOT ...
#define WB_MSG_DELTA ...
#define WB_MSG_TRADE ...
#define WB_MSG_BBO ...
#define WB_MSG_HEARTBEAT ...
#define WB_MSG_MALFORMED ...
#define WB_BAD_NONE ...
#define WB_BAD_JSON ...
#define WB_BAD_SCHEMA ...
#define WB_BAD_UNKNOWN_TYPE ...
#define WB_BAD_PRICE ...
#define WB_BAD_QTY ...
#define WB_BAD_UNKNOWN_SYMBOL ...
#define WB_BAD_DEPTH ...
#define WB_BAD_MEMORY ...
#define WB_BAD_INTERNAL ...
#define WB_BAD_OVERSIZE ...
#define WB_BAD_COUNT ...
#define WB_PARSE_NO_ROOM ...

typedef struct wb_event {
    int64_t ts_event_ns;
    int64_t ts_recv_ns;
    int64_t ts_publish_ns;
    uint64_t seq;
    uint64_t venue_seq;
    uint32_t symbol_id;
    uint8_t kind;
    uint8_t side;
    uint16_t flags;
    double price;
    double qty;
    ...;
} wb_event;

typedef struct wb_msg_info {
    int32_t kind;
    int32_t bad;
    uint32_t symbol_id;
    uint32_t n_events;
    int64_t first_id;
    int64_t last_id;
    int64_t prev_id;
    int64_t seq;
    int64_t ts_event_ns;
} wb_msg_info;

typedef struct wb_parser wb_parser;
wb_parser *wb_parser_new(int venue);
void wb_parser_free(wb_parser *p);
int wb_parser_add_symbol(wb_parser *p, const char *symbol, uint32_t symbol_id);
int64_t wb_parser_parse(wb_parser *p, const char *msg, size_t len, size_t capacity,
                        int64_t recv_ns, wb_event *out, uint64_t cap, wb_msg_info *info);
int64_t wb_parser_snapshot(wb_parser *p, const char *body, size_t len, size_t capacity,
                           int64_t recv_ns, const char *symbol, wb_event *out, uint64_t cap,
                           wb_msg_info *info);
int wb_parser_default_symbol(wb_parser *p, const char *symbol);
int64_t wb_parser_parse_many(wb_parser *p, const char *buf, size_t size,
                             const uint64_t *offsets, uint64_t n, const int64_t *recv_ns,
                             wb_event *out, uint64_t cap, uint64_t *ends, wb_msg_info *infos);
void wb_parser_counters(const wb_parser *p, uint64_t *messages, uint64_t *events,
                        uint64_t *out_bad);
"""

HANDLER_CDEF = """
#define WB_NF_IDLE ...
#define WB_NF_CONNECTING ...
#define WB_NF_LIVE ...
#define WB_NF_STOPPED ...
#define WB_NF_FAILED ...
#define WB_NF_HIST_BUCKETS ...

typedef struct wb_nf_config {
    int32_t venue;
    const char *url;
    const char *ring;
    const char *rest_url;
    const char *rest_path;
    int32_t rest_limit;
    int32_t rest_weight;
    int32_t rest_budget;
    const char *ca_file;
    int32_t verify;
    double silence_s;
    double backoff_s;
    double backoff_max_s;
    double open_timeout_s;
    double resync_retry_s;
    uint64_t max_frame;
    int32_t max_connects;
    uint32_t max_buffer;
    int32_t cpu;
    int32_t rt_priority;
    uint64_t seed;
} wb_nf_config;

typedef struct wb_nf_stats {
    uint64_t messages;
    uint64_t bytes;
    uint64_t events;
    uint64_t dropped;
    uint64_t malformed;
    uint64_t malformed_by[11];
    uint64_t gaps;
    uint64_t resyncs;
    uint64_t snapshot_fetches;
    uint64_t snapshot_failures;
    uint64_t rest_throttled;
    uint64_t stale;
    uint64_t buffered;
    uint64_t buffer_overflow;
    uint64_t connects;
    uint64_t reconnects;
    uint64_t silences;
    uint64_t switches;
    uint64_t invalidations;
    int64_t last_read_ns;
    int32_t state;
    int32_t pinned_cpu;
    int32_t pin_errno;
    int32_t rt_errno;
    int32_t rt_priority;
    int32_t _pad;
} wb_nf_stats;

typedef struct wb_nf wb_nf;
wb_nf *wb_nf_new(const wb_nf_config *cfg, char *err, size_t errlen);
int wb_nf_add_symbol(wb_nf *h, const char *symbol, uint32_t symbol_id);
int wb_nf_add_subscribe(wb_nf *h, const char *frame);
int wb_nf_start(wb_nf *h, char *err, size_t errlen);
void wb_nf_stop(wb_nf *h);
int wb_nf_wait(wb_nf *h, int64_t timeout_ns);
int wb_nf_switch_endpoint(wb_nf *h, const char *url);
void wb_nf_stats_get(const wb_nf *h, wb_nf_stats *out);
uint64_t wb_nf_histogram(const wb_nf *h, uint64_t *out, uint64_t n);
uint64_t wb_nf_bucket_low(uint64_t i);
void wb_nf_error(const wb_nf *h, char *out, size_t n);
void wb_nf_url(const wb_nf *h, char *out, size_t n);
void wb_nf_free(wb_nf *h);
"""

OPTIMIZED = ["-O3", "-std=c++17", "-Wall", "-Wextra", "-DNDEBUG"]
SANITIZED = ["-O1", "-g", "-std=c++17", "-Wall", "-Wextra", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
SANITIZED_LINK = ["-fsanitize=address,undefined"]


def check_headers(compiler: str | None = None) -> None:
    """Exit with one line naming the packages when a header the handler needs is missing."""
    cxx = compiler or os.environ.get("CXX") or shutil.which("g++") or "c++"
    missing = []
    with tempfile.TemporaryDirectory() as tmp:
        for header in HEADERS:
            probe = Path(tmp) / "probe.cpp"
            probe.write_text(f"#include <{header}>\n")
            done = subprocess.run([cxx, "-std=c++17", "-M", str(probe)], capture_output=True)
            if done.returncode != 0:
                missing.append(header)
    if missing:
        sys.exit(f"native feed handler: missing header(s) {', '.join(missing)}; install them "
                 f"({PACKAGES})")


def builder(sanitize: bool = False, absolute: bool = False) -> FFI:
    """The FFI builder of `workbench._native` (sanitize: the ASan + UBSan debug build;
    absolute: absolute paths, for `FFI.compile` in a build directory; setuptools wants them
    relative to the project)."""

    def rel(p: Path) -> str:
        return str(p if absolute else p.relative_to(ROOT))

    sources = [CSRC / "wb_ring.cpp", *sorted(NATIVE.glob("*.cpp"))]
    ffi = FFI()
    ffi.cdef(PARSE_CDEF + HANDLER_CDEF)
    flags = SANITIZED if sanitize else OPTIMIZED
    ffi.set_source(
        "workbench._native",
        '#include "wb_parse.h"\n#include "wb_native.h"\n',
        sources=[rel(p) for p in sources],
        include_dirs=[rel(CSRC), rel(NATIVE)],
        depends=[rel(p) for p in sorted([*CSRC.glob("*.h"), *NATIVE.glob("*.h")])],
        source_extension=".cpp",
        extra_compile_args=flags,
        extra_link_args=["-pthread", *(SANITIZED_LINK if sanitize else [])],
        libraries=["simdjson", "ssl", "crypto", "rt"],
    )
    return ffi


check_headers()
ffibuilder = builder()

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="build workbench._native in place")
    parser.add_argument("--sanitize", action="store_true", help="ASan + UBSan debug build")
    parser.add_argument("--feed", action="store_true",
                        help="build workbench._feed (the ring's module) instead")
    parser.add_argument("--out", default=None, help="directory of the built module "
                        "(default: the source tree, beside workbench/)")
    args = parser.parse_args()
    if args.feed:
        from workbench.feed._feed_build import builder as feed_builder

        name = "_feed"
        ffi = feed_builder(SANITIZED if args.sanitize else None,
                           SANITIZED_LINK if args.sanitize else None,
                           absolute=True)
    else:
        name = "_native"
        ffi = builder(args.sanitize, absolute=True)
    os.chdir(ROOT)
    kind = ("asan" if args.sanitize else "native") + ("-feed" if args.feed else "")
    built = Path(ffi.compile(tmpdir=str(ROOT / "build" / kind)))
    dest = Path(args.out or ROOT) / "workbench"
    dest.mkdir(parents=True, exist_ok=True)
    # the name `pip install -e .` gives it; a copy under another suffix would shadow it
    for stale in dest.glob(f"{name}.*.so"):
        stale.unlink()
    target = dest / f"{name}.abi3.so"
    shutil.copy2(built, target)
    print(target)
