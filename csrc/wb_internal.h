/* wb_internal.h: helpers shared by wb_ring.cpp and wb_feed.cpp (not part of the C API). */
#ifndef WB_INTERNAL_H
#define WB_INTERNAL_H

#include <ctime>

#include "wb_ring.h"

/* CLOCK_MONOTONIC in ns: the clock of Python's time.perf_counter_ns() on Linux (vDSO, no
 * system call). */
inline int64_t wb_monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

/* A pause for spin-wait loops (eases the sibling hyperthread and the memory bus). */
inline void wb_cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/* Publishes up to n records (stamping seq and one ts_publish_ns). With drop_rest the records
 * that do not fit are dropped and their sequence numbers used up; without it they are left to
 * the caller. Returns how many were published. */
uint64_t wb_ring_publish(wb_ring *r, const wb_event *evs, uint64_t n, bool drop_rest);

/* Zero-copy publishing (the native handler writes events straight into the slots): the free
 * slots contiguous from the next one, at most up to the wrap, count in *n (in: wanted, out:
 * available; a later reserve may offer more once the consumer frees slots); NULL when none or
 * the ring is truncated. Nothing is published until wb_ring_commit(r, k), k <= *n, which
 * stamps seq and one ts_publish_ns and publishes the first k. Producer thread only. */
wb_event *wb_ring_reserve(wb_ring *r, uint64_t *n);
uint64_t wb_ring_commit(wb_ring *r, uint64_t n);

#endif /* WB_INTERNAL_H */
