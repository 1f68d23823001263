/* wb_hiccup.h: the machine-hiccup probe, a native thread that sleeps and notices when it wakes
 * late (jHiccup's method, Azul Systems: a thread that asks to sleep interval_ns and measures
 * how much longer it took; https://github.com/giltene/jHiccup, README "How it works").
 *
 * The thread sleeps `interval_ns` (clock_nanosleep on CLOCK_MONOTONIC, timer slack 1 ns), reads
 * CLOCK_MONOTONIC (the clock of Python's time.perf_counter_ns) and, when it woke more than
 * `threshold_ns` late, records (end_ns, late_ns): for late_ns the thread was runnable but got no
 * core (the hypervisor, other processes, or every core busy with other threads). It never takes
 * the GIL, so it measures the machine, not the interpreter.
 *
 * Records go to a fixed ring of WB_HICCUP_SLOTS entries (one writer, the probe thread); readers
 * copy by sequence number and learn when the writer lapped them. One probe per process,
 * reference-counted: start adds a user (the first starts the thread), stop removes one (the last
 * joins the thread). Errors: WB_EINVAL (bad arguments), WB_EEXIST (running with other settings),
 * WB_ESYS (the thread could not be created).
 */
#ifndef WB_HICCUP_H
#define WB_HICCUP_H

#include <stdint.h>

#define WB_HICCUP_SLOTS 4096

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wb_hiccup_stats {
    uint64_t recorded;  /* records written since the process started (the next sequence number) */
    uint64_t wakeups;   /* since the thread (re)started: sleeps completed */
    uint64_t late;      /* since the thread (re)started: wake-ups later than the threshold */
    int64_t max_late_ns;   /* of those */
    int64_t total_late_ns; /* of those */
    int64_t interval_ns;
    int64_t threshold_ns;
    int32_t running;
    int32_t users;
} wb_hiccup_stats;

int wb_hiccup_start(int64_t interval_ns, int64_t threshold_ns);
int wb_hiccup_stop(void);
void wb_hiccup_stats_get(wb_hiccup_stats *out);
/* Copy records with sequence numbers >= from (at most max, oldest first) into end_ns/late_ns.
 * Returns the number copied; *next is the sequence number to pass next time, *lost the records
 * in [from, ...) overwritten before they could be copied. */
uint64_t wb_hiccup_read(uint64_t from, int64_t *end_ns, int64_t *late_ns, uint64_t max,
                        uint64_t *next, uint64_t *lost);
/* How late the probe thread is now, in a sleep it has not woken from yet: now - (sleep start +
 * interval) when that is over the threshold, else 0 (also when no probe runs). */
int64_t wb_hiccup_pending(int64_t now);

#ifdef __cplusplus
}
#endif

#endif
