// wb_feed.cpp: the native feed handler, a std::thread replaying an event array into a ring.
//
// Event i (counting over all laps of the source array) is due at t0 + offset(i):
//   FLAT   offset 0 (as fast as the ring takes them),
//   RATE   i * 1e9 / rate,
//   SPEED  (lap * lap_span + ts_recv_ns[i % n] - ts_recv_ns[0]) / speed, where lap_span is the
//          recording's span plus one mean inter-event gap, so laps follow each other evenly.
// Due events are published in batches of at most kBatch with one CLOCK_MONOTONIC stamp. The
// thread waits by sleeping when the next event is more than 200 µs away and spinning otherwise;
// in lossless mode it waits for room on a full ring by spinning, then yielding the core.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <new>
#include <thread>

#include "wb_internal.h"
#include "wb_ring.h"

namespace {

constexpr uint64_t kBatch = 256;
constexpr int64_t kSleepAbove = 200000;  // ns
constexpr int64_t kWakeEarly = 100000;   // ns
constexpr uint32_t kFullSpins = 256;

}  // namespace

struct wb_feed {
    wb_ring *ring;
    const wb_event *events;
    uint64_t n;
    uint64_t count;
    int mode;
    double value;
    bool lossless;
    double ns_per_event;  // RATE
    double lap_span;      // SPEED, ns of recorded time per lap
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> published{0};
    std::atomic<uint64_t> dropped{0};
    std::atomic<int64_t> started_ns{0};
    std::atomic<int64_t> finished_ns{0};
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread thread;

    double offset_ns(uint64_t i) const {
        switch (mode) {
            case WB_FEED_RATE:
                return double(i) * ns_per_event;
            case WB_FEED_SPEED: {
                const uint64_t lap = i / n;
                const double rel = double(events[i % n].ts_recv_ns - events[0].ts_recv_ns);
                return (double(lap) * lap_span + rel) / value;
            }
            default:
                return 0.0;
        }
    }

    void run() {
        const int64_t t0 = wb_monotonic_ns();
        started_ns.store(t0, std::memory_order_release);
        uint64_t i = 0;
        uint32_t full_spins = 0;
        while (i < count && !stop.load(std::memory_order_relaxed)) {
            const int64_t now = wb_monotonic_ns();
            const double elapsed = double(now - t0);
            const uint64_t pos = i % n;
            const uint64_t limit = std::min({kBatch, count - i, n - pos});
            uint64_t due = 0;
            if (mode == WB_FEED_FLAT) {
                due = limit;
            } else {
                while (due < limit && offset_ns(i + due) <= elapsed) ++due;
            }
            if (due == 0) {
                const int64_t wait = int64_t(offset_ns(i) - elapsed);
                if (wait > kSleepAbove) {
                    std::this_thread::sleep_for(std::chrono::nanoseconds(wait - kWakeEarly));
                } else {
                    wb_cpu_relax();
                }
                continue;
            }
            const uint64_t k = wb_ring_publish(ring, events + pos, due, !lossless);
            if (lossless) {
                // a full ring: spin briefly, then yield the core (the consumer may need it)
                if (k == 0 && ++full_spins > kFullSpins) std::this_thread::yield();
                else if (k == 0) wb_cpu_relax();
                else full_spins = 0;
                i += k;
            } else {
                i += due;
                if (k < due) dropped.fetch_add(due - k, std::memory_order_relaxed);
            }
            published.fetch_add(k, std::memory_order_relaxed);
        }
        finished_ns.store(wb_monotonic_ns(), std::memory_order_release);
        std::lock_guard<std::mutex> lock(mu);
        done = true;
        cv.notify_all();
    }
};

extern "C" {

wb_feed *wb_feed_start(wb_ring *r, const wb_event *events, uint64_t n, uint64_t count, int mode,
                       double value, int lossless, char *err, size_t errlen) {
    auto fail = [&](const char *msg) -> wb_feed * {
        if (err != nullptr && errlen > 0) snprintf(err, errlen, "%s", msg);
        return nullptr;
    };
    if (r == nullptr || (events == nullptr && n > 0)) return fail("no ring or no events");
    if (n == 0) return fail("the event array is empty");
    if (mode != WB_FEED_FLAT && mode != WB_FEED_RATE && mode != WB_FEED_SPEED)
        return fail("mode must be WB_FEED_FLAT, WB_FEED_RATE or WB_FEED_SPEED");
    if (mode != WB_FEED_FLAT && !(value > 0.0))
        return fail("rate and speed must be positive and finite");
    auto *f = new (std::nothrow) wb_feed();
    if (f == nullptr) return fail("out of memory");
    f->ring = r;
    f->events = events;
    f->n = n;
    f->count = count;
    f->mode = mode;
    f->value = value;
    f->lossless = lossless != 0;
    f->ns_per_event = mode == WB_FEED_RATE ? 1e9 / value : 0.0;
    const double span = double(events[n - 1].ts_recv_ns - events[0].ts_recv_ns);
    f->lap_span = n > 1 ? span + span / double(n - 1) : 0.0;
    wb_ring_claim_producer(r);
    try {
        f->thread = std::thread([f] { f->run(); });
    } catch (...) {
        delete f;
        return fail("cannot start the feed thread");
    }
    return f;
}

void wb_feed_stop(wb_feed *f) { f->stop.store(true, std::memory_order_relaxed); }

int wb_feed_wait(wb_feed *f, int64_t timeout_ns) {
    std::unique_lock<std::mutex> lock(f->mu);
    if (timeout_ns < 0) {
        f->cv.wait(lock, [f] { return f->done; });
    } else {
        f->cv.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [f] { return f->done; });
    }
    return f->done ? 1 : 0;
}

void wb_feed_status_get(wb_feed *f, wb_feed_status *out) {
    out->published = f->published.load(std::memory_order_relaxed);
    out->dropped = f->dropped.load(std::memory_order_relaxed);
    out->started_ns = f->started_ns.load(std::memory_order_acquire);
    out->finished_ns = f->finished_ns.load(std::memory_order_acquire);
    out->running = out->finished_ns == 0 ? 1 : 0;
    out->stopped = f->stop.load(std::memory_order_relaxed) &&
                   out->published + out->dropped < f->count ? 1 : 0;
}

void wb_feed_free(wb_feed *f) {
    if (f == nullptr) return;
    f->stop.store(true, std::memory_order_relaxed);
    if (f->thread.joinable()) f->thread.join();
    delete f;
}

}  // extern "C"
