//! The command line, with uvicorn's flag names wherever uvicorn has the flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::server::ServerOptions;
use crate::{Interface, LifespanMode, LoopKind, PythonApp, PythonAppBuilder};

/// Serve a Python ASGI application (Starlette, FastAPI, any ASGI 3 or 2 app) from Rust.
#[derive(Parser, Debug)]
#[command(name = "rust-asgi-server", version, about)]
pub struct Cli {
    /// The app to serve, as `module:attribute` (same as --app).
    #[arg(value_name = "APP", conflicts_with = "app")]
    pub app_positional: Option<String>,

    /// The app to serve, as `module:attribute` (attributes may be dotted).
    #[arg(long, value_name = "MODULE:ATTR")]
    pub app: Option<String>,

    /// Address to listen on, `host:port`; overrides --host/--port. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,

    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Directory put first on sys.path before importing the app.
    #[arg(long, default_value = ".")]
    pub app_dir: PathBuf,

    /// Treat APP as a factory: call it with no arguments to get the app.
    #[arg(long)]
    pub factory: bool,

    /// ASGI interface of the app; `auto` detects ASGI 3 vs ASGI 2 like uvicorn.
    #[arg(long, value_enum, default_value_t = Interface::Auto)]
    pub interface: Interface,

    /// Event loop: `auto` uses uvloop when it is installed.
    #[arg(long = "loop", value_enum, default_value_t = LoopKind::Auto)]
    pub loop_kind: LoopKind,

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

    /// Largest websocket message accepted from a client, in bytes.
    #[arg(long, default_value_t = crate::app::DEFAULT_WS_MAX_SIZE)]
    pub ws_max_size: usize,

    /// Close keep-alive connections idle for this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_keep_alive: u64,

    /// Seconds in-flight requests may take after SIGTERM before they are cut off
    /// (default: wait for them).
    #[arg(long)]
    pub timeout_graceful_shutdown: Option<u64>,
}

impl Cli {
    pub fn import_string(&self) -> Option<&str> {
        self.app.as_deref().or(self.app_positional.as_deref())
    }

    pub fn bind_address(&self) -> String {
        self.bind.clone().unwrap_or_else(|| {
            if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                format!("{}:{}", self.host, self.port)
            }
        })
    }

    pub fn python_app(&self, import_string: &str) -> PythonAppBuilder {
        PythonApp::builder(import_string)
            .app_dir(&self.app_dir)
            .factory(self.factory)
            .interface(self.interface)
            .event_loop(self.loop_kind)
            .lifespan(self.lifespan)
            .root_path(&self.root_path)
            .ws_max_size(self.ws_max_size)
    }

    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            access_log: !self.no_access_log,
            timeout_keep_alive: Duration::from_secs(self.timeout_keep_alive),
            timeout_graceful_shutdown: self.timeout_graceful_shutdown.map(Duration::from_secs),
            ..ServerOptions::default()
        }
    }

    /// A `tracing` filter from --log-level, accepting Python's level names.
    pub fn log_filter(&self) -> String {
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
        assert_eq!(parse(&["a:b"]).bind_address(), "127.0.0.1:8000");
        assert_eq!(
            parse(&["a:b", "--host", "0.0.0.0", "--port", "3000"]).bind_address(),
            "0.0.0.0:3000"
        );
        assert_eq!(
            parse(&["a:b", "--host", "::1", "--port", "3000"]).bind_address(),
            "[::1]:3000"
        );
        assert_eq!(
            parse(&["a:b", "--port", "1", "--bind", "127.0.0.1:0"]).bind_address(),
            "127.0.0.1:0"
        );
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
}
