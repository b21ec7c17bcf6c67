//! [`ServerOptions`]: connection-level settings, with uvicorn's defaults (from
//! [`crate::defaults`]).

use std::sync::Arc;
use std::time::Duration;

use super::access_log_format::AccessLogFormat;
use super::http_versions::HttpVersions;
use super::tls::TlsOptions;
use crate::defaults;
use crate::layers::TrustedProxies;

/// Connection-level settings of a [`Server`](super::Server), built from uvicorn's defaults:
/// `ServerOptions::new().access_log(false).timeout_keep_alive(Duration::from_secs(10))`.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub(crate) access_log: bool,
    pub(crate) access_log_format: Option<Arc<AccessLogFormat>>,
    pub(crate) request_spans: bool,
    pub(crate) timeout_keep_alive: Duration,
    pub(crate) timeout_graceful_shutdown: Option<Duration>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) timeout_request_body: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) http: HttpVersions,
    pub(crate) http3: bool,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) backlog: u32,
    pub(crate) limit_max_requests: Option<u64>,
    pub(crate) date_header: bool,
    pub(crate) proxy_headers: Option<TrustedProxies>,
    pub(crate) health_path: Option<String>,
    pub(crate) loop_block_warn: Option<Duration>,
    pub(crate) signals: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            access_log: true,
            access_log_format: None,
            request_spans: false,
            timeout_keep_alive: defaults::TIMEOUT_KEEP_ALIVE,
            timeout_graceful_shutdown: None,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            timeout_request_body: defaults::TIMEOUT_REQUEST_BODY,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_headers: defaults::MAX_HEADERS,
            http: HttpVersions::Auto,
            http3: false,
            tls: None,
            backlog: defaults::BACKLOG,
            limit_max_requests: None,
            date_header: true,
            proxy_headers: defaults::FORWARDED_ALLOW_IPS.parse().ok(),
            health_path: None,
            loop_block_warn: Some(defaults::LOOP_BLOCK_WARN),
            signals: true,
        }
    }
}

impl ServerOptions {
    /// The defaults: uvicorn's, where uvicorn has the setting.
    pub fn new() -> Self {
        Self::default()
    }

    /// A path the server answers itself, without the router or Python, for health probes:
    /// 200 while serving, 503 once draining or while the loop thread is blocked past
    /// [`loop_block_warn`](Self::loop_block_warn) (default: none).
    pub fn health_path(mut self, path: Option<String>) -> Self {
        self.health_path = path;
        self
    }

    /// Warn, with the Python stack of what it runs, when the loop thread has not returned to
    /// the event loop for this long; log when it does (default: 1 s; `None`: no watchdog).
    pub fn loop_block_warn(mut self, limit: Option<Duration>) -> Self {
        self.loop_block_warn = limit;
        self
    }

    /// Shut down gracefully on SIGINT/SIGTERM (default: on). Off, only
    /// [`ServerHandle::shutdown`](super::ServerHandle::shutdown) stops the server: for a
    /// program that owns its signals (the wheel's awaitable `Server`).
    pub fn signals(mut self, enabled: bool) -> Self {
        self.signals = enabled;
        self
    }

    /// A `tracing` span of kind `server` for every request, in the trace of the client's
    /// `traceparent`, with the request's `traceparent` rewritten to name it for the app
    /// (default: off). Export the spans with an OpenTelemetry layer in your subscriber:
    /// see [`telemetry`](crate::telemetry).
    pub fn request_spans(mut self, enabled: bool) -> Self {
        self.request_spans = enabled;
        self
    }

    /// Log one line per request (default: on), as an `info` event of the target
    /// `rust_asgi_server::access`: without a subscriber that enables `info` at all, nothing
    /// about the request is gathered for it.
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.access_log = enabled;
        self
    }

    /// The access-log line in gunicorn's syntax, parsed beforehand (`"%(h)s %(s)s".parse()`,
    /// which refuses an unknown atom); `None` (the default) writes the server's own line:
    /// client, request line, status, bytes and milliseconds.
    pub fn access_log_format(mut self, format: Option<AccessLogFormat>) -> Self {
        self.access_log_format = format.map(Arc::new);
        self
    }

    /// Idle time after a response before a connection is closed (default: 5 s).
    pub fn timeout_keep_alive(mut self, timeout: Duration) -> Self {
        self.timeout_keep_alive = timeout;
        self
    }

    /// How long in-flight requests may run after a shutdown signal; `None` (the default)
    /// waits for them.
    pub fn timeout_graceful_shutdown(mut self, timeout: Option<Duration>) -> Self {
        self.timeout_graceful_shutdown = timeout;
        self
    }

    /// Time a client has to send a complete request head: the slow-loris guard. For its
    /// first request it counts from the moment the client connected, TLS handshake included,
    /// so a connection that never sends a byte is closed too (default: 30 s).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Time a request body may make no progress while it is being read: then it fails, so
    /// the app gets `http.disconnect` and the connection is closed (default: 60 s). The
    /// clock runs only while the body is waited for and nothing arrives.
    pub fn timeout_request_body(mut self, timeout: Duration) -> Self {
        self.timeout_request_body = timeout;
        self
    }

    /// Largest request head accepted (HTTP/2: header list); larger ones get 431
    /// (default: 64 KiB).
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Most header lines an HTTP/1 request head may have; more get 431 (default: 128).
    /// Above hyper's 100, each request head is parsed into two arrays of this many entries
    /// on the heap (about 8 KiB at 128) rather than on the stack. With glibc's allocator
    /// that cost a Rust route about 3 % of its requests per second at 256 connections;
    /// with mimalloc (`cli::Allocator`, the binary's) it measured nothing.
    pub fn max_headers(mut self, lines: usize) -> Self {
        self.max_headers = lines;
        self
    }

    /// The HTTP versions spoken (default: [`HttpVersions::Auto`]).
    pub fn http(mut self, versions: HttpVersions) -> Self {
        self.http = versions;
        self
    }

    /// Also serve HTTP/3 over QUIC, on the UDP port of each TCP address, and announce it to
    /// HTTP/1.1 and HTTP/2 clients with `Alt-Svc` (default: off). Needs [`tls`](Self::tls).
    pub fn http3(mut self, enabled: bool) -> Self {
        self.http3 = enabled;
        self
    }

    /// Serve HTTPS with this certificate and key; `None` (the default) serves cleartext.
    pub fn tls(mut self, tls: Option<TlsOptions>) -> Self {
        self.tls = tls;
        self
    }

    /// Connections the kernel queues for sockets this server binds (default: 2048).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Shut down gracefully after this many requests, for a supervisor to replace the
    /// process (default: no limit).
    pub fn limit_max_requests(mut self, limit: Option<u64>) -> Self {
        self.limit_max_requests = limit;
        self
    }

    /// Send a `date` header on responses that have none (default: on).
    pub fn date_header(mut self, enabled: bool) -> Self {
        self.date_header = enabled;
        self
    }

    /// Whose proxy headers to believe; `None` believes no one. Applied as each request
    /// arrives, so the router, the app and the access log all see the client the proxy
    /// reports (default: `127.0.0.1`, as uvicorn).
    pub fn proxy_headers(mut self, trusted: Option<TrustedProxies>) -> Self {
        self.proxy_headers = trusted;
        self
    }
}
