// The machine-hiccup probe (wb_hiccup.h).
#include "wb_hiccup.h"

#include <errno.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <time.h>

#include <atomic>
#include <mutex>

#include "wb_ring.h"

namespace {

struct Record {
    std::atomic<int64_t> end_ns{0};
    std::atomic<int64_t> late_ns{0};
};

Record g_slots[WB_HICCUP_SLOTS];
std::atomic<uint64_t> g_seq{0};  // records written (the next record's sequence number)
std::atomic<uint64_t> g_wakeups{0};  // the counters below: since the thread started
std::atomic<uint64_t> g_late{0};
std::atomic<int64_t> g_max_late{0};
std::atomic<int64_t> g_total_late{0};
std::atomic<int> g_run{0};
std::atomic<int64_t> g_asleep_ns{0};  // when the current sleep began (0: not running)

std::mutex g_lock;  // start/stop only
pthread_t g_thread;
int g_users = 0;
int64_t g_interval_ns = 0;
int64_t g_threshold_ns = 0;

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void *probe_main(void *) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake when asked, not up to 50 µs later
    const int64_t interval = g_interval_ns, threshold = g_threshold_ns;
    const timespec nap{time_t(interval / 1000000000LL), long(interval % 1000000000LL)};
    while (g_run.load(std::memory_order_relaxed)) {
        const int64_t asleep = now_ns();
        g_asleep_ns.store(asleep, std::memory_order_relaxed);
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, nullptr) == EINTR) {
        }
        const int64_t woke = now_ns();
        const int64_t late = woke - asleep - interval;
        g_wakeups.fetch_add(1, std::memory_order_relaxed);
        if (late <= threshold) continue;
        const uint64_t seq = g_seq.load(std::memory_order_relaxed);
        Record &slot = g_slots[seq % WB_HICCUP_SLOTS];
        slot.end_ns.store(woke, std::memory_order_relaxed);
        slot.late_ns.store(late, std::memory_order_relaxed);
        g_seq.store(seq + 1, std::memory_order_release);
        g_late.fetch_add(1, std::memory_order_relaxed);
        g_total_late.fetch_add(late, std::memory_order_relaxed);
        if (late > g_max_late.load(std::memory_order_relaxed))
            g_max_late.store(late, std::memory_order_relaxed);
    }
    return nullptr;
}

}  // namespace

extern "C" int wb_hiccup_start(int64_t interval_ns, int64_t threshold_ns) {
    if (interval_ns <= 0 || threshold_ns <= 0) return WB_EINVAL;
    std::lock_guard<std::mutex> hold(g_lock);
    if (g_users > 0) {
        if (interval_ns != g_interval_ns || threshold_ns != g_threshold_ns) return WB_EEXIST;
        ++g_users;
        return WB_OK;
    }
    g_interval_ns = interval_ns;
    g_threshold_ns = threshold_ns;
    g_wakeups.store(0);
    g_late.store(0);
    g_max_late.store(0);
    g_total_late.store(0);
    g_run.store(1);
    if (pthread_create(&g_thread, nullptr, probe_main, nullptr) != 0) {
        g_run.store(0);
        return WB_ESYS;
    }
    pthread_setname_np(g_thread, "wb-hiccup");
    g_users = 1;
    return WB_OK;
}

extern "C" int wb_hiccup_stop(void) {
    std::lock_guard<std::mutex> hold(g_lock);
    if (g_users == 0) return WB_EINVAL;
    if (--g_users == 0) {
        g_run.store(0);
        pthread_join(g_thread, nullptr);
        g_asleep_ns.store(0);
    }
    return WB_OK;
}

extern "C" void wb_hiccup_stats_get(wb_hiccup_stats *out) {
    std::lock_guard<std::mutex> hold(g_lock);
    out->recorded = g_seq.load(std::memory_order_acquire);
    out->wakeups = g_wakeups.load(std::memory_order_relaxed);
    out->late = g_late.load(std::memory_order_relaxed);
    out->max_late_ns = g_max_late.load(std::memory_order_relaxed);
    out->total_late_ns = g_total_late.load(std::memory_order_relaxed);
    out->interval_ns = g_interval_ns;
    out->threshold_ns = g_threshold_ns;
    out->running = g_users > 0;
    out->users = g_users;
}

extern "C" uint64_t wb_hiccup_read(uint64_t from, int64_t *end_ns, int64_t *late_ns,
                                   uint64_t max, uint64_t *next, uint64_t *lost) {
    const uint64_t head = g_seq.load(std::memory_order_acquire);
    uint64_t first = from > head ? head : from;
    uint64_t skipped = 0;
    if (head - first > WB_HICCUP_SLOTS) {
        skipped = head - first - WB_HICCUP_SLOTS;
        first = head - WB_HICCUP_SLOTS;
    }
    uint64_t n = head - first < max ? head - first : max;
    for (uint64_t i = 0; i < n; ++i) {
        const Record &slot = g_slots[(first + i) % WB_HICCUP_SLOTS];
        end_ns[i] = slot.end_ns.load(std::memory_order_relaxed);
        late_ns[i] = slot.late_ns.load(std::memory_order_relaxed);
    }
    // the writer may have lapped the oldest ones meanwhile: drop what it overwrote, and the
    // slot it may be writing now (record `after`, published only when complete)
    std::atomic_thread_fence(std::memory_order_acquire);
    const uint64_t after = g_seq.load(std::memory_order_relaxed) + 1;
    uint64_t overwritten = 0;
    if (after > first + WB_HICCUP_SLOTS) {
        overwritten = after - first - WB_HICCUP_SLOTS;
        if (overwritten > n) overwritten = n;
        for (uint64_t i = overwritten; i < n; ++i) {
            end_ns[i - overwritten] = end_ns[i];
            late_ns[i - overwritten] = late_ns[i];
        }
    }
    *next = first + n;
    *lost = skipped + overwritten;
    return n - overwritten;
}

extern "C" int64_t wb_hiccup_pending(int64_t now) {
    const int64_t asleep = g_asleep_ns.load(std::memory_order_relaxed);
    if (asleep == 0) return 0;
    const int64_t late = now - asleep - g_interval_ns;
    return late > g_threshold_ns ? late : 0;
}
