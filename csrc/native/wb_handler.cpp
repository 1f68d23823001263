/* wb_handler.cpp: the native feed handler (see wb_native.h): Boost.Beast websocket and HTTP
 * clients over TCP or OpenSSL TLS on one io_context thread, the wb_parse.h parsers, the
 * wb_sync.h sequencer, and the C API.
 *
 * Receive path, per websocket read: Beast reads into one flat buffer (reused; its storage grows
 * to the largest message and stays); a whole message is parsed in place (the buffer keeps
 * WB_PARSE_PADDING writable bytes after it for simdjson) straight into the ring's free slots
 * (wb_ring_reserve); when the sequencer publishes the message as it is (a live book, a trade,
 * a quote) the slots are committed (wb_ring_commit: one ts_publish_ns) and nothing is copied.
 * A message the sequencer buffers, or one that does not fit before the ring's wrap, goes
 * through a reused staging batch instead. No per-message allocation or copy of the message
 * bytes on the live path.
 */
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "wb_internal.h"
#include "wb_native.h"
#include "wb_ring.h"
#include "wb_sync.h"

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;

namespace wbnet {

constexpr size_t READ_CHUNK = 1 << 16;           /* bytes asked of one websocket read */
constexpr uint64_t REST_BODY_LIMIT = 64u << 20;  /* a depth body larger than this is refused */
constexpr size_t STAGING_EVENTS = 4096;          /* initial staging batch */

/* ---- URLs ------------------------------------------------------------------------------ */
struct Url {
    bool tls = false;
    std::string host, port, target;
};

/* ws[s]://host[:port][/path][?query] (websocket) or http[s]://host[:port] (REST base). */
bool parse_url(const std::string &text, bool http_scheme, Url &out, std::string &err) {
    const char *plain = http_scheme ? "http://" : "ws://";
    const char *secure = http_scheme ? "https://" : "wss://";
    size_t at;
    if (text.rfind(secure, 0) == 0) {
        out.tls = true;
        at = strlen(secure);
    } else if (text.rfind(plain, 0) == 0) {
        out.tls = false;
        at = strlen(plain);
    } else {
        err = "URL must start with " + std::string(plain) + " or " + secure + ": " + text;
        return false;
    }
    size_t slash = text.find_first_of("/?", at);
    std::string hostport = text.substr(at, slash == std::string::npos ? std::string::npos
                                                                      : slash - at);
    out.target = slash == std::string::npos ? "/" : text.substr(slash);
    if (!out.target.empty() && out.target[0] == '?')
        out.target = "/" + out.target;
    size_t colon = hostport.rfind(':');
    if (colon != std::string::npos && hostport.find(']') == std::string::npos) {
        out.host = hostport.substr(0, colon);
        out.port = hostport.substr(colon + 1);
    } else {
        out.host = hostport;
        out.port = out.tls ? "443" : "80";
    }
    if (out.host.empty() || out.port.empty() ||
        out.port.find_first_not_of("0123456789") != std::string::npos) {
        err = "URL without a host or with a bad port: " + text;
        return false;
    }
    return true;
}

/* ---- a TCP socket whose reads record when they completed -------------------------------- */
/* The lowest layer of the websocket stream: every completed socket read stores
 * CLOCK_MONOTONIC ns in *stamp, so a message's ts_recv_ns is the read that brought its last
 * byte, however many messages that read carried. */
class Stamped {
public:
    using executor_type = tcp::socket::executor_type;
    using lowest_layer_type = tcp::socket::lowest_layer_type;

    explicit Stamped(net::io_context &ioc) : sock_(ioc) {}
    void set_stamp(std::atomic<int64_t> *stamp) { stamp_ = stamp; }
    executor_type get_executor() { return sock_.get_executor(); }
    lowest_layer_type &lowest_layer() { return sock_.lowest_layer(); }
    const lowest_layer_type &lowest_layer() const { return sock_.lowest_layer(); }
    tcp::socket &socket() { return sock_; }

    template <class Handler>
    struct Stamper {
        std::atomic<int64_t> *stamp;
        Handler handler;
        void operator()(const error_code &ec, size_t n) {
            if (!ec)
                stamp->store(wb_monotonic_ns(), std::memory_order_relaxed);
            handler(ec, n);
        }
    };

    template <class Buffers, class Handler>
    void async_read_some(const Buffers &buffers, Handler &&handler) {
        sock_.async_read_some(buffers,
                              Stamper<std::decay_t<Handler>>{stamp_,
                                                             std::forward<Handler>(handler)});
    }
    template <class Buffers, class Handler>
    void async_write_some(const Buffers &buffers, Handler &&handler) {
        sock_.async_write_some(buffers, std::forward<Handler>(handler));
    }

private:
    tcp::socket sock_;
    std::atomic<int64_t> *stamp_ = nullptr;
};

/* websocket teardown of a Stamped stream: the socket's (found by Beast through ADL) */
inline void teardown(beast::role_type role, Stamped &s, error_code &ec) {
    websocket::teardown(role, s.socket(), ec);
}
template <class Handler>
void async_teardown(beast::role_type role, Stamped &s, Handler &&handler) {
    websocket::async_teardown(role, s.socket(), std::forward<Handler>(handler));
}
/* what beast::close_socket does to a Stamped stream (a timed-out close, a failed teardown) */
inline void beast_close_socket(Stamped &s) {
    error_code ignored;
    s.socket().close(ignored);
}

/* ---- HDR-style histogram of ns values ---------------------------------------------------- */
/* Log-linear buckets: values below 64 exactly, above that 32 sub-buckets per power of two
 * (relative error < 1/32), up to ~2^41 ns (the last bucket takes anything larger). After
 * HdrHistogram's bucket layout (G. Tene, HdrHistogram, "sub-bucket" indexing). */
inline uint32_t bucket_of(uint64_t v) {
    if (v < 64)
        return uint32_t(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 5;
    uint64_t idx = 64 + uint64_t(shift - 1) * 32 + ((v >> shift) - 32);
    return idx < WB_NF_HIST_BUCKETS ? uint32_t(idx) : WB_NF_HIST_BUCKETS - 1;
}

inline uint64_t bucket_low(uint64_t i) {
    if (i < 64)
        return i;
    uint64_t k = i - 64;
    return (32 + k % 32) << (k / 32 + 1);
}

class Handler;

/* ---- one websocket connection ------------------------------------------------------------ */
class Conn : public std::enable_shared_from_this<Conn> {
public:
    virtual ~Conn() = default;
    virtual void start() = 0;
    virtual void send(const std::string &frame) = 0;
    virtual void close() = 0;
    bool delivered = false;  /* a message arrived on it */
    bool open = false;       /* handshakes done */
};

/* ---- the handler ------------------------------------------------------------------------- */
struct Counters {
    std::atomic<uint64_t> messages{0}, bytes{0}, events{0}, dropped{0}, malformed{0};
    std::array<std::atomic<uint64_t>, WB_BAD_COUNT> malformed_by{};
    std::atomic<uint64_t> snapshot_fetches{0}, snapshot_failures{0}, rest_throttled{0};
    std::atomic<uint64_t> connects{0}, reconnects{0}, silences{0}, switches{0};
    std::array<std::atomic<uint64_t>, WB_NF_HIST_BUCKETS> hist{};
};

class Handler : public wb::SyncOutput {
public:
    Handler(const wb_nf_config &cfg, wb_parser *parser, wb_ring *ring, const Url &url,
            const Url &rest)
        : cfg_(cfg), parser_(parser), ring_(ring), url_(url), rest_url_(rest),
          seq_(wb::rule_of(cfg.venue), cfg.max_buffer ? cfg.max_buffer : 100000, sync_c_),
          reconnect_timer_(ioc_), watchdog_timer_(ioc_), rng_(cfg.seed),
          staging_(STAGING_EVENTS) {
        url_text_ = cfg.url;
        ring_name_ = cfg.ring;
        ca_file_ = cfg.ca_file ? cfg.ca_file : "";
        rest_path_ = cfg.rest_path ? cfg.rest_path : "";
    }

    ~Handler() override {
        stop();
        join();
        wb_parser_free(parser_);
        wb_ring_close(ring_);
    }

    /* ---- set-up (before start) ---- */
    int add_symbol(const char *symbol, uint32_t id) {
        if (wb_parser_add_symbol(parser_, symbol, id) != 0)
            return -1;
        names_[id] = symbol;
        return 0;
    }
    void add_subscribe(const char *frame) { subscribe_.emplace_back(frame); }

    bool start(std::string &err) {
        if (thread_.joinable() || state_.load() != WB_NF_IDLE) {
            err = "the handler was already started";
            return false;
        }
        try {
            ssl_ctx_ = std::make_unique<ssl::context>(ssl::context::tls_client);
            if (!ca_file_.empty())
                ssl_ctx_->load_verify_file(ca_file_);
            else
                ssl_ctx_->set_default_verify_paths();
            ssl_ctx_->set_verify_mode(cfg_.verify ? ssl::verify_peer : ssl::verify_none);
        } catch (const std::exception &e) {
            err = std::string("TLS set-up: ") + e.what() +
                  (ca_file_.empty() ? "" : " (CA file " + ca_file_ + ")");
            return false;
        }
        state_.store(WB_NF_CONNECTING);
        thread_ = std::thread([this] { run(); });
        return true;
    }

    void stop() {
        bool expected = false;
        if (!stop_requested_.compare_exchange_strong(expected, true))
            return;
        net::post(ioc_, [this] { do_stop(); });
    }

    bool wait(int64_t timeout_ns) {
        std::unique_lock<std::mutex> lock(done_mu_);
        if (!done_cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [this] {
                return ended_ || !thread_.joinable();
            }))
            return false;
        lock.unlock();
        join();
        return true;
    }

    bool switch_endpoint(const std::string &url, std::string &err) {
        Url parsed;
        if (!parse_url(url, false, parsed, err))
            return false;
        net::post(ioc_, [this, parsed, url] {
            if (stopping_)
                return;
            {
                std::lock_guard<std::mutex> lock(mu_);
                url_text_ = url;
            }
            url_ = parsed;
            c_.switches.fetch_add(1, std::memory_order_relaxed);
            failures_ = 0;
            switching_ = true;
            if (conn_) {
                conn_->close();
            } else {
                reconnect_timer_.cancel();
                switching_ = false;
                connect();
            }
        });
        return true;
    }

    void stats(wb_nf_stats *out) const {
        auto ld = [](const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); };
        memset(out, 0, sizeof(*out));
        out->messages = ld(c_.messages);
        out->bytes = ld(c_.bytes);
        out->events = ld(c_.events);
        out->dropped = ld(c_.dropped);
        out->malformed = ld(c_.malformed);
        for (int i = 0; i < WB_BAD_COUNT; ++i)
            out->malformed_by[i] = ld(c_.malformed_by[i]);
        out->gaps = ld(sync_c_.gaps);
        out->resyncs = ld(sync_c_.resyncs);
        out->snapshot_fetches = ld(c_.snapshot_fetches);
        out->snapshot_failures = ld(c_.snapshot_failures);
        out->rest_throttled = ld(c_.rest_throttled);
        out->stale = ld(sync_c_.stale);
        out->buffered = ld(sync_c_.buffered);
        out->buffer_overflow = ld(sync_c_.buffer_overflow);
        out->connects = ld(c_.connects);
        out->reconnects = ld(c_.reconnects);
        out->silences = ld(c_.silences);
        out->switches = ld(c_.switches);
        out->invalidations = ld(sync_c_.invalidations);
        out->last_read_ns = last_read_ns_.load(std::memory_order_relaxed);
        out->state = state_.load();
        out->pinned_cpu = pinned_cpu_.load();
        out->pin_errno = pin_errno_.load();
        out->rt_errno = rt_errno_.load();
        out->rt_priority = rt_priority_.load();
    }

    uint64_t histogram(uint64_t *out, uint64_t n) const {
        uint64_t total = 0;
        for (uint64_t i = 0; i < WB_NF_HIST_BUCKETS; ++i) {
            uint64_t v = c_.hist[i].load(std::memory_order_relaxed);
            total += v;
            if (i < n)
                out[i] = v;
        }
        return total;
    }

    std::string error() const {
        std::lock_guard<std::mutex> lock(mu_);
        return error_;
    }
    std::string url_text() const {
        std::lock_guard<std::mutex> lock(mu_);
        return url_text_;
    }

    /* ---- called by connections (io thread) ---- */
    net::io_context &ioc() { return ioc_; }
    ssl::context &ssl_ctx() { return *ssl_ctx_; }
    std::atomic<int64_t> &read_stamp() { return last_read_ns_; }
    uint64_t max_frame() const { return cfg_.max_frame ? cfg_.max_frame : (64u << 20); }
    bool verify() const { return cfg_.verify != 0; }
    double open_timeout_s() const { return cfg_.open_timeout_s > 0 ? cfg_.open_timeout_s : 5; }

    void on_open(Conn &conn);
    void on_message(Conn &conn, const char *data, size_t len, size_t capacity, int64_t recv_ns);
    void on_oversize(Conn &conn);
    void on_closed(Conn &conn, const std::string &why);
    void on_snapshot(uint64_t gen, uint32_t id, int status, double retry_after_s, int used_weight,
                     const std::string &body, const std::string &why);

    /* ---- wb::SyncOutput ---- */
    void publish(const wb_event *events, uint32_t n) override {
        uint64_t k;
        if (events == reserved_ && n == reserved_n_) {  /* parsed into the slots: commit */
            reserved_ = nullptr;
            k = wb_ring_commit(ring_, n);
        } else {
            k = wb_ring_push_batch(ring_, events, n);
        }
        int64_t now = wb_monotonic_ns();
        c_.events.fetch_add(k, std::memory_order_relaxed);
        if (k < n)
            c_.dropped.fetch_add(n - k, std::memory_order_relaxed);
        if (events[0].ts_recv_ns > 0 && now >= events[0].ts_recv_ns)
            c_.hist[bucket_of(uint64_t(now - events[0].ts_recv_ns))].fetch_add(
                1, std::memory_order_relaxed);
    }
    void resync(uint32_t id, bool after_gap) override;

private:
    void run();
    void pin();
    void connect();
    void do_stop();
    void fail(const std::string &why);
    void set_error(const std::string &why) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = why;
    }
    void watch();
    void request_snapshot(uint32_t id, double delay_s);
    void fetch_snapshot(uint32_t id);
    void join() {
        std::lock_guard<std::mutex> lock(join_mu_);
        if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id())
            thread_.join();
    }
    double jitter_s(int attempt) {
        double cap = std::min(cfg_.backoff_max_s, cfg_.backoff_s * double(1ull << std::min(attempt, 30)));
        return std::uniform_real_distribution<double>(0.0, std::max(cap, 0.0))(rng_);
    }

    wb_nf_config cfg_;
    wb_parser *parser_;
    wb_ring *ring_;
    Url url_, rest_url_;
    std::string url_text_, ring_name_, ca_file_, rest_path_, error_;
    mutable std::mutex mu_;
    std::unique_ptr<ssl::context> ssl_ctx_;
    net::io_context ioc_{1};
    Counters c_;
    wb::SyncCounters sync_c_;
    wb::Sequencer seq_;
    net::steady_timer reconnect_timer_, watchdog_timer_;
    std::mt19937_64 rng_;
    std::vector<wb_event> staging_;
    const wb_event *reserved_ = nullptr;  /* the ring slots the current message was parsed into */
    uint32_t reserved_n_ = 0;
    std::vector<std::string> subscribe_;
    std::unordered_map<uint32_t, std::string> names_;
    std::unordered_map<uint32_t, std::shared_ptr<net::steady_timer>> rest_jobs_;
    std::shared_ptr<Conn> conn_;
    uint64_t gen_ = 0;
    int failures_ = 0;
    bool stopping_ = false, switching_ = false;
    int used_weight_ = 0;
    int64_t weight_minute_ = 0;
    std::atomic<int64_t> last_read_ns_{0};
    std::atomic<int> state_{WB_NF_IDLE};
    std::atomic<int> pinned_cpu_{-1}, pin_errno_{0}, rt_errno_{0}, rt_priority_{0};
    std::atomic<bool> stop_requested_{false};
    std::thread thread_;
    std::mutex join_mu_, done_mu_;
    std::condition_variable done_cv_;
    bool ended_ = false;
};

/* ---- the websocket connection, over TCP or TLS ------------------------------------------- */
template <bool TLS>
struct WsStream;
template <>
struct WsStream<false> {
    using type = websocket::stream<Stamped>;
    static std::unique_ptr<type> make(Handler &h) { return std::make_unique<type>(h.ioc()); }
    static Stamped &stamped(type &ws) { return ws.next_layer(); }
};
template <>
struct WsStream<true> {
    using type = websocket::stream<ssl::stream<Stamped>>;
    static std::unique_ptr<type> make(Handler &h) {
        return std::make_unique<type>(h.ioc(), h.ssl_ctx());
    }
    static Stamped &stamped(type &ws) { return ws.next_layer().next_layer(); }
};

template <bool TLS>
class WsConn : public Conn {
public:
    WsConn(Handler &h, Url url)
        : h_(h), url_(std::move(url)), resolver_(h.ioc()), timer_(h.ioc()),
          ws_(WsStream<TLS>::make(h)) {
        WsStream<TLS>::stamped(*ws_).set_stamp(&h.read_stamp());
    }

    void start() override {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        timer_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(h_.open_timeout_s())));
        timer_.async_wait([self](const error_code &ec) {
            if (!ec && !self->open)
                self->end("opening timed out");
        });
        resolver_.async_resolve(url_.host, url_.port,
                                [self](const error_code &ec, tcp::resolver::results_type r) {
                                    if (ec)
                                        return self->end("resolve: " + ec.message());
                                    self->on_resolved(r);
                                });
    }

    void send(const std::string &frame) override {
        out_.push_back(frame);
        if (out_.size() == 1 && open)
            write_next();
    }

    void close() override { end("closed by the handler"); }

private:
    tcp::socket &socket() { return WsStream<TLS>::stamped(*ws_).socket(); }

    void on_resolved(const tcp::resolver::results_type &r) {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        net::async_connect(socket(), r, [self](const error_code &ec, const tcp::endpoint &) {
            if (ec)
                return self->end("connect: " + ec.message());
            error_code ignored;
            self->socket().set_option(tcp::no_delay(true), ignored);
            self->on_connected();
        });
    }

    void on_connected() {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        if constexpr (TLS) {
            auto &tls = ws_->next_layer();
            if (!SSL_set_tlsext_host_name(tls.native_handle(), url_.host.c_str()))
                return end("TLS: cannot set the server name (SNI)");
            if (h_.verify())
                tls.set_verify_callback(ssl::host_name_verification(url_.host));
            tls.async_handshake(ssl::stream_base::client, [self](const error_code &ec) {
                if (ec)
                    return self->end("TLS handshake: " + ec.message());
                self->ws_handshake();
            });
        } else {
            ws_handshake();
        }
    }

    void ws_handshake() {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        ws_->set_option(websocket::stream_base::decorator([](websocket::request_type &req) {
            req.set(http::field::user_agent, "hft-workbench native feed handler");
        }));
        ws_->read_message_max(0);  /* no limit: oversize messages are skipped by on_read */
        ws_->auto_fragment(false);
        ws_->text(true);
        std::string host = url_.host + ":" + url_.port;
        ws_->async_handshake(host, url_.target, [self](const error_code &ec) {
            if (ec)
                return self->end("websocket handshake: " + ec.message());
            self->open = true;
            self->timer_.cancel();
            self->h_.on_open(*self);
            if (!self->ended_) {
                if (!self->out_.empty())
                    self->write_next();
                self->read();
            }
        });
    }

    void read() {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        ws_->async_read_some(buf_, READ_CHUNK, [self](const error_code &ec, size_t) {
            self->on_read(ec);
        });
    }

    void on_read(const error_code &ec) {
        if (ended_)
            return;
        if (ec) {
            if (ec == websocket::error::closed)
                return end("closed by the server (" + std::to_string(ws_->reason().code) + " " +
                           std::string(ws_->reason().reason.c_str()) + ")");
            return end("read: " + ec.message());
        }
        if (discarding_ || buf_.size() > h_.max_frame()) {
            discarding_ = true;
            buf_.clear();
        }
        if (ws_->is_message_done()) {
            if (discarding_) {
                discarding_ = false;
                h_.on_oversize(*this);
            } else {
                buf_.prepare(WB_PARSE_PADDING);  /* simdjson's padding after the message */
                auto data = buf_.data();
                h_.on_message(*this, static_cast<const char *>(data.data()), data.size(),
                              data.size() + WB_PARSE_PADDING,
                              h_.read_stamp().load(std::memory_order_relaxed));
            }
            buf_.clear();
            if (ended_)
                return;
        }
        read();
    }

    void write_next() {
        auto self = std::static_pointer_cast<WsConn>(shared_from_this());
        ws_->async_write(net::buffer(out_.front()), [self](const error_code &ec, size_t) {
            if (self->ended_)
                return;
            if (ec)
                return self->end("write: " + ec.message());
            self->out_.pop_front();
            if (!self->out_.empty())
                self->write_next();
        });
    }

    void end(const std::string &why) {
        if (ended_)
            return;
        ended_ = true;
        timer_.cancel();
        resolver_.cancel();
        error_code ignored;
        socket().shutdown(tcp::socket::shutdown_both, ignored);
        socket().close(ignored);
        h_.on_closed(*this, why);
    }

    Handler &h_;
    Url url_;
    tcp::resolver resolver_;
    net::steady_timer timer_;
    std::unique_ptr<typename WsStream<TLS>::type> ws_;
    beast::flat_buffer buf_;
    std::deque<std::string> out_;
    bool discarding_ = false;
    bool ended_ = false;
};

/* ---- one REST depth request --------------------------------------------------------------- */
/* GET <path>?symbol=S&limit=L over its own connection; done(status, retry_after_s,
 * used_weight, body, why) is called once (status 0: a transport failure, `why` says which). */
template <bool TLS>
class RestFetch : public std::enable_shared_from_this<RestFetch<TLS>> {
public:
    using Stream = std::conditional_t<TLS, ssl::stream<tcp::socket>, tcp::socket>;
    using Done = std::function<void(int, double, int, const std::string &, const std::string &)>;

    RestFetch(Handler &h, Url url, std::string target, Done done)
        : h_(h), url_(std::move(url)), target_(std::move(target)), done_(std::move(done)),
          resolver_(h.ioc()), timer_(h.ioc()), stream_(make_stream(h)) {}

    void start() {
        auto self = this->shared_from_this();
        timer_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(4 * h_.open_timeout_s())));
        timer_.async_wait([self](const error_code &ec) {
            if (!ec)
                self->finish(0, "request timed out");
        });
        resolver_.async_resolve(url_.host, url_.port,
                                [self](const error_code &ec, tcp::resolver::results_type r) {
                                    if (ec)
                                        return self->finish(0, "resolve: " + ec.message());
                                    net::async_connect(self->socket(), r,
                                                       [self](const error_code &ec2,
                                                              const tcp::endpoint &) {
                                                           if (ec2)
                                                               return self->finish(
                                                                   0, "connect: " + ec2.message());
                                                           self->handshake();
                                                       });
                                });
    }

private:
    static Stream make_stream(Handler &h) {
        if constexpr (TLS)
            return Stream(h.ioc(), h.ssl_ctx());
        else
            return Stream(h.ioc());
    }
    tcp::socket &socket() {
        if constexpr (TLS)
            return stream_.next_layer();
        else
            return stream_;
    }

    void handshake() {
        auto self = this->shared_from_this();
        if constexpr (TLS) {
            if (!SSL_set_tlsext_host_name(stream_.native_handle(), url_.host.c_str()))
                return finish(0, "TLS: cannot set the server name (SNI)");
            if (h_.verify())
                stream_.set_verify_callback(ssl::host_name_verification(url_.host));
            stream_.async_handshake(ssl::stream_base::client, [self](const error_code &ec) {
                if (ec)
                    return self->finish(0, "TLS handshake: " + ec.message());
                self->request();
            });
        } else {
            request();
        }
    }

    void request() {
        auto self = this->shared_from_this();
        req_ = {http::verb::get, target_, 11};
        req_.set(http::field::host, url_.host);
        req_.set(http::field::user_agent, "hft-workbench native feed handler");
        http::async_write(stream_, req_, [self](const error_code &ec, size_t) {
            if (ec)
                return self->finish(0, "write: " + ec.message());
            self->parser_.body_limit(REST_BODY_LIMIT);
            http::async_read(self->stream_, self->buf_, self->parser_,
                             [self](const error_code &ec2, size_t) {
                                 if (ec2)
                                     return self->finish(0, "read: " + ec2.message());
                                 self->finish(int(self->parser_.get().result_int()), "");
                             });
        });
    }

    void finish(int status, const std::string &why) {
        if (finished_)
            return;
        finished_ = true;
        timer_.cancel();
        resolver_.cancel();
        double retry_after = 0;
        int used = -1;
        std::string body;
        if (status) {
            auto &res = parser_.get();
            auto ra = res.find("Retry-After");
            if (ra != res.end())
                retry_after = std::atof(std::string(ra->value()).c_str());
            auto uw = res.find("X-MBX-USED-WEIGHT-1M");
            if (uw != res.end())
                used = std::atoi(std::string(uw->value()).c_str());
            body = std::move(res.body());
        }
        error_code ignored;
        socket().close(ignored);
        done_(status, retry_after, used, body, why);
    }

    Handler &h_;
    Url url_;
    std::string target_;
    Done done_;
    tcp::resolver resolver_;
    net::steady_timer timer_;
    Stream stream_;
    beast::flat_buffer buf_;
    http::request<http::empty_body> req_;
    http::response_parser<http::string_body> parser_;
    bool finished_ = false;
};

/* ---- handler: the io thread ----------------------------------------------------------------- */
void Handler::run() {
    pin();
    wb_ring_claim_producer(ring_);
    net::post(ioc_, [this] { connect(); });
    watch();
    try {
        ioc_.run();
    } catch (const std::exception &e) {
        set_error(std::string("handler thread: ") + e.what());
        state_.store(WB_NF_FAILED);
    }
    {
        std::lock_guard<std::mutex> lock(done_mu_);
        ended_ = true;
    }
    done_cv_.notify_all();
}

void Handler::pin() {
    if (cfg_.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cfg_.cpu, &set);
        int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (rc == 0)
            pinned_cpu_.store(cfg_.cpu);
        else
            pin_errno_.store(rc);
    }
    if (cfg_.rt_priority > 0) {
        sched_param param{};
        param.sched_priority = cfg_.rt_priority;
        int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
        if (rc == 0)
            rt_priority_.store(cfg_.rt_priority);
        else
            rt_errno_.store(rc);
    }
}

void Handler::connect() {
    if (stopping_)
        return;
    state_.store(WB_NF_CONNECTING);
    if (url_.tls)
        conn_ = std::make_shared<WsConn<true>>(*this, url_);
    else
        conn_ = std::make_shared<WsConn<false>>(*this, url_);
    ++gen_;  /* the REST snapshots of an older connection are dropped */
    conn_->start();
}

void Handler::on_open(Conn &conn) {
    if (&conn != conn_.get())
        return;
    state_.store(WB_NF_LIVE);
    c_.connects.fetch_add(1, std::memory_order_relaxed);
    last_read_ns_.store(wb_monotonic_ns(), std::memory_order_relaxed);
    seq_.connection_reset(*this);
    for (const auto &frame : subscribe_)
        conn.send(frame);
    if (!rest_path_.empty())
        for (const auto &kv : names_)
            request_snapshot(kv.first, 0);
}

void Handler::on_message(Conn &conn, const char *data, size_t len, size_t capacity,
                         int64_t recv_ns) {
    if (&conn != conn_.get())
        return;
    conn.delivered = true;
    c_.messages.fetch_add(1, std::memory_order_relaxed);
    c_.bytes.fetch_add(len, std::memory_order_relaxed);
    wb_msg_info info;
    uint64_t room = staging_.size();
    wb_event *out = wb_ring_reserve(ring_, &room);
    int64_t n = WB_PARSE_NO_ROOM;
    if (out != nullptr)
        n = wb_parser_parse(parser_, data, len, capacity, recv_ns, out, room, &info);
    if (n == WB_PARSE_NO_ROOM) {  /* not before the wrap, or the ring is full: staging */
        if (out != nullptr && info.n_events > staging_.size())
            staging_.resize(std::max<size_t>(info.n_events, 2 * staging_.size()));
        out = staging_.data();
        n = wb_parser_parse(parser_, data, len, capacity, recv_ns, out, staging_.size(), &info);
        if (n == WB_PARSE_NO_ROOM) {
            staging_.resize(std::max<size_t>(info.n_events, 2 * staging_.size()));
            out = staging_.data();
            n = wb_parser_parse(parser_, data, len, capacity, recv_ns, out, staging_.size(),
                                &info);
        }
    } else if (n > 0 && seq_.publishes_as_is(info)) {
        reserved_ = out;
        reserved_n_ = uint32_t(n);
    } else if (n > 0) {  /* buffered or preceded by a gap marker: off the slots first */
        if (size_t(n) > staging_.size())
            staging_.resize(size_t(n));
        std::memcpy(static_cast<void *>(staging_.data()), out, size_t(n) * sizeof(wb_event));
        out = staging_.data();
    }
    if (n < 0)
        n = 0;
    if (info.kind == WB_MSG_MALFORMED) {
        c_.malformed.fetch_add(1, std::memory_order_relaxed);
        if (info.bad >= 0 && info.bad < WB_BAD_COUNT)
            c_.malformed_by[info.bad].fetch_add(1, std::memory_order_relaxed);
    }
    seq_.on_message(out, uint32_t(n), info, *this);
    reserved_ = nullptr;  /* not published as parsed (buffered, dropped): the slots stay free */
    if (wb_ring_status(ring_) != WB_OK)
        fail("the ring's shared memory was truncated under the handler");
}

void Handler::on_oversize(Conn &conn) {
    if (&conn != conn_.get())
        return;
    conn.delivered = true;
    c_.messages.fetch_add(1, std::memory_order_relaxed);
    c_.malformed.fetch_add(1, std::memory_order_relaxed);
    c_.malformed_by[WB_BAD_OVERSIZE].fetch_add(1, std::memory_order_relaxed);
    /* a skipped message is a lost update for sequencing, as a refused one */
    wb_msg_info info{};
    info.kind = WB_MSG_MALFORMED;
    info.bad = WB_BAD_OVERSIZE;
    info.first_id = info.last_id = info.prev_id = info.seq = -1;
    seq_.on_message(staging_.data(), 0, info, *this);
}

void Handler::on_closed(Conn &conn, const std::string &why) {
    if (&conn != conn_.get())
        return;
    bool delivered = conn.delivered;
    auto keep = conn_;  /* conn is destroyed with its last handler, not here */
    conn_.reset();
    for (auto &kv : rest_jobs_)
        kv.second->cancel();
    rest_jobs_.clear();
    seq_.connection_reset(*this);
    if (stopping_)
        return;
    set_error(why);
    state_.store(WB_NF_CONNECTING);
    if (switching_) {
        switching_ = false;
        connect();
        return;
    }
    failures_ = delivered ? 0 : failures_ + 1;
    if (cfg_.max_connects > 0 && failures_ >= cfg_.max_connects) {
        fail(url_text() + ": " + std::to_string(failures_) +
             " connection attempts in a row delivered nothing; last error: " + why);
        return;
    }
    c_.reconnects.fetch_add(1, std::memory_order_relaxed);
    reconnect_timer_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(jitter_s(failures_))));
    reconnect_timer_.async_wait([this](const error_code &ec) {
        if (!ec)
            connect();
    });
}

void Handler::watch() {
    double silence = cfg_.silence_s > 0 ? cfg_.silence_s : 10.0;
    double period = std::min(silence / 4, 0.5);
    watchdog_timer_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(period)));
    watchdog_timer_.async_wait([this, silence](const error_code &ec) {
        if (ec || stopping_)
            return;
        if (conn_ && conn_->open) {
            double silent = double(wb_monotonic_ns() - last_read_ns_.load()) / 1e9;
            if (silent >= silence) {
                c_.silences.fetch_add(1, std::memory_order_relaxed);
                auto conn = conn_;
                conn->close();
                set_error("silent for " + std::to_string(silent) + " s");
            }
        }
        watch();
    });
}

void Handler::resync(uint32_t id, bool after_gap) {
    if (!conn_)
        return;
    if (!rest_path_.empty()) {
        if (id == 0) {
            for (const auto &kv : names_)
                request_snapshot(kv.first, 0);
        } else {
            request_snapshot(id, 0);
        }
        return;
    }
    if (!after_gap)
        return;  /* the venue sends the snapshot after the subscription */
    /* no REST snapshots: the subscribe frames again, as the Python WebSocketFeed does (the
     * venue answers a subscription with a fresh snapshot) */
    for (const auto &frame : subscribe_)
        conn_->send(frame);
}

void Handler::request_snapshot(uint32_t id, double delay_s) {
    if (rest_jobs_.count(id) || !conn_)
        return;
    /* the weight budget of the current minute (wall clock, as the venue counts it) */
    int64_t minute = std::chrono::duration_cast<std::chrono::minutes>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    if (minute != weight_minute_) {
        weight_minute_ = minute;
        used_weight_ = 0;
    }
    if (cfg_.rest_budget > 0 && used_weight_ + cfg_.rest_weight > cfg_.rest_budget) {
        auto next = std::chrono::minutes(minute + 1) -
                    std::chrono::system_clock::now().time_since_epoch();
        delay_s = std::max(delay_s, std::chrono::duration<double>(next).count());
        c_.rest_throttled.fetch_add(1, std::memory_order_relaxed);
    }
    auto timer = std::make_shared<net::steady_timer>(ioc_);
    rest_jobs_[id] = timer;
    uint64_t gen = gen_;
    timer->expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(delay_s)));
    timer->async_wait([this, id, gen](const error_code &ec) {
        if (ec || gen != gen_ || stopping_)
            return;
        fetch_snapshot(id);
    });
}

void Handler::fetch_snapshot(uint32_t id) {
    used_weight_ += cfg_.rest_weight;
    std::string target = rest_path_ + "?symbol=" + names_[id] +
                         "&limit=" + std::to_string(cfg_.rest_limit);
    uint64_t gen = gen_;
    auto done = [this, gen, id](int status, double retry_after, int used, const std::string &body,
                                const std::string &why) {
        on_snapshot(gen, id, status, retry_after, used, body, why);
    };
    if (rest_url_.tls)
        std::make_shared<RestFetch<true>>(*this, rest_url_, target, done)->start();
    else
        std::make_shared<RestFetch<false>>(*this, rest_url_, target, done)->start();
}

void Handler::on_snapshot(uint64_t gen, uint32_t id, int status, double retry_after,
                          int used_weight, const std::string &body, const std::string &why) {
    if (gen != gen_ || stopping_ || !conn_)
        return;  /* a new connection asks for its own */
    rest_jobs_.erase(id);
    if (used_weight >= 0)
        used_weight_ = used_weight;
    double retry = cfg_.resync_retry_s > 0 ? cfg_.resync_retry_s : 1.0;
    if (status != 200) {
        c_.snapshot_failures.fetch_add(1, std::memory_order_relaxed);
        if (status == 429 || status == 418) {
            c_.rest_throttled.fetch_add(1, std::memory_order_relaxed);
            retry = std::max(retry, retry_after);
        }
        set_error("snapshot of " + names_[id] + ": " +
                  (status ? "HTTP " + std::to_string(status) : why));
        request_snapshot(id, retry);
        return;
    }
    int64_t recv_ns = wb_monotonic_ns();
    wb_msg_info info;
    const std::string &symbol = names_[id];
    /* a copy with simdjson's padding: REST bodies are rare and off the hot path */
    std::string padded = body;
    padded.resize(body.size() + WB_PARSE_PADDING);
    int64_t n = wb_parser_snapshot(parser_, padded.data(), body.size(), padded.size(), recv_ns,
                                   symbol.c_str(), staging_.data(), staging_.size(), &info);
    if (n == WB_PARSE_NO_ROOM) {
        staging_.resize(std::max<size_t>(info.n_events, 2 * staging_.size()));
        n = wb_parser_snapshot(parser_, padded.data(), body.size(), padded.size(), recv_ns,
                               symbol.c_str(), staging_.data(), staging_.size(), &info);
    }
    if (n < 0 || info.kind != WB_MSG_SNAPSHOT) {
        c_.snapshot_failures.fetch_add(1, std::memory_order_relaxed);
        set_error("snapshot of " + symbol + ": a body that is not a depth snapshot");
        request_snapshot(id, retry);
        return;
    }
    c_.snapshot_fetches.fetch_add(1, std::memory_order_relaxed);
    seq_.on_message(staging_.data(), uint32_t(n), info, *this);
}

void Handler::do_stop() {
    stopping_ = true;
    if (state_.load() != WB_NF_FAILED)
        state_.store(WB_NF_STOPPED);
    if (conn_) {
        auto conn = conn_;
        conn->close();
    }
    for (auto &kv : rest_jobs_)
        kv.second->cancel();
    rest_jobs_.clear();
    reconnect_timer_.cancel();
    watchdog_timer_.cancel();
    ioc_.stop();
}

void Handler::fail(const std::string &why) {
    set_error(why);
    state_.store(WB_NF_FAILED);
    stop_requested_.store(true);
    do_stop();
}

}  // namespace wbnet

/* ---- C API -------------------------------------------------------------------------------- */
struct wb_nf {
    std::unique_ptr<wbnet::Handler> h;
};

static void put_err(char *err, size_t errlen, const std::string &text) {
    if (err && errlen) {
        size_t n = std::min(errlen - 1, text.size());
        memcpy(err, text.data(), n);
        err[n] = '\0';
    }
}

extern "C" {

wb_nf *wb_nf_new(const wb_nf_config *cfg, char *err, size_t errlen) {
    try {
        if (!cfg || !cfg->url || !cfg->ring) {
            put_err(err, errlen, "url and ring are required");
            return nullptr;
        }
        wbnet::Url url, rest;
        std::string why;
        if (!wbnet::parse_url(cfg->url, false, url, why)) {
            put_err(err, errlen, why);
            return nullptr;
        }
        bool has_rest = cfg->rest_url && *cfg->rest_url && cfg->rest_path && *cfg->rest_path;
        if (has_rest && !wbnet::parse_url(cfg->rest_url, true, rest, why)) {
            put_err(err, errlen, "rest_url: " + why);
            return nullptr;
        }
        wb_parser *parser = wb_parser_new(cfg->venue);
        if (!parser) {
            put_err(err, errlen, "unknown venue " + std::to_string(cfg->venue));
            return nullptr;
        }
        int code = 0;
        char ring_err[256] = {0};
        wb_ring *ring = wb_ring_attach(cfg->ring, &code, ring_err, sizeof(ring_err));
        if (!ring) {
            wb_parser_free(parser);
            put_err(err, errlen, std::string("ring: ") + ring_err);
            return nullptr;
        }
        wb_nf_config copy = *cfg;
        if (!has_rest)
            copy.rest_path = "";
        auto *out = new wb_nf;
        out->h = std::make_unique<wbnet::Handler>(copy, parser, ring, url, rest);
        return out;
    } catch (const std::exception &e) {
        put_err(err, errlen, e.what());
        return nullptr;
    }
}

int wb_nf_add_symbol(wb_nf *h, const char *symbol, uint32_t symbol_id) {
    if (!h || !symbol || !*symbol || symbol_id == 0)
        return -1;
    return h->h->add_symbol(symbol, symbol_id);
}

int wb_nf_add_subscribe(wb_nf *h, const char *frame) {
    if (!h || !frame)
        return -1;
    h->h->add_subscribe(frame);
    return 0;
}

int wb_nf_start(wb_nf *h, char *err, size_t errlen) {
    std::string why;
    if (!h || !h->h->start(why)) {
        put_err(err, errlen, h ? why : "no handler");
        return -1;
    }
    return 0;
}

void wb_nf_stop(wb_nf *h) {
    if (h)
        h->h->stop();
}

int wb_nf_wait(wb_nf *h, int64_t timeout_ns) { return h && h->h->wait(timeout_ns) ? 1 : 0; }

int wb_nf_switch_endpoint(wb_nf *h, const char *url) {
    std::string why;
    return h && url && h->h->switch_endpoint(url, why) ? 0 : -1;
}

void wb_nf_stats_get(const wb_nf *h, wb_nf_stats *out) { h->h->stats(out); }

uint64_t wb_nf_histogram(const wb_nf *h, uint64_t *out, uint64_t n) {
    return h->h->histogram(out, n);
}

uint64_t wb_nf_bucket_low(uint64_t i) { return wbnet::bucket_low(i); }

void wb_nf_error(const wb_nf *h, char *out, size_t n) { put_err(out, n, h->h->error()); }

void wb_nf_url(const wb_nf *h, char *out, size_t n) { put_err(out, n, h->h->url_text()); }

void wb_nf_free(wb_nf *h) { delete h; }

}  /* extern "C" */
