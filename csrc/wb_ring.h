/* wb_ring.h: single-producer single-consumer ring of wb_event records in POSIX shared memory,
 * and the native feed handler (a replay thread publishing an event array into a ring).
 *
 * Shared-memory layout (one object /wb-<name> under /dev/shm, mode 0600):
 *   [wb_ring_header: 3 cache lines][capacity x wb_event slots]
 * Line 0 is written once by the creator (magic, layout version, record size, capacity, creation
 * time) plus the producer pid; line 1 belongs to the producer (head, next sequence number,
 * drops); line 2 belongs to the consumer (tail, last sequence number seen, gaps, high-water
 * mark). head and tail are free-running record counts: slot = count & (capacity - 1).
 * The producer publishes a slot with a release store of head; the consumer reads head with an
 * acquire load, and hands slots back with a release store of tail. No locks and no system calls
 * on push/pop (the publish stamp reads CLOCK_MONOTONIC through the vDSO).
 *
 * Full ring: push never blocks. The record is dropped and counted, its sequence number is used
 * up, so the consumer sees a sequence gap (and sets WB_FLAG_GAP on the next record it reads).
 *
 * Trust: create makes the object with O_EXCL and mode 0600 (fchmod after shm_open, whatever the
 * umask). attach refuses (WB_EPERM) an object whose owner is not this process's effective uid
 * or whose mode grants anything beyond 0600, reads the header with pread and checks it against
 * the file size before mapping (WB_ELAYOUT), and maps exactly header + capacity slots.
 *
 * Truncation: a page of a MAP_SHARED mapping past the end of its file raises SIGBUS when
 * touched, so a ring file truncated under a process would kill it. Every mapping is registered
 * with a SIGBUS handler (installed on the first create or attach, chaining to the handler it
 * replaced for every fault outside a ring); on a fault inside a ring it marks that mapping
 * truncated, maps zero-filled anonymous memory over it at the same address (so the faulting
 * instruction, in C or in a numpy view of the slots, completes and reads zeros) and sets head
 * in that copy to WB_RING_POISON_HEAD (so a consumer polling head sees "something to read" and
 * calls in). From then on reads and pops return WB_RING_TRUNCATED, pushes publish nothing and
 * the status calls return WB_ETRUNC. The hot path pays one load of the mark per call and no
 * system call; records read from the lost pages read as zeros.
 *
 * Errors: calls that can fail return NULL or a negative WB_E* code and write a message into
 * the caller's err buffer.
 */
#ifndef WB_RING_H
#define WB_RING_H

#include <stddef.h>
#include <stdint.h>

#include "wb_event.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WB_RING_MAGIC 0x474e495242574248ull /* "HBWBRING" little-endian */
#define WB_RING_LAYOUT_VERSION 1
#define WB_RING_MIN_CAPACITY 16
#define WB_RING_MAX_CAPACITY (1u << 26) /* 4 GiB of slots */
#define WB_RING_NAME_MAX 200
#define WB_RING_MODE 0600 /* the only mode attach accepts: owner read/write */
#define WB_RING_TRUNCATED UINT64_MAX /* read / read_wait / pop_batch: the file was truncated */
#define WB_RING_POISON_HEAD UINT64_MAX /* head in the zero-filled copy of a truncated ring */

/* error codes (negative returns) */
#define WB_OK 0
#define WB_ENOTFOUND -1 /* no such ring */
#define WB_ELAYOUT -2   /* magic, layout version or record size differs */
#define WB_EINVAL -3    /* bad name or capacity */
#define WB_ESYS -4      /* a system call failed (message has errno text) */
#define WB_EEXIST -5    /* a ring of that name already exists */
#define WB_EPERM -6     /* owned by another uid, or mode wider than WB_RING_MODE */
#define WB_ETRUNC -7    /* the ring's file was truncated under this process's mapping */

typedef struct wb_ring_header {
    /* cache line 0: written at creation */
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_size;
    uint64_t capacity;        /* slots, a power of two */
    int64_t created_ns;       /* CLOCK_REALTIME ns since the Unix epoch */
    int32_t creator_pid;
    int32_t producer_pid;     /* the process that pushes; 0 = none yet */
    uint64_t header_size;     /* bytes before slot 0 */
    uint64_t producer_done;   /* 1: the producer closed the ring cleanly (its data ended) */
    uint64_t _pad0;
    /* cache line 1: producer */
    uint64_t head;            /* records published (atomic) */
    uint64_t next_seq;        /* last sequence number handed out (published + dropped) */
    uint64_t dropped;         /* records dropped because the ring was full */
    uint32_t head32;          /* low 32 bits of head: the futex word of wb_ring_read_block */
    uint32_t _pad1a;
    uint64_t _pad1[4];
    /* cache line 2: consumer */
    uint64_t tail;            /* records handed back by the consumer (atomic) */
    uint64_t last_seq;        /* sequence number of the last record read */
    uint64_t gaps;            /* sequence numbers found missing by the consumer */
    uint64_t high_water;      /* most records ever waiting in the ring */
    uint32_t sleeping;        /* 1 while the consumer sleeps in wb_ring_read_block */
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
    uint64_t pending;         /* published - consumed: records waiting now */
    int64_t created_ns;
    int32_t creator_pid;
    int32_t producer_pid;
    int32_t producer_alive;   /* 1 alive, 0 dead (stale ring), -1 no producer yet */
    int32_t creator_alive;    /* 1 alive, 0 dead */
    int32_t producer_done;    /* 1: the producer closed the ring cleanly */
    int32_t _pad;
} wb_ring_stats;

typedef struct wb_ring wb_ring; /* opaque handle, one per process and role */

/* name: 1..WB_RING_NAME_MAX chars of [A-Za-z0-9._-]; the object is /wb-<name>. */
wb_ring *wb_ring_create(const char *name, uint64_t capacity, int *code, char *err,
                        size_t errlen);
/* Refuses (WB_EPERM) a ring of another owner or a mode wider than WB_RING_MODE; WB_ELAYOUT when
 * the header (read before mapping) or the file size does not describe a ring of this build. */
wb_ring *wb_ring_attach(const char *name, int *code, char *err, size_t errlen);
void wb_ring_close(wb_ring *r);                   /* unmaps; does not unlink */
int wb_ring_unlink(const char *name, char *err, size_t errlen);

/* producer_pid = getpid(); the first push through a handle claims the role too. */
void wb_ring_claim_producer(wb_ring *r);
/* push stamps seq and ts_publish_ns (CLOCK_MONOTONIC); returns 1 published, 0 dropped. */
int wb_ring_push(wb_ring *r, const wb_event *ev);
/* pushes n records with one publish stamp; returns how many were published (rest dropped). */
uint64_t wb_ring_push_batch(wb_ring *r, const wb_event *evs, uint64_t n);
/* push / push_batch publish nothing into a truncated ring (check wb_ring_status). */
/* copies up to max waiting records into out and hands their slots back; returns the count,
 * or WB_RING_TRUNCATED (as do read and read_wait). */
uint64_t wb_ring_pop_batch(wb_ring *r, wb_event *out, uint64_t max);
/* zero-copy read: hands back the slots of the previous read, then returns up to max waiting
 * records that are contiguous in the slot array (stopping at the wrap), slot index in *first
 * (first may be NULL: the index is then wb_ring_taken() before the call & (capacity - 1)). */
uint64_t wb_ring_read(wb_ring *r, uint64_t max, uint64_t *first);
/* wb_ring_read, after spinning (no system call, no lock) up to wait_ns for a record when the
 * ring is empty: the consumer's busy poll without leaving C. */
uint64_t wb_ring_read_wait(wb_ring *r, uint64_t max, int64_t wait_ns, uint64_t *first);
/* wb_ring_read, after waiting when the ring is empty: spinning up to spin_ns, then sleeping
 * (futex on the header's head32 word, woken by the producer's next publish) until
 * timeout_ns from the call: the consumer's wait that leaves the CPU to others (a spinning
 * reader on a machine with few cores takes one from the producer). */
uint64_t wb_ring_read_block(wb_ring *r, uint64_t max, int64_t spin_ns, int64_t timeout_ns,
                            uint64_t *first);
/* hands back the slots of the last wb_ring_read; WB_OK or WB_ETRUNC. */
int wb_ring_release(wb_ring *r);
/* WB_OK, or WB_ETRUNC when the ring was truncated (out then holds the zero-filled copy's). */
int wb_ring_stats_get(wb_ring *r, wb_ring_stats *out);
/* WB_OK, or WB_ETRUNC once the ring's file was found truncated under this mapping. */
int wb_ring_status(wb_ring *r);
wb_event *wb_ring_slots(wb_ring *r);
uint64_t wb_ring_capacity(wb_ring *r);
/* records this handle has taken as consumer (read or popped, released or not). */
uint64_t wb_ring_taken(wb_ring *r);

/* ---- native feed handler ---- */
#define WB_FEED_FLAT 0  /* as fast as the ring takes them */
#define WB_FEED_RATE 1  /* value = events per second */
#define WB_FEED_SPEED 2 /* value = factor on the recorded ts_recv_ns deltas */

typedef struct wb_feed_status {
    uint64_t published;
    uint64_t dropped;
    int64_t started_ns;   /* CLOCK_MONOTONIC */
    int64_t finished_ns;  /* 0 while running */
    int32_t running;
    int32_t stopped;      /* 1 if stopped before the end */
} wb_feed_status;

typedef struct wb_feed wb_feed; /* opaque */

/* Starts a thread publishing `count` events cycling over events[0..n) into r.
 * lossless = 1: when the ring is full the thread waits for room instead of dropping.
 * The events array and the ring must outlive the feed (until wb_feed_free). */
wb_feed *wb_feed_start(wb_ring *r, const wb_event *events, uint64_t n, uint64_t count, int mode,
                       double value, int lossless, char *err, size_t errlen);
void wb_feed_stop(wb_feed *f);
/* waits up to timeout_ns (< 0: forever); returns 1 when the thread has finished. */
int wb_feed_wait(wb_feed *f, int64_t timeout_ns);
void wb_feed_status_get(wb_feed *f, wb_feed_status *out);
void wb_feed_free(wb_feed *f); /* stops, joins and frees */

#ifdef __cplusplus
}
#endif

#endif /* WB_RING_H */
