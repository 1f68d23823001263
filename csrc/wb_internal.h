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

#endif /* WB_INTERNAL_H */
