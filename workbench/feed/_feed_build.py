"""cffi build script of `workbench._feed`: the ring, the replay feed handler and the machine-hiccup
probe of `csrc/` (C++17, -O3).

Used by setup.py (`cffi_modules=["workbench/feed/_feed_build.py:ffibuilder"]`), so
`pip install -e .` compiles it. API mode: every call releases the GIL. The declarations below
mirror csrc/wb_event.h, csrc/wb_ring.h and csrc/wb_hiccup.h without `__attribute__` (which
cdef cannot parse). `wb_event` ends in `...;` so cffi takes its 64-byte alignment, size and
field offsets from the C++ compiler; the other structs are checked against it; `...` constants
come from the headers.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"

CDEF = """
#define WB_EVENT_SIZE ...
#define WB_KIND_TRADE ...
#define WB_KIND_BID_LEVEL ...
#define WB_KIND_ASK_LEVEL ...
#define WB_KIND_BBO ...
#define WB_KIND_SNAPSHOT_BEGIN ...
#define WB_KIND_SNAPSHOT_END ...
#define WB_KIND_HEARTBEAT ...
#define WB_KIND_BOOK_INVALID ...
#define WB_SIDE_NONE ...
#define WB_SIDE_BUY ...
#define WB_SIDE_SELL ...
#define WB_FLAG_SNAPSHOT ...
#define WB_FLAG_LAST_IN_MSG ...
#define WB_FLAG_GAP ...
#define WB_RING_MAGIC ...
#define WB_RING_LAYOUT_VERSION ...
#define WB_RING_MIN_CAPACITY ...
#define WB_RING_MAX_CAPACITY ...
#define WB_RING_NAME_MAX ...
#define WB_RING_MODE ...
#define WB_RING_TRUNCATED ...
#define WB_OK ...
#define WB_ENOTFOUND ...
#define WB_ELAYOUT ...
#define WB_EINVAL ...
#define WB_ESYS ...
#define WB_EEXIST ...
#define WB_EPERM ...
#define WB_ETRUNC ...
#define WB_FEED_FLAT ...
#define WB_FEED_RATE ...
#define WB_FEED_SPEED ...

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

typedef struct wb_ring_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_size;
    uint64_t capacity;
    int64_t created_ns;
    int32_t creator_pid;
    int32_t producer_pid;
    uint64_t header_size;
    uint64_t producer_done;
    uint64_t _pad0;
    uint64_t head;
    uint64_t next_seq;
    uint64_t dropped;
    uint32_t head32;
    uint32_t _pad1a;
    uint64_t _pad1[4];
    uint64_t tail;
    uint64_t last_seq;
    uint64_t gaps;
    uint64_t high_water;
    uint32_t sleeping;
    uint32_t _pad2a;
    uint64_t _pad2[3];
} wb_ring_header;

typedef struct wb_ring_stats {
    uint64_t capacity;
    uint64_t published;
    uint64_t consumed;
    uint64_t dropped;
    uint64_t gaps;
    uint64_t high_water;
    uint64_t pending;
    int64_t created_ns;
    int32_t creator_pid;
    int32_t producer_pid;
    int32_t producer_alive;
    int32_t creator_alive;
    int32_t producer_done;
    int32_t _pad;
} wb_ring_stats;

typedef struct wb_ring wb_ring;

wb_ring *wb_ring_create(const char *name, uint64_t capacity, int *code, char *err,
                        size_t errlen);
wb_ring *wb_ring_attach(const char *name, int *code, char *err, size_t errlen);
void wb_ring_close(wb_ring *r);
int wb_ring_unlink(const char *name, char *err, size_t errlen);
void wb_ring_claim_producer(wb_ring *r);
int wb_ring_push(wb_ring *r, const wb_event *ev);
uint64_t wb_ring_push_batch(wb_ring *r, const wb_event *evs, uint64_t n);
uint64_t wb_ring_pop_batch(wb_ring *r, wb_event *out, uint64_t max);
uint64_t wb_ring_read(wb_ring *r, uint64_t max, uint64_t *first);
uint64_t wb_ring_read_wait(wb_ring *r, uint64_t max, int64_t wait_ns, uint64_t *first);
uint64_t wb_ring_read_block(wb_ring *r, uint64_t max, int64_t spin_ns, int64_t timeout_ns,
                            uint64_t *first);
int wb_ring_release(wb_ring *r);
int wb_ring_stats_get(wb_ring *r, wb_ring_stats *out);
int wb_ring_status(wb_ring *r);
wb_event *wb_ring_slots(wb_ring *r);
uint64_t wb_ring_capacity(wb_ring *r);
uint64_t wb_ring_taken(wb_ring *r);

typedef struct wb_feed_status {
    uint64_t published;
    uint64_t dropped;
    int64_t started_ns;
    int64_t finished_ns;
    int32_t running;
    int32_t stopped;
} wb_feed_status;

typedef struct wb_feed wb_feed;

wb_feed *wb_feed_start(wb_ring *r, const wb_event *events, uint64_t n, uint64_t count, int mode,
                       double value, int lossless, char *err, size_t errlen);
void wb_feed_stop(wb_feed *f);
int wb_feed_wait(wb_feed *f, int64_t timeout_ns);
void wb_feed_status_get(wb_feed *f, wb_feed_status *out);
void wb_feed_free(wb_feed *f);

#define WB_HICCUP_SLOTS ...

typedef struct wb_hiccup_stats {
    uint64_t recorded;
    uint64_t wakeups;
    uint64_t late;
    int64_t max_late_ns;
    int64_t total_late_ns;
    int64_t interval_ns;
    int64_t threshold_ns;
    int32_t running;
    int32_t users;
} wb_hiccup_stats;

int wb_hiccup_start(int64_t interval_ns, int64_t threshold_ns);
int wb_hiccup_stop(void);
void wb_hiccup_stats_get(wb_hiccup_stats *out);
uint64_t wb_hiccup_read(uint64_t from, int64_t *end_ns, int64_t *late_ns, uint64_t max,
                        uint64_t *next, uint64_t *lost);
int64_t wb_hiccup_pending(int64_t now);
"""

SOURCES = ["wb_ring.cpp", "wb_feed.cpp", "wb_hiccup.cpp"]
COMPILE_ARGS = ["-O3", "-std=c++17", "-Wall", "-Wextra"]


def builder(compile_args: list[str] | None = None, link_args: list[str] | None = None,
            absolute: bool = False) -> FFI:
    """The FFI builder of `workbench._feed`: COMPILE_ARGS unless `compile_args` (the ASan +
    UBSan build of `python -m workbench.feed._native_build --sanitize --feed` passes its own),
    `link_args` after -pthread; absolute: absolute paths, for `FFI.compile` in a build
    directory (setuptools wants them relative to the project)."""

    def rel(p: Path) -> str:
        return str(p if absolute else p.relative_to(ROOT))

    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "workbench._feed",
        '#include "wb_ring.h"\n#include "wb_hiccup.h"\n',
        sources=[rel(CSRC / name) for name in SOURCES],
        include_dirs=[rel(CSRC)],
        depends=[rel(p) for p in sorted(CSRC.glob("*.h"))],
        source_extension=".cpp",
        extra_compile_args=COMPILE_ARGS if compile_args is None else compile_args,
        extra_link_args=["-pthread", *(link_args or [])],
        libraries=["rt"],
    )
    return ffi


ffibuilder = builder()
