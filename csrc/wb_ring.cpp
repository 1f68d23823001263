// wb_ring.cpp: the SPSC ring of wb_event records in POSIX shared memory (see wb_ring.h).
#include "wb_ring.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <new>

#include <fcntl.h>
#include <signal.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wb_internal.h"

namespace {

constexpr size_t kLine = 64;

// The shared header as C++ sees it: wb_ring_header with std::atomic cursors and counters.
struct ShmHeader {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_size;
    uint64_t capacity;
    int64_t created_ns;
    int32_t creator_pid;
    std::atomic<int32_t> producer_pid;
    uint64_t header_size;
    std::atomic<uint64_t> producer_done;
    uint64_t pad0;
    alignas(kLine) std::atomic<uint64_t> head;
    std::atomic<uint64_t> next_seq;
    std::atomic<uint64_t> dropped;
    std::atomic<uint32_t> head32;   // the low 32 bits of head: the futex word readers sleep on
    uint32_t pad1a;
    uint64_t pad1[4];
    alignas(kLine) std::atomic<uint64_t> tail;
    std::atomic<uint64_t> last_seq;
    std::atomic<uint64_t> gaps;
    std::atomic<uint64_t> high_water;
    std::atomic<uint32_t> sleeping;  // 1 while the consumer sleeps on head32
    uint32_t pad2a;
    uint64_t pad2[3];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free");
static_assert(std::atomic<int32_t>::is_always_lock_free, "32-bit atomics must be lock-free");
static_assert(sizeof(ShmHeader) == sizeof(wb_ring_header), "header size");
static_assert(sizeof(ShmHeader) == 3 * kLine, "header is three cache lines");
static_assert(offsetof(ShmHeader, producer_pid) == offsetof(wb_ring_header, producer_pid), "pid");
static_assert(offsetof(ShmHeader, header_size) == offsetof(wb_ring_header, header_size), "hsz");
static_assert(offsetof(ShmHeader, producer_done) == offsetof(wb_ring_header, producer_done),
              "done");
static_assert(offsetof(ShmHeader, head) == offsetof(wb_ring_header, head), "head");
static_assert(offsetof(ShmHeader, dropped) == offsetof(wb_ring_header, dropped), "dropped");
static_assert(offsetof(ShmHeader, tail) == offsetof(wb_ring_header, tail), "tail");
static_assert(offsetof(ShmHeader, high_water) == offsetof(wb_ring_header, high_water), "hw");
static_assert(sizeof(wb_event) == WB_EVENT_SIZE, "wb_event is one cache line");

void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == nullptr || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

bool valid_name(const char *name) {
    if (name == nullptr) return false;
    size_t n = strnlen(name, WB_RING_NAME_MAX + 1);
    if (n == 0 || n > WB_RING_NAME_MAX) return false;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return false;
    for (size_t i = 0; i < n; ++i) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

void shm_path(const char *name, char *out, size_t outlen) { snprintf(out, outlen, "/wb-%s", name); }

int64_t realtime_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool process_alive(int32_t pid) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == nullptr) return true;  // no procfs: trust kill()
    char buf[256];
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    const char *close_paren = strrchr(buf, ')');  // "pid (comm) S ..."
    return !(close_paren != nullptr && close_paren[1] == ' ' && close_paren[2] == 'Z');
}

// ---- the truncation guard (design in wb_ring.h) ----
// One entry per mapping in this process. base: 0 free, 1 being filled, else the mapping's
// address. The SIGBUS handler only reads base and size and stores to truncated.
struct Guard {
    std::atomic<uintptr_t> base{0};
    std::atomic<size_t> size{0};
    std::atomic<int> truncated{0};
};
constexpr int kMaxMappings = 1024;
Guard g_guards[kMaxMappings];
struct sigaction g_prev_sigbus;  // the handler ours replaced: every other fault goes to it

// A fault that is not a truncated ring's: what the replaced handler would have done.
void chain_sigbus(int sig, siginfo_t *info, void *ctx) {
    const struct sigaction &prev = g_prev_sigbus;
    if ((prev.sa_flags & SA_SIGINFO) != 0) {
        if (prev.sa_sigaction != nullptr) {
            prev.sa_sigaction(sig, info, ctx);
            return;
        }
    } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
        prev.sa_handler(sig);
        return;
    }
    // the default action (a memory fault cannot be ignored): the signal raised here is blocked
    // while this handler runs and kills the process when it returns
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    raise(sig);
}

// Async-signal-safe: atomics, mmap (a system call; Wayland's wl_shm recovers the same way)
// and errno saved and restored.
void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    if (info != nullptr && info->si_code == BUS_ADRERR) {
        const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
        for (Guard &g : g_guards) {
            const uintptr_t base = g.base.load(std::memory_order_acquire);
            const size_t size = g.size.load(std::memory_order_relaxed);
            if (base <= 1 || addr - base >= size) continue;
            const int saved = errno;
            g.truncated.store(1, std::memory_order_seq_cst);
            void *copy = mmap(reinterpret_cast<void *>(base), size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            errno = saved;
            if (copy == MAP_FAILED) break;
            reinterpret_cast<ShmHeader *>(base)->head.store(WB_RING_POISON_HEAD,
                                                            std::memory_order_release);
            return;
        }
    }
    chain_sigbus(sig, info, ctx);
}

// Installs on_sigbus once per process, keeping the handler it replaces for chain_sigbus.
bool install_sigbus_handler(char *err, size_t errlen) {
    static std::mutex mu;
    static bool installed = false;
    std::lock_guard<std::mutex> lock(mu);
    if (installed) return true;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_sigbus;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    // the previous handler is saved before ours can run
    if (sigaction(SIGBUS, nullptr, &g_prev_sigbus) != 0 ||
        sigaction(SIGBUS, &ours, nullptr) != 0) {
        set_err(err, errlen, "cannot install the SIGBUS guard of the rings: %s", strerror(errno));
        return false;
    }
    installed = true;
    return true;
}

// Registers a mapping with the guard (the handler is installed on first use); nullptr with a
// message when the handler cannot be installed or kMaxMappings rings are mapped.
Guard *guard_mapping(void *base, size_t size, char *err, size_t errlen) {
    if (!install_sigbus_handler(err, errlen)) return nullptr;
    for (Guard &g : g_guards) {
        uintptr_t free_entry = 0;
        if (g.base.compare_exchange_strong(free_entry, 1, std::memory_order_acq_rel)) {
            g.size.store(size, std::memory_order_relaxed);
            g.truncated.store(0, std::memory_order_relaxed);
            g.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
            return &g;
        }
    }
    set_err(err, errlen, "too many rings mapped in this process: %d at most", kMaxMappings);
    return nullptr;
}

// Unmaps (the ring's pages or their zero-filled copy) and frees the guard entry.
void unmap_guarded(Guard *g, void *base, size_t size) {
    g->base.store(0, std::memory_order_release);
    munmap(base, size);
}

// True when `st` (the ring's file) is owned by this process's effective uid with a mode no
// wider than WB_RING_MODE; else false, with the owner and mode found and required in err.
bool trusted(const char *name, const char *path, const struct stat &st, char *err,
             size_t errlen) {
    const unsigned mode = unsigned(st.st_mode) & 07777u;
    const uid_t uid = geteuid();
    const bool owner_ok = st.st_uid == uid;
    const bool mode_ok = (mode & ~unsigned(WB_RING_MODE)) == 0;
    if (owner_ok && mode_ok) return true;
    char owner[96] = "", perm[96] = "";
    if (!owner_ok)
        snprintf(owner, sizeof owner, "owned by uid %u, expected uid %u (this process)",
                 unsigned(st.st_uid), unsigned(uid));
    if (!mode_ok)
        snprintf(perm, sizeof perm, "mode %04o, required %04o (no access for group or others)",
                 mode, unsigned(WB_RING_MODE));
    set_err(err, errlen, "ring '%s' (/dev/shm%s) refused: %s%s%s", name, path, owner,
            owner_ok || mode_ok ? "" : "; ", perm);
    return false;
}

// True when the header read from the file describes a ring of this build that fills exactly
// `size` bytes; else false, with what differs in detail.
bool header_fits(const wb_ring_header &h, size_t size, char *detail, size_t len) {
    if (h.magic != WB_RING_MAGIC) {
        snprintf(detail, len, "magic 0x%016llx, expected 0x%016llx",
                 (unsigned long long)h.magic, (unsigned long long)WB_RING_MAGIC);
    } else if (h.layout_version != WB_RING_LAYOUT_VERSION) {
        snprintf(detail, len, "layout version %u, this build reads version %d", h.layout_version,
                 WB_RING_LAYOUT_VERSION);
    } else if (h.record_size != sizeof(wb_event)) {
        snprintf(detail, len, "record size %u bytes, this build uses %zu bytes", h.record_size,
                 sizeof(wb_event));
    } else if (h.header_size != sizeof(wb_ring_header)) {
        snprintf(detail, len, "header size %llu bytes, this build uses %zu bytes",
                 (unsigned long long)h.header_size, sizeof(wb_ring_header));
    } else if (h.capacity < WB_RING_MIN_CAPACITY || h.capacity > WB_RING_MAX_CAPACITY ||
               (h.capacity & (h.capacity - 1)) != 0) {
        snprintf(detail, len, "capacity %llu, expected a power of two in [%d, %u]",
                 (unsigned long long)h.capacity, WB_RING_MIN_CAPACITY, WB_RING_MAX_CAPACITY);
    } else if (size != sizeof(wb_ring_header) + h.capacity * sizeof(wb_event)) {
        snprintf(detail, len, "file of %zu bytes, expected %zu bytes for capacity %llu", size,
                 sizeof(wb_ring_header) + size_t(h.capacity) * sizeof(wb_event),
                 (unsigned long long)h.capacity);
    } else {
        return true;
    }
    return false;
}

}  // namespace

// One process's view of a ring. Producer-local and consumer-local caches sit on separate lines.
struct wb_ring {
    ShmHeader *hdr;
    wb_event *slots;
    Guard *guard;
    size_t map_size;
    uint64_t mask;
    uint64_t capacity;
    alignas(kLine) bool producer;         // this handle has claimed the producer role
    uint64_t p_head;                      // producer: next head to publish
    uint64_t p_seq;                       // producer: last sequence number handed out
    uint64_t p_tail_cache;                // producer: last tail seen
    alignas(kLine) uint64_t c_tail;       // consumer: tail including held records
    uint64_t c_held;                      // consumer: records of the last read not yet released
    uint64_t c_last_seq;
};

// capacity: the validated one (the mapping's header may have been rewritten since).
static wb_ring *make_handle(void *base, size_t map_size, uint64_t capacity, Guard *guard) {
    auto *r = new (std::nothrow) wb_ring();
    if (r == nullptr) return nullptr;
    r->hdr = static_cast<ShmHeader *>(base);
    r->slots = reinterpret_cast<wb_event *>(static_cast<char *>(base) + sizeof(ShmHeader));
    r->guard = guard;
    r->map_size = map_size;
    r->capacity = capacity;
    r->mask = capacity - 1;
    r->p_head = r->hdr->head.load(std::memory_order_acquire);
    r->p_seq = r->hdr->next_seq.load(std::memory_order_relaxed);
    r->p_tail_cache = r->hdr->tail.load(std::memory_order_acquire);
    r->c_tail = r->p_tail_cache;
    r->c_held = 0;
    r->c_last_seq = r->hdr->last_seq.load(std::memory_order_relaxed);
    return r;
}

// The truncation mark of r's mapping (set by the SIGBUS handler, in this thread or another).
static inline long futex(std::atomic<uint32_t> *word, int op, uint32_t value,
                         const timespec *timeout) {
    return syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, value, timeout, nullptr, 0);
}

// Publishes head (release) and wakes a consumer sleeping in wb_ring_read_block. The seq_cst
// fence pairs with the consumer's between raising `sleeping` and reading head: of the two,
// at least one sees the other's store, so no wake-up is lost. head32 changes before head, so
// a consumer that read the old head32 and then sleeps on it returns at once.
static inline void store_head(ShmHeader *h, uint64_t head) {
    h->head32.store(uint32_t(head), std::memory_order_relaxed);
    h->head.store(head, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (h->sleeping.load(std::memory_order_relaxed))
        futex(&h->head32, FUTEX_WAKE, INT32_MAX, nullptr);
}

static inline bool truncated(const wb_ring *r) {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // not hoisted above the slot accesses
    return r->guard->truncated.load(std::memory_order_acquire) != 0;
}

uint64_t wb_ring_publish(wb_ring *r, const wb_event *evs, uint64_t n, bool drop_rest) {
    if (truncated(r)) return 0;
    if (!r->producer) wb_ring_claim_producer(r);
    const uint64_t head = r->p_head;
    uint64_t room = r->capacity - (head - r->p_tail_cache);
    if (room < n) {
        r->p_tail_cache = r->hdr->tail.load(std::memory_order_acquire);
        room = r->capacity - (head - r->p_tail_cache);
    }
    const uint64_t k = room < n ? room : n;
    const uint64_t seq0 = r->p_seq;
    if (k > 0) {
        const int64_t now = wb_monotonic_ns();
        wb_event *slots = r->slots;
        const uint64_t mask = r->mask;
        // byte copies: the caller's array (numpy) need not have wb_event's 64-byte alignment
        const auto *src = reinterpret_cast<const unsigned char *>(evs);
        for (uint64_t i = 0; i < k; ++i) {
            wb_event *s = &slots[(head + i) & mask];
            memcpy(static_cast<void *>(s), src + i * sizeof(wb_event), sizeof(wb_event));
            s->seq = seq0 + 1 + i;
            s->ts_publish_ns = now;
        }
        if (truncated(r)) return 0;  // the copies went into the zero-filled stand-in
        r->p_head = head + k;
        store_head(r->hdr, head + k);
    }
    const uint64_t used = drop_rest ? n : k;
    r->p_seq = seq0 + used;
    r->hdr->next_seq.store(seq0 + used, std::memory_order_relaxed);
    if (used > k) {
        r->hdr->dropped.store(r->hdr->dropped.load(std::memory_order_relaxed) + (used - k),
                              std::memory_order_relaxed);
    }
    return k;
}

wb_event *wb_ring_reserve(wb_ring *r, uint64_t *n) {
    if (truncated(r)) return nullptr;
    if (!r->producer) wb_ring_claim_producer(r);
    const uint64_t head = r->p_head;
    uint64_t room = r->capacity - (head - r->p_tail_cache);
    const uint64_t to_wrap = r->capacity - (head & r->mask);
    if (room < *n && room < to_wrap) {
        r->p_tail_cache = r->hdr->tail.load(std::memory_order_acquire);
        room = r->capacity - (head - r->p_tail_cache);
    }
    *n = room < to_wrap ? room : to_wrap;
    return *n ? &r->slots[head & r->mask] : nullptr;
}

uint64_t wb_ring_commit(wb_ring *r, uint64_t n) {
    if (n == 0 || truncated(r)) return 0;
    const uint64_t head = r->p_head;
    const uint64_t seq0 = r->p_seq;
    const int64_t now = wb_monotonic_ns();
    wb_event *s = &r->slots[head & r->mask];
    for (uint64_t i = 0; i < n; ++i) {
        s[i].seq = seq0 + 1 + i;
        s[i].ts_publish_ns = now;
    }
    if (truncated(r)) return 0;
    r->p_head = head + n;
    r->p_seq = seq0 + n;
    r->hdr->next_seq.store(seq0 + n, std::memory_order_relaxed);
    store_head(r->hdr, head + n);
    return n;
}

extern "C" {

wb_ring *wb_ring_create(const char *name, uint64_t capacity, int *code, char *err,
                        size_t errlen) {
    *code = WB_EINVAL;
    if (!valid_name(name)) {
        set_err(err, errlen, "invalid ring name: expected 1..%d characters of [A-Za-z0-9._-]",
                WB_RING_NAME_MAX);
        return nullptr;
    }
    if (capacity < WB_RING_MIN_CAPACITY || capacity > WB_RING_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0) {
        set_err(err, errlen, "capacity must be a power of two in [%d, %u], got %llu",
                WB_RING_MIN_CAPACITY, WB_RING_MAX_CAPACITY, (unsigned long long)capacity);
        return nullptr;
    }
    char path[WB_RING_NAME_MAX + 8];
    shm_path(name, path, sizeof path);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, WB_RING_MODE);
    if (fd < 0) {
        *code = errno == EEXIST ? WB_EEXIST : WB_ESYS;
        set_err(err, errlen, "%s: ring '%s' (/dev/shm%s): %s",
                errno == EEXIST ? "exists" : "shm_open", name, path, strerror(errno));
        return nullptr;
    }
    *code = WB_ESYS;
    // shm_open applied the umask (which can only narrow the mode): set exactly WB_RING_MODE
    if (fchmod(fd, WB_RING_MODE) != 0) {
        set_err(err, errlen, "chmod %04o of ring '%s': %s", WB_RING_MODE, name, strerror(errno));
        close(fd);
        shm_unlink(path);
        return nullptr;
    }
    size_t size = sizeof(ShmHeader) + capacity * sizeof(wb_event);
    int rc = ftruncate(fd, off_t(size));
    // reserve the pages now: a full /dev/shm fails here instead of SIGBUS on first touch
    if (rc == 0) rc = posix_fallocate(fd, 0, off_t(size)) == 0 ? 0 : -1;
    void *base = rc == 0 ? mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    int saved = errno;
    close(fd);
    if (base == MAP_FAILED) {
        shm_unlink(path);
        set_err(err, errlen, "cannot size ring '%s' to %zu bytes: %s", name, size, strerror(saved));
        return nullptr;
    }
    Guard *guard = guard_mapping(base, size, err, errlen);
    if (guard == nullptr) {
        munmap(base, size);
        shm_unlink(path);
        return nullptr;
    }
    auto *h = static_cast<ShmHeader *>(base);
    h->layout_version = WB_RING_LAYOUT_VERSION;
    h->record_size = sizeof(wb_event);
    h->capacity = capacity;
    h->created_ns = realtime_ns();
    h->creator_pid = int32_t(getpid());
    h->header_size = sizeof(ShmHeader);
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = WB_RING_MAGIC;
    wb_ring *r = make_handle(base, size, capacity, guard);
    if (r == nullptr || truncated(r)) {
        *code = r == nullptr ? WB_ESYS : WB_ETRUNC;
        if (r == nullptr) set_err(err, errlen, "out of memory");
        else set_err(err, errlen, "ring '%s' was truncated while it was being created", name);
        delete r;
        unmap_guarded(guard, base, size);
        shm_unlink(path);
        return nullptr;
    }
    *code = WB_OK;
    return r;
}

wb_ring *wb_ring_attach(const char *name, int *code, char *err, size_t errlen) {
    *code = WB_OK;
    if (!valid_name(name)) {
        *code = WB_EINVAL;
        set_err(err, errlen, "invalid ring name: expected 1..%d characters of [A-Za-z0-9._-]",
                WB_RING_NAME_MAX);
        return nullptr;
    }
    char path[WB_RING_NAME_MAX + 8];
    shm_path(name, path, sizeof path);
    struct stat st;
    int fd = shm_open(path, O_RDWR, 0);
    if (fd < 0) {
        const int saved = errno;
        char file[WB_RING_NAME_MAX + 16];
        snprintf(file, sizeof file, "/dev/shm%s", path);
        // another user's ring we may not open: say whose it is and how it is shared
        if (saved == EACCES && lstat(file, &st) == 0 && !trusted(name, path, st, err, errlen)) {
            *code = WB_EPERM;
            return nullptr;
        }
        *code = saved == ENOENT ? WB_ENOTFOUND : saved == EACCES ? WB_EPERM : WB_ESYS;
        set_err(err, errlen, "no ring '%s' (/dev/shm%s): %s", name, path, strerror(saved));
        return nullptr;
    }
    // every check below is on the open file, so what is checked is what gets mapped
    wb_ring_header head;
    char detail[160];
    size_t size = 0;
    if (fstat(fd, &st) != 0) {
        *code = WB_ESYS;
        set_err(err, errlen, "fstat of ring '%s': %s", name, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        *code = WB_ELAYOUT;
        set_err(err, errlen, "ring '%s' (/dev/shm%s) is not a regular file", name, path);
    } else if (!trusted(name, path, st, err, errlen)) {
        *code = WB_EPERM;
    } else if ((size = size_t(st.st_size)) < sizeof(ShmHeader) ||
               pread(fd, &head, sizeof head, 0) != ssize_t(sizeof head)) {
        *code = WB_ELAYOUT;
        set_err(err, errlen, "ring '%s': %zu bytes, smaller than the %zu-byte header", name, size,
                sizeof(ShmHeader));
    } else if (!header_fits(head, size, detail, sizeof detail)) {
        *code = WB_ELAYOUT;
        set_err(err, errlen, "ring '%s': %s", name, detail);
    }
    if (*code != WB_OK) {
        close(fd);
        return nullptr;
    }
    void *base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (base == MAP_FAILED) {
        *code = WB_ESYS;
        set_err(err, errlen, "mmap of ring '%s': %s", name, strerror(saved));
        return nullptr;
    }
    Guard *guard = guard_mapping(base, size, err, errlen);
    if (guard == nullptr) {
        munmap(base, size);
        *code = WB_ESYS;
        return nullptr;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    wb_ring *r = make_handle(base, size, head.capacity, guard);
    if (r == nullptr || truncated(r)) {
        *code = r == nullptr ? WB_ESYS : WB_ETRUNC;
        if (r == nullptr) set_err(err, errlen, "out of memory");
        else set_err(err, errlen, "ring '%s' was truncated while it was being attached", name);
        delete r;
        unmap_guarded(guard, base, size);
        return nullptr;
    }
    return r;
}

void wb_ring_close(wb_ring *r) {
    if (r == nullptr) return;
    if (r->producer && !truncated(r)) r->hdr->producer_done.store(1, std::memory_order_release);
    unmap_guarded(r->guard, r->hdr, r->map_size);
    delete r;
}

int wb_ring_unlink(const char *name, char *err, size_t errlen) {
    if (!valid_name(name)) {
        set_err(err, errlen, "invalid ring name");
        return WB_EINVAL;
    }
    char path[WB_RING_NAME_MAX + 8];
    shm_path(name, path, sizeof path);
    if (shm_unlink(path) != 0) {
        set_err(err, errlen, "unlink ring '%s': %s", name, strerror(errno));
        return errno == ENOENT ? WB_ENOTFOUND : WB_ESYS;
    }
    return WB_OK;
}

void wb_ring_claim_producer(wb_ring *r) {
    r->producer = true;
    r->hdr->producer_done.store(0, std::memory_order_relaxed);
    r->hdr->producer_pid.store(int32_t(getpid()), std::memory_order_release);
    r->p_head = r->hdr->head.load(std::memory_order_acquire);
    r->p_seq = r->hdr->next_seq.load(std::memory_order_relaxed);
    r->p_tail_cache = r->hdr->tail.load(std::memory_order_acquire);
}

int wb_ring_push(wb_ring *r, const wb_event *ev) { return int(wb_ring_publish(r, ev, 1, true)); }

uint64_t wb_ring_push_batch(wb_ring *r, const wb_event *evs, uint64_t n) {
    return wb_ring_publish(r, evs, n, true);
}

static void release(wb_ring *r) {
    if (r->c_held == 0) return;
    r->c_held = 0;
    r->hdr->tail.store(r->c_tail, std::memory_order_release);
}

int wb_ring_release(wb_ring *r) {
    release(r);
    return truncated(r) ? WB_ETRUNC : WB_OK;
}

// Loads head and records the high-water mark. Occupancy (head - released tail) only grows
// between the consumer's releases, so its peak is reached just before a release: measuring it
// here, before each release, makes the mark exact.
static uint64_t load_head(wb_ring *r) {
    const uint64_t head = r->hdr->head.load(std::memory_order_acquire);
    const uint64_t occupancy = head - (r->c_tail - r->c_held);
    if (occupancy > r->hdr->high_water.load(std::memory_order_relaxed))
        r->hdr->high_water.store(occupancy, std::memory_order_relaxed);
    return head;
}

// Takes up to max records below head that are contiguous in the slot array; checks their
// sequence numbers against the last one read, counts gaps and flags the record after each gap.
static uint64_t take(wb_ring *r, uint64_t head, uint64_t max, uint64_t *first) {
    const uint64_t tail = r->c_tail;
    const uint64_t avail = head - tail;
    const uint64_t idx = tail & r->mask;
    uint64_t n = avail < max ? avail : max;
    if (n > r->capacity - idx) n = r->capacity - idx;
    if (n == 0) return 0;
    wb_event *span = r->slots + idx;
    const uint64_t last = span[n - 1].seq;
    if (last - r->c_last_seq != n) {  // sequence numbers only grow: this means a gap inside
        uint64_t prev = r->c_last_seq, missing = 0;
        for (uint64_t i = 0; i < n; ++i) {
            if (span[i].seq != prev + 1) {
                missing += span[i].seq - prev - 1;
                span[i].flags |= WB_FLAG_GAP;
            }
            prev = span[i].seq;
        }
        r->hdr->gaps.store(r->hdr->gaps.load(std::memory_order_relaxed) + missing,
                           std::memory_order_relaxed);
    }
    r->c_last_seq = last;
    r->hdr->last_seq.store(last, std::memory_order_relaxed);
    r->c_tail = tail + n;
    *first = idx;
    return n;
}

uint64_t wb_ring_read(wb_ring *r, uint64_t max, uint64_t *first) {
    const uint64_t head = load_head(r);
    release(r);
    uint64_t idx = 0;
    const uint64_t n = take(r, head, max, &idx);
    if (first != nullptr) *first = idx;
    r->c_held = n;
    return truncated(r) ? WB_RING_TRUNCATED : n;
}

uint64_t wb_ring_read_wait(wb_ring *r, uint64_t max, int64_t wait_ns, uint64_t *first) {
    load_head(r);  // the high-water mark, before the previous read's slots go back
    release(r);  // the producer may refill those slots while we wait
    if (wait_ns > 0 && r->hdr->head.load(std::memory_order_acquire) == r->c_tail) {
        const int64_t deadline = wb_monotonic_ns() + wait_ns;
        uint32_t spins = 0;
        while (r->hdr->head.load(std::memory_order_acquire) == r->c_tail) {
            wb_cpu_relax();
            if ((++spins & 63) == 0 && wb_monotonic_ns() >= deadline) break;
        }
    }
    return wb_ring_read(r, max, first);
}

uint64_t wb_ring_read_block(wb_ring *r, uint64_t max, int64_t spin_ns, int64_t timeout_ns,
                            uint64_t *first) {
    load_head(r);
    release(r);
    ShmHeader *h = r->hdr;
    if (h->head.load(std::memory_order_acquire) == r->c_tail && !truncated(r)) {
        const int64_t start = wb_monotonic_ns();
        uint32_t spins = 0;
        while (h->head.load(std::memory_order_acquire) == r->c_tail) {
            wb_cpu_relax();
            if ((++spins & 63) == 0 && wb_monotonic_ns() - start >= spin_ns) break;
        }
        for (;;) {
            const int64_t left = start + timeout_ns - wb_monotonic_ns();
            if (left <= 0 || truncated(r)) break;
            const uint32_t seen = h->head32.load(std::memory_order_acquire);
            h->sleeping.store(1, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (h->head.load(std::memory_order_acquire) != r->c_tail) {
                h->sleeping.store(0, std::memory_order_relaxed);
                break;
            }
            timespec ts{time_t(left / 1000000000), long(left % 1000000000)};
            futex(&h->head32, FUTEX_WAIT, seen, &ts);
            h->sleeping.store(0, std::memory_order_relaxed);
            if (h->head.load(std::memory_order_acquire) != r->c_tail) break;
        }
    }
    return wb_ring_read(r, max, first);
}

uint64_t wb_ring_pop_batch(wb_ring *r, wb_event *out, uint64_t max) {
    const uint64_t head = load_head(r);
    release(r);
    uint64_t done = 0, first = 0;
    while (done < max) {  // at most two spans: up to the wrap, then from slot 0
        const uint64_t n = take(r, head, max - done, &first);
        if (n == 0) break;
        memcpy(reinterpret_cast<unsigned char *>(out) + done * sizeof(wb_event),
               r->slots + first, n * sizeof(wb_event));
        done += n;
    }
    if (done > 0) r->hdr->tail.store(r->c_tail, std::memory_order_release);
    return truncated(r) ? WB_RING_TRUNCATED : done;
}

int wb_ring_stats_get(wb_ring *r, wb_ring_stats *out) {
    ShmHeader *h = r->hdr;
    const uint64_t tail = h->tail.load(std::memory_order_acquire);
    const uint64_t head = h->head.load(std::memory_order_acquire);
    const uint64_t pending = head - tail;
    const uint64_t hw = h->high_water.load(std::memory_order_relaxed);
    out->capacity = h->capacity;
    out->published = head;
    out->consumed = tail;
    out->dropped = h->dropped.load(std::memory_order_relaxed);
    out->gaps = h->gaps.load(std::memory_order_relaxed);
    out->high_water = pending > hw ? pending : hw;
    out->pending = pending;
    out->created_ns = h->created_ns;
    out->creator_pid = h->creator_pid;
    out->producer_pid = h->producer_pid.load(std::memory_order_acquire);
    out->producer_alive = out->producer_pid == 0 ? -1 : int32_t(process_alive(out->producer_pid));
    out->producer_done = int32_t(h->producer_done.load(std::memory_order_acquire));
    out->creator_alive = int32_t(process_alive(out->creator_pid));
    return truncated(r) ? WB_ETRUNC : WB_OK;
}

int wb_ring_status(wb_ring *r) { return truncated(r) ? WB_ETRUNC : WB_OK; }

wb_event *wb_ring_slots(wb_ring *r) { return r->slots; }

uint64_t wb_ring_capacity(wb_ring *r) { return r->capacity; }

uint64_t wb_ring_taken(wb_ring *r) { return r->c_tail; }

}  // extern "C"
