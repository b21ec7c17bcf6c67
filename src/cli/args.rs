//! The command line, with uvicorn's flag names wherever uvicorn has the flag.

use std::hash::{BuildHasher, RandomState};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::reload::{FileWatcher, ReloadFilter};
use super::static_files::{self, StaticDir};
use super::supervisor::{LIFELINE_FD_FLAG, LISTEN_FDS_FLAG, Limits, METRICS_FD_FLAG};
use crate::defaults;
use crate::error::{Error, ErrorKind};
use crate::layers::TrustedProxies;
use crate::server::inherited_socket;
use crate::{
    AccessLogFormat, Bind, ClientCertificates, HttpVersions, Interface, KeyPassword, LifespanMode,
    LoopKind, PythonAppBuilder, RuntimeMode, ServerOptions, TlsOptions,
};

/// Serve a Python ASGI application (Starlette, FastAPI, any ASGI 3 or 2 app) from Rust.
#[derive(Parser, Debug)]
#[command(name = "rust-asgi-server", version, about)]
pub(super) struct Cli {
    /// The app to serve, as `module:attribute` (same as --app).
    #[arg(value_name = "APP", conflicts_with = "app")]
    pub app_positional: Option<String>,

    /// The app to serve, as `module:attribute` (attributes may be dotted).
    #[arg(long, value_name = "MODULE:ATTR")]
    pub app: Option<String>,

    /// Address to listen on, `host:port`; overrides --host/--port. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,

    /// Host to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,

    /// Port to listen on [default: 8000].
    #[arg(long)]
    pub port: Option<u16>,

    /// Directory put first on sys.path before importing the app.
    #[arg(long, default_value = ".")]
    pub app_dir: PathBuf,

    /// Treat APP as a factory: call it with no arguments to get the app.
    #[arg(long)]
    pub factory: bool,

    /// ASGI interface of the app; `auto` detects ASGI 3 vs ASGI 2 like uvicorn.
    #[arg(long, value_enum, default_value_t = Interface::Auto)]
    pub interface: Interface,

    /// Event loop: `auto` uses uvloop when it is installed, except with `--runtime-mode
    /// single`, whose loop is asyncio's own.
    #[arg(long = "loop", value_enum, default_value_t = LoopKind::Auto)]
    pub loop_kind: LoopKind,

    /// Threads: `single` runs the sockets on the loop thread with Python (no hand-off
    /// between threads per request; the loop is asyncio's own), `split` runs them on Tokio's
    /// worker threads (Rust routes in parallel with Python). `single` by default, `split`
    /// when `--loop uvloop` is given.
    #[arg(long, value_enum, env = "RUST_ASGI_SERVER_RUNTIME_MODE")]
    pub runtime_mode: Option<RuntimeMode>,

    /// Lifespan protocol: `auto` tolerates apps without lifespan support, `on` requires it.
    #[arg(long, value_enum, default_value_t = LifespanMode::Auto)]
    pub lifespan: LifespanMode,

    /// ASGI root_path, for apps mounted below a path prefix by a proxy.
    #[arg(long, default_value = "")]
    pub root_path: String,

    /// Log level: trace, debug, info, warning, error, critical (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log one line per request (the default).
    #[arg(long, overrides_with = "no_access_log")]
    pub access_log: bool,

    /// Do not log one line per request.
    #[arg(long, overrides_with = "access_log")]
    pub no_access_log: bool,

    /// Access-log line in gunicorn's syntax, e.g. '%(h)s "%(r)s" %(s)s %(b)s'. Atoms: h
    /// client IP, l and u '-', t time, r request line, m method, U path, q query, H
    /// protocol, s status, b bytes or '-', B bytes, f referer, a user agent, T seconds, M
    /// milliseconds, D microseconds, L decimal seconds, p process id, {name}i request
    /// header, {name}o response header (default: client, request line, status, bytes and
    /// milliseconds).
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<AccessLogFormat>,

    /// Largest websocket message accepted from a client, in bytes.
    #[arg(long, default_value_t = defaults::WS_MAX_SIZE)]
    pub ws_max_size: usize,

    /// Compress websocket messages with clients that offer permessage-deflate: true or
    /// false.
    #[arg(long, value_name = "BOOL", default_value_t = defaults::WS_PER_MESSAGE_DEFLATE, action = clap::ArgAction::Set)]
    pub ws_per_message_deflate: bool,

    /// Close a connection that has waited this many seconds after a response for its next
    /// request.
    #[arg(long, default_value_t = 5)]
    pub timeout_keep_alive: u64,

    /// Close a connection that has not sent a complete request head within this many
    /// seconds: the slow-loris guard. The first request's counts from the moment the client
    /// connected, TLS handshake included.
    #[arg(
        long,
        default_value_t = defaults::HEADER_READ_TIMEOUT.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_header_read: u64,

    /// Fail a request body that makes no progress for this many seconds while the app reads
    /// it: the app gets `http.disconnect` and the connection is closed.
    #[arg(
        long,
        default_value_t = defaults::TIMEOUT_REQUEST_BODY.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_request_body: u64,

    /// Seconds in-flight requests may take after SIGTERM before they are cut off
    /// (default: wait for them).
    #[arg(long)]
    pub timeout_graceful_shutdown: Option<u64>,

    /// Take the client address and scheme from X-Forwarded-For, X-Forwarded-Proto (or RFC 7239
    /// Forwarded) when the peer is in --forwarded-allow-ips (the default).
    #[arg(long, overrides_with = "no_proxy_headers")]
    pub proxy_headers: bool,

    /// Ignore proxy headers: the client is always the connecting peer.
    #[arg(long, overrides_with = "proxy_headers")]
    pub no_proxy_headers: bool,

    /// Comma-separated IP addresses, networks (10.0.0.0/8) or literals whose proxy headers
    /// are trusted; `*` trusts every peer.
    #[arg(
        long,
        env = "FORWARDED_ALLOW_IPS",
        default_value = defaults::FORWARDED_ALLOW_IPS,
        value_name = "IPS"
    )]
    pub forwarded_allow_ips: TrustedProxies,

    /// Answer 503 at once to requests past this many in flight (default: no limit).
    #[arg(long, value_name = "N")]
    pub limit_concurrency: Option<usize>,

    /// Answer 413 to request bodies larger than this many bytes (default: no limit).
    #[arg(long, value_name = "BYTES")]
    pub limit_request_body: Option<u64>,

    /// Send `server: rust-asgi-server` on responses without a server header (the default).
    #[arg(long, overrides_with = "no_server_header")]
    pub server_header: bool,

    /// Send no server header of our own.
    #[arg(long, overrides_with = "server_header")]
    pub no_server_header: bool,

    /// Send a `date` header on responses without one (the default).
    #[arg(long, overrides_with = "no_date_header")]
    pub date_header: bool,

    /// Send no date header of our own.
    #[arg(long, overrides_with = "date_header")]
    pub no_date_header: bool,

    /// A default response header, added when the response has none of that name; repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,

    /// Load KEY=VALUE lines from this file into the environment before the app starts;
    /// variables already set keep their value.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// Log line format: `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Listen on this Unix domain socket; TCP too only if --bind/--host/--port is given.
    #[arg(long, value_name = "PATH")]
    pub uds: Option<PathBuf>,

    /// Serve the listening socket inherited as this file descriptor (systemd socket
    /// activation, other process managers); TCP too only if --bind/--host/--port is given.
    #[arg(long, value_name = "FD")]
    pub fd: Option<RawFd>,

    /// Connections the kernel queues before they are accepted.
    #[arg(long, default_value_t = defaults::BACKLOG, value_name = "N")]
    pub backlog: u32,

    /// Worker processes, each with its own interpreter, sharing the listening sockets under
    /// a supervising process that replaces workers that die, and on SIGHUP every worker,
    /// one at a time, each once its replacement is ready.
    #[arg(
        long,
        env = "WEB_CONCURRENCY",
        default_value_t = 1,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub workers: u16,

    /// Replace a worker whose resident memory exceeds this many MiB, checked every second:
    /// a new worker starts, and once it is ready the old one drains (default: no limit).
    /// Runs a supervisor even for one worker.
    #[arg(
        long,
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with = "reload"
    )]
    pub workers_max_rss: Option<u64>,

    /// Replace each worker after this many seconds, less a random tenth at most so that
    /// workers started together are not replaced together; a new worker starts, and once
    /// it is ready the old one drains (default: no limit). Runs a supervisor even for one
    /// worker.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with = "reload"
    )]
    pub workers_lifetime: Option<u64>,

    /// Seconds a worker process (of --workers, --reload or a recycling limit) gets to
    /// become ready (app imported, lifespan startup done, listening) before it is killed:
    /// a first worker that does not fails the server; a replacement that does not leaves
    /// the worker it was to replace serving.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_worker_startup: u64,

    /// HTTP versions spoken: `auto` (HTTP/1.1, and HTTP/2 by ALPN or prior knowledge),
    /// `1` or `2` only.
    #[arg(long, value_enum, default_value_t = HttpVersions::Auto)]
    pub http: HttpVersions,

    /// Also serve HTTP/3 over QUIC on the same port numbers (UDP), announced to HTTP/1.1 and
    /// HTTP/2 clients with Alt-Svc. Needs --ssl-certfile (QUIC is always encrypted).
    #[arg(long, requires = "ssl_certfile")]
    pub http3: bool,

    /// Serve HTTPS with this PEM certificate chain.
    #[arg(long, value_name = "PATH")]
    pub ssl_certfile: Option<PathBuf>,

    /// The PEM private key of --ssl-certfile (default: read it from the certificate file).
    #[arg(long, value_name = "PATH", requires = "ssl_certfile")]
    pub ssl_keyfile: Option<PathBuf>,

    /// The password of an encrypted (PKCS#8) --ssl-keyfile.
    #[arg(long, value_name = "PASSWORD", requires = "ssl_certfile")]
    pub ssl_keyfile_password: Option<String>,

    /// PEM CA certificates that client certificates are checked against.
    #[arg(long, value_name = "PATH", requires = "ssl_certfile")]
    pub ssl_ca_certs: Option<PathBuf>,

    /// Ask clients for a certificate: 0 no, 1 optional, 2 required.
    #[arg(long, value_enum, default_value_t = ClientCertificates::NotRequested)]
    pub ssl_cert_reqs: ClientCertificates,

    /// Serve the files of the --static-path-mount in the same position under this URL
    /// path, in the server without Python (ETag, Last-Modified, ranges, precompressed
    /// .br/.gz); repeatable (default: none).
    #[arg(long = "static-path-route", value_name = "PATH", value_parser = static_files::route)]
    pub static_path_routes: Vec<String>,

    /// The directory served under the --static-path-route in the same position;
    /// repeatable; symlinks that lead out of it are not followed (default: none).
    #[arg(long = "static-path-mount", value_name = "DIR")]
    pub static_path_mounts: Vec<PathBuf>,

    /// Shut down gracefully after this many requests; under --workers a new worker takes
    /// over (default: no limit).
    #[arg(long, value_name = "N")]
    pub limit_max_requests: Option<u64>,

    /// Answer this path in the server itself, without Python, for health probes: 200 while
    /// serving, 503 once draining after SIGTERM or while the event loop is blocked past
    /// --loop-block-warn (default: none).
    #[arg(long, value_name = "PATH", value_parser = health_path)]
    pub health_path: Option<String>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics, on a listener of their own
    /// (default: off). Under a supervisor (--workers N and the like) PORT serves the
    /// supervisor's series (worker restarts, workers) and PORT+1 … PORT+N each worker's.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_bind: Option<std::net::SocketAddr>,

    /// Export OpenTelemetry traces over OTLP/HTTP to this receiver's base URL (traces go to
    /// URL/v1/traces): a server span per request, in the trace of the client's traceparent,
    /// which the app receives rewritten to name that span; access-log lines carry the trace
    /// id. The standard OTEL_* variables apply (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS,
    /// ...) (default: off).
    #[arg(long, value_name = "URL")]
    pub otel_endpoint: Option<String>,

    /// Warn, with the Python stack of the blocking call, when the event loop has not run for
    /// this many seconds; 0 turns the watchdog off.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::LOOP_BLOCK_WARN.as_secs_f64())]
    pub loop_block_warn: f64,

    /// Add a random 0 to N to --limit-max-requests in each process, so that workers do not
    /// all restart at once.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit_max_requests_jitter: u64,

    /// Restart the server when a watched file changes (development; implies one worker).
    #[arg(long)]
    pub reload: bool,

    /// Directory watched by --reload; repeatable (default: the current directory).
    #[arg(long = "reload-dir", value_name = "DIR")]
    pub reload_dirs: Vec<PathBuf>,

    /// Glob of files that trigger --reload, besides `*.py`; repeatable.
    #[arg(long = "reload-include", value_name = "GLOB")]
    pub reload_includes: Vec<String>,

    /// Glob of files that never trigger --reload, besides hidden and compiled files;
    /// repeatable.
    #[arg(long = "reload-exclude", value_name = "GLOB")]
    pub reload_excludes: Vec<String>,

    /// Set by the --workers supervisor on a worker: the listening sockets it inherits.
    #[arg(
        long = LISTEN_FDS_FLAG.trim_start_matches('-'),
        hide = true,
        value_delimiter = ',',
        requires = "worker_lifeline_fd"
    )]
    pub worker_listen_fds: Vec<RawFd>,

    /// Set by the --workers supervisor on a worker: its end of the lifeline.
    #[arg(long = LIFELINE_FD_FLAG.trim_start_matches('-'), hide = true)]
    pub worker_lifeline_fd: Option<RawFd>,

    /// Set by the --workers supervisor on a worker with --metrics-bind: the metrics
    /// listener of its slot.
    #[arg(
        long = METRICS_FD_FLAG.trim_start_matches('-'),
        hide = true,
        requires = "worker_lifeline_fd"
    )]
    pub worker_metrics_fd: Option<RawFd>,
}

/// How this process serves, from --workers, --reload and the supervisor's worker flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProcessRole {
    /// Serves in this process: one worker, no supervisor.
    Single,
    /// Binds the sockets and supervises worker processes; never starts Python.
    Supervisor,
    /// Started by a supervisor: serves the inherited sockets, reports on this lifeline.
    Worker { lifeline: RawFd },
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}

/// `NAME:VALUE` from `--header`, split at the first colon; the value is trimmed.
/// A health path: absolute, as the request target's path compares to it.
fn health_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!("'{text}' must start with '/'"))
    }
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:VALUE, got {text:?}"))?;
    let name = HeaderName::try_from(name.trim())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::try_from(value.trim())
        .map_err(|_| format!("{:?} is not a valid header value", value.trim()))?;
    Ok((name, value))
}

impl Cli {
    pub(super) fn import_string(&self) -> Option<&str> {
        self.app.as_deref().or(self.app_positional.as_deref())
    }

    /// The TCP address: --bind, else --host/--port. With only --uds or --fd there is none,
    /// as with uvicorn.
    pub(super) fn tcp_address(&self) -> Option<String> {
        if let Some(bind) = &self.bind {
            return Some(bind.clone());
        }
        let given = self.host.is_some() || self.port.is_some();
        if !given && (self.uds.is_some() || self.fd.is_some()) {
            return None;
        }
        let host = self.host.as_deref().unwrap_or(defaults::HOST);
        let port = self.port.unwrap_or(defaults::PORT);
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    pub(super) fn process_role(&self) -> ProcessRole {
        match self.worker_lifeline_fd {
            Some(lifeline) => ProcessRole::Worker { lifeline },
            None if self.workers > 1 || self.reload || self.recycling().any() => {
                ProcessRole::Supervisor
            }
            None => ProcessRole::Single,
        }
    }

    /// Where this process listens. Takes over the inherited descriptors (--fd, or a
    /// worker's sockets), so call it once.
    pub(super) fn binds(&self) -> Result<Vec<Bind>, Error> {
        if let ProcessRole::Worker { .. } = self.process_role() {
            return self
                .worker_listen_fds
                .iter()
                .map(|&fd| inherited_socket(fd).map(Bind::Socket))
                .collect();
        }
        let mut binds = Vec::new();
        if let Some(fd) = self.fd {
            binds.push(Bind::Socket(inherited_socket(fd)?));
        }
        if let Some(path) = &self.uds {
            binds.push(Bind::Unix(path.clone()));
        }
        if let Some(address) = self.tcp_address() {
            binds.push(Bind::Tcp(address));
        }
        Ok(binds)
    }

    /// --ssl-certfile and company, when serving HTTPS.
    pub(super) fn tls_options(&self) -> Option<TlsOptions> {
        let certfile = self.ssl_certfile.clone()?;
        Some(TlsOptions {
            certfile,
            keyfile: self.ssl_keyfile.clone(),
            keyfile_password: self.ssl_keyfile_password.clone().map(KeyPassword),
            ca_certs: self.ssl_ca_certs.clone(),
            client_certificates: self.ssl_cert_reqs,
        })
    }

    /// --limit-max-requests plus this process's own random share of the jitter.
    pub(super) fn limit_max_requests(&self) -> Option<u64> {
        let limit = self.limit_max_requests?;
        let jitter = match self.limit_max_requests_jitter.checked_add(1) {
            Some(choices) => RandomState::new().hash_one(std::process::id()) % choices,
            None => RandomState::new().hash_one(std::process::id()),
        };
        Some(limit.saturating_add(jitter))
    }

    /// --workers-max-rss, --workers-lifetime and --timeout-worker-startup.
    pub(super) fn recycling(&self) -> Limits {
        Limits::new(self.workers_max_rss, self.workers_lifetime)
            .startup_within(Duration::from_secs(self.timeout_worker_startup))
    }

    /// The --static-path-route / --static-path-mount pairs; a usage error when they do not
    /// pair up or a directory is missing.
    pub(super) fn static_dirs(&self) -> Result<Vec<StaticDir>, String> {
        static_files::static_dirs(&self.static_path_routes, &self.static_path_mounts)
    }

    /// The files --reload watches, and which of their changes count.
    pub(super) fn file_watcher(&self) -> Result<FileWatcher, Error> {
        let directories = if self.reload_dirs.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            self.reload_dirs.clone()
        };
        let filter = ReloadFilter::new(&self.reload_includes, &self.reload_excludes)?;
        FileWatcher::new(&directories, filter)
    }

    /// The app options of this command line, set on `builder`.
    pub(super) fn python_app(&self, builder: PythonAppBuilder) -> PythonAppBuilder {
        builder
            .app_dir(&self.app_dir)
            .factory(self.factory)
            .interface(self.interface)
            .event_loop(self.loop_kind)
            .runtime_mode(self.runtime_mode())
            .lifespan(self.lifespan)
            .root_path(&self.root_path)
            .ws_max_size(self.ws_max_size)
            .ws_per_message_deflate(self.ws_per_message_deflate)
    }

    /// Where the sockets run: as asked, else on the loop thread, unless uvloop was asked for
    /// (it cannot share its thread with them).
    pub(super) fn runtime_mode(&self) -> RuntimeMode {
        match (self.runtime_mode, self.loop_kind) {
            (Some(mode), _) => mode,
            (None, LoopKind::Uvloop) => RuntimeMode::Split,
            (None, _) => defaults::RUNTIME_MODE,
        }
    }

    pub(super) fn server_options(&self) -> ServerOptions {
        ServerOptions {
            access_log: !self.no_access_log,
            access_log_format: self.access_log_format.clone().map(Arc::new),
            timeout_keep_alive: Duration::from_secs(self.timeout_keep_alive),
            timeout_graceful_shutdown: self.timeout_graceful_shutdown.map(Duration::from_secs),
            header_read_timeout: Duration::from_secs(self.timeout_header_read),
            timeout_request_body: Duration::from_secs(self.timeout_request_body),
            http: self.http,
            http3: self.http3,
            tls: self.tls_options(),
            backlog: self.backlog,
            limit_max_requests: self.limit_max_requests(),
            health_path: self.health_path.clone(),
            loop_block_warn: (self.loop_block_warn > 0.0)
                .then(|| Duration::try_from_secs_f64(self.loop_block_warn).ok())
                .flatten(),
            date_header: !self.no_date_header,
            proxy_headers: (!self.no_proxy_headers).then(|| self.forwarded_allow_ips.clone()),
            request_spans: self.otel_endpoint.is_some(),
            ..ServerOptions::default()
        }
    }

    /// The --header headers, with `server: rust-asgi-server` unless switched off or given
    /// there (uvicorn lets `--header server:…` replace its own).
    pub(super) fn default_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if !self.no_server_header && !headers.contains_key(http::header::SERVER) {
            headers.insert(
                http::header::SERVER,
                HeaderValue::from_static(defaults::SERVER_HEADER),
            );
        }
        headers
    }

    /// Loads --env-file into the process environment. Call it before any thread starts: the
    /// interpreter takes its copy of the environment when it starts.
    pub(super) fn load_env_file(&self) -> Result<(), Error> {
        let Some(path) = &self.env_file else {
            return Ok(());
        };
        dotenvy::from_path(path).map_err(|err| {
            Error::new(
                ErrorKind::Config,
                format!("cannot load --env-file {}: {err}", path.display()),
            )
        })
    }

    /// A `tracing` filter from --log-level, accepting Python's level names.
    pub(super) fn log_filter(&self) -> String {
        match self.log_level.to_ascii_lowercase().as_str() {
            "warning" => "warn".into(),
            "critical" => "error".into(),
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rust-asgi-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn app_is_taken_from_the_flag_or_the_positional_argument() {
        assert_eq!(
            parse(&["--app", "main:app"]).import_string(),
            Some("main:app")
        );
        assert_eq!(parse(&["main:app"]).import_string(), Some("main:app"));
        assert!(Cli::try_parse_from(["rust-asgi-server", "a:b", "--app", "c:d"]).is_err());
    }

    #[test]
    fn bind_overrides_host_and_port_and_ipv6_hosts_are_bracketed() {
        let tcp = |args: &[&str]| parse(args).tcp_address();
        assert_eq!(tcp(&["a:b"]).as_deref(), Some("127.0.0.1:8000"));
        assert_eq!(
            tcp(&["a:b", "--host", "0.0.0.0", "--port", "3000"]).as_deref(),
            Some("0.0.0.0:3000")
        );
        assert_eq!(
            tcp(&["a:b", "--host", "::1", "--port", "3000"]).as_deref(),
            Some("[::1]:3000")
        );
        assert_eq!(
            tcp(&["a:b", "--port", "1", "--bind", "127.0.0.1:0"]).as_deref(),
            Some("127.0.0.1:0")
        );
    }

    #[test]
    fn a_unix_socket_or_fd_alone_means_no_tcp_unless_an_address_is_given() {
        let tcp = |args: &[&str]| parse(args).tcp_address();
        assert_eq!(tcp(&["a:b", "--uds", "/tmp/s"]), None);
        assert_eq!(tcp(&["a:b", "--fd", "3"]), None);
        assert_eq!(
            tcp(&["a:b", "--uds", "/tmp/s", "--port", "9000"]).as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            tcp(&["a:b", "--fd", "3", "--bind", "[::1]:0"]).as_deref(),
            Some("[::1]:0")
        );
    }

    #[test]
    fn workers_or_reload_make_a_supervisor_and_the_worker_flags_a_worker() {
        assert_eq!(parse(&["a:b"]).process_role(), ProcessRole::Single);
        assert_eq!(
            parse(&["a:b", "--workers", "4"]).process_role(),
            ProcessRole::Supervisor
        );
        assert_eq!(
            parse(&["a:b", "--reload"]).process_role(),
            ProcessRole::Supervisor
        );
        let worker = parse(&[
            "a:b",
            "--workers",
            "4",
            "--worker-listen-fds",
            "3,4",
            "--worker-lifeline-fd",
            "5",
        ]);
        assert_eq!(worker.process_role(), ProcessRole::Worker { lifeline: 5 });
        assert_eq!(worker.worker_listen_fds, [3, 4]);
        assert!(Cli::try_parse_from(["rust-asgi-server", "a:b", "--workers", "0"]).is_err());
    }

    #[test]
    fn recycling_runs_a_supervisor_even_for_one_worker_but_not_with_reload() {
        for flag in ["--workers-max-rss", "--workers-lifetime"] {
            let cli = parse(&["a:b", flag, "60"]);
            assert_eq!(cli.process_role(), ProcessRole::Supervisor, "{flag}");
            assert!(cli.recycling().any());
            let usage = |args: &[&str]| {
                Cli::try_parse_from(["rust-asgi-server", "a:b"].iter().chain(args)).is_err()
            };
            assert!(usage(&[flag, "0"]), "{flag}");
            assert!(usage(&[flag, "60", "--reload"]), "{flag}");
        }
        assert!(!parse(&["a:b", "--workers", "2"]).recycling().any());
    }

    #[test]
    fn tls_flags_become_tls_options_and_the_key_needs_a_certificate() {
        assert!(parse(&["a:b"]).tls_options().is_none());
        let tls = parse(&[
            "a:b",
            "--ssl-certfile",
            "c.pem",
            "--ssl-keyfile",
            "k.pem",
            "--ssl-cert-reqs",
            "2",
        ])
        .tls_options()
        .unwrap();
        assert_eq!(tls.keyfile.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(tls.client_certificates, ClientCertificates::Required);
        assert!(Cli::try_parse_from(["rust-asgi-server", "a:b", "--ssl-keyfile", "k"]).is_err());
    }

    #[test]
    fn http_versions_accept_uvicorns_implementation_names() {
        assert_eq!(parse(&["a:b"]).http, HttpVersions::Auto);
        assert_eq!(parse(&["a:b", "--http", "2"]).http, HttpVersions::Http2);
        assert_eq!(parse(&["a:b", "--http", "h11"]).http, HttpVersions::Http1);
        assert_eq!(
            parse(&["a:b", "--http", "httptools"]).http,
            HttpVersions::Http1
        );
    }

    #[test]
    fn max_requests_gets_at_most_the_jitter_added() {
        assert_eq!(parse(&["a:b"]).limit_max_requests(), None);
        assert_eq!(
            parse(&["a:b", "--limit-max-requests", "100"]).limit_max_requests(),
            Some(100)
        );
        let jittered = parse(&[
            "a:b",
            "--limit-max-requests",
            "100",
            "--limit-max-requests-jitter",
            "10",
        ]);
        for _ in 0..20 {
            let limit = jittered.limit_max_requests().unwrap();
            assert!((100..=110).contains(&limit), "{limit}");
        }
    }

    #[test]
    fn python_log_level_names_map_to_tracing_filters() {
        assert_eq!(
            parse(&["a:b", "--log-level", "WARNING"]).log_filter(),
            "warn"
        );
        assert_eq!(
            parse(&["a:b", "--log-level", "critical"]).log_filter(),
            "error"
        );
        assert_eq!(parse(&["a:b"]).log_filter(), "info");
    }

    #[test]
    fn proxy_headers_are_trusted_from_localhost_unless_switched_off() {
        let trusted = |args: &[&str]| parse(args).server_options().proxy_headers;
        assert_eq!(trusted(&["a:b"]), Some(TrustedProxies::localhost()));
        assert_eq!(
            trusted(&["a:b", "--forwarded-allow-ips", "*"]),
            Some(TrustedProxies::everyone())
        );
        assert_eq!(trusted(&["a:b", "--no-proxy-headers"]), None);
        assert!(trusted(&["a:b", "--no-proxy-headers", "--proxy-headers"]).is_some());
    }

    #[test]
    fn limits_are_off_unless_given() {
        let cli = parse(&["a:b"]);
        assert_eq!(
            (cli.limit_concurrency, cli.limit_request_body),
            (None, None)
        );
        let cli = parse(&[
            "a:b",
            "--limit-concurrency",
            "10",
            "--limit-request-body",
            "1024",
        ]);
        assert_eq!(
            (cli.limit_concurrency, cli.limit_request_body),
            (Some(10), Some(1024))
        );
    }

    #[test]
    fn default_headers_hold_the_server_header_and_every_header_flag() {
        let headers = parse(&["a:b"]).default_headers();
        assert_eq!(headers["server"], "rust-asgi-server");
        assert_eq!(headers.len(), 1);
        assert!(
            parse(&["a:b", "--no-server-header"])
                .default_headers()
                .is_empty()
        );
        let headers = parse(&[
            "a:b",
            "--header",
            "X-Team: blue",
            "--header",
            "x-team:green",
            "--header",
            "Server:edge:1",
        ])
        .default_headers();
        let teams: Vec<_> = headers.get_all("x-team").iter().collect();
        assert_eq!(teams, ["blue", "green"]);
        assert_eq!(headers["server"], "edge:1");
    }

    #[test]
    fn the_header_read_timeout_defaults_to_30_seconds_and_is_never_zero() {
        let timeout = |args: &[&str]| parse(args).server_options().header_read_timeout;
        assert_eq!(timeout(&["a:b"]), Duration::from_secs(30));
        assert_eq!(
            timeout(&["a:b", "--timeout-header-read", "2"]),
            Duration::from_secs(2)
        );
        assert!(
            Cli::try_parse_from(["rust-asgi-server", "a:b", "--timeout-header-read", "0"]).is_err()
        );
    }

    #[test]
    fn the_request_body_timeout_defaults_to_60_seconds_and_is_never_zero() {
        let timeout = |args: &[&str]| parse(args).server_options().timeout_request_body;
        assert_eq!(timeout(&["a:b"]), Duration::from_secs(60));
        assert_eq!(
            timeout(&["a:b", "--timeout-request-body", "5"]),
            Duration::from_secs(5)
        );
        assert!(
            Cli::try_parse_from(["rust-asgi-server", "a:b", "--timeout-request-body", "0"])
                .is_err()
        );
    }

    #[test]
    fn date_header_is_on_unless_switched_off_last() {
        assert!(parse(&["a:b"]).server_options().date_header);
        assert!(
            !parse(&["a:b", "--no-date-header"])
                .server_options()
                .date_header
        );
        assert!(
            parse(&["a:b", "--no-date-header", "--date-header"])
                .server_options()
                .date_header
        );
    }

    #[test]
    fn malformed_header_flags_are_usage_errors() {
        for bad in ["no-colon", "bad name:x", ":empty-name", "x-ok:bad\nvalue\n"] {
            assert!(
                Cli::try_parse_from(["rust-asgi-server", "a:b", "--header", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_missing_env_file_is_an_error_naming_it() {
        let err = parse(&["a:b", "--env-file", "/nonexistent/.env"])
            .load_env_file()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/.env"), "{err}");
        assert!(parse(&["a:b"]).load_env_file().is_ok());
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(parse(&["a:b"]).log_format, LogFormat::Text);
        assert_eq!(
            parse(&["a:b", "--log-format", "json"]).log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn access_log_is_on_unless_switched_off_last() {
        assert!(parse(&["a:b"]).server_options().access_log);
        assert!(
            !parse(&["a:b", "--no-access-log"])
                .server_options()
                .access_log
        );
        assert!(
            parse(&["a:b", "--no-access-log", "--access-log"])
                .server_options()
                .access_log
        );
    }

    #[test]
    fn an_access_log_format_is_parsed_at_start_up_and_an_unknown_atom_is_a_usage_error() {
        assert!(parse(&["a:b"]).server_options().access_log_format.is_none());
        let format = parse(&["a:b", "--access-log-format", "%(h)s %(s)s"])
            .server_options()
            .access_log_format;
        assert_eq!(format.as_deref(), Some(&"%(h)s %(s)s".parse().unwrap()));
        let err = Cli::try_parse_from(["rust-asgi-server", "a:b", "--access-log-format", "%(x)s"])
            .unwrap_err();
        assert!(err.to_string().contains("unknown atom %(x)s"), "{err}");
    }

    #[test]
    fn static_path_routes_are_checked_as_they_are_parsed() {
        let cli = parse(&[
            "a:b",
            "--static-path-route",
            "/s/",
            "--static-path-mount",
            ".",
        ]);
        assert_eq!(cli.static_path_routes, ["/s"]);
        assert_eq!(cli.static_dirs().unwrap().len(), 1);
        assert!(
            Cli::try_parse_from(["rust-asgi-server", "a:b", "--static-path-route", "s"]).is_err()
        );
        assert!(
            parse(&["a:b", "--static-path-mount", "."])
                .static_dirs()
                .is_err()
        );
    }
}
