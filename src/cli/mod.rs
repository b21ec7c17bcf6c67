//! The `rust-asgi-server` command line: its arguments (`args.rs`), the `--workers`
//! supervisor (`supervisor.rs`) and `--reload` (`reload.rs`). Behind the default `cli`
//! feature, so a library user compiles none of it.
//!
//! The binary and the wheel's `rust-asgi-server` / `python -m rust_asgi_server` run this
//! same command line ([`run`]); the wheel's Python API (`run(app, **options)`,
//! `Server(app, **options)`) turns its keyword arguments into these flags, so every option
//! has one definition, one default and one help text.

mod args;
mod metrics;
mod reload;
mod static_files;
mod supervisor;

use std::ffi::OsString;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use axum::Router;
use axum::response::IntoResponse;
use clap::{CommandFactory, Parser};
use pyo3::prelude::*;
use tower::ServiceBuilder;
use tower::util::{Either, MapResponse};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use self::args::{Cli, LogFormat, ProcessRole};
use self::metrics::WorkerMetrics;
use self::static_files::StaticDir;
use self::supervisor::{Lifeline, MetricsListeners, Supervisor};
use crate::error::{Error, ErrorKind};
use crate::layers::{BodySizeLimitLayer, DefaultHeadersLayer, InFlightLimitLayer};
use crate::metrics::MetricsLayer;
use crate::telemetry::Telemetry;
use crate::{PythonApp, PythonAppBuilder, RuntimeMode, Server, ServerHandle};

/// The global allocator of the binary and the wheel: mimalloc, built without transparent
/// huge pages. A request's many small, short-lived Rust allocations cost fewer cycles there
/// than in glibc (bench/results/2026-12-03-allocator.md); CPython's objects keep CPython's
/// allocators. Install it with `#[global_allocator] static ALLOCATOR: Allocator = Allocator;`.
pub use mimalloc::MiMalloc as Allocator;

/// Runs the command line of this process's arguments, as the `rust-asgi-server` binary
/// does, and returns its exit code.
pub fn main() -> ExitCode {
    ExitCode::from(run(
        std::env::args_os(),
        &WorkerCommand::current_exe(),
        None,
    ))
}

/// How `--workers` and `--reload` start a worker: this program again, with the command
/// line's own arguments after `args`.
#[derive(Debug)]
pub struct WorkerCommand {
    program: std::io::Result<PathBuf>,
    args: Vec<OsString>,
}

impl WorkerCommand {
    /// This executable (the binary).
    pub fn current_exe() -> Self {
        WorkerCommand {
            program: std::env::current_exe(),
            args: Vec::new(),
        }
    }

    /// `program` with `args` first: the wheel starts `python -m rust_asgi_server`.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = OsString>) -> Self {
        WorkerCommand {
            program: Ok(program.into()),
            args: args.into_iter().collect(),
        }
    }
}

/// Runs the command line `args` (the program name first, as in `std::env::args_os`) and
/// returns its exit code: 0 when served and stopped gracefully, 2 for a usage error, 3 when
/// serving failed. `app` is an ASGI app object (or with `--factory` its factory) served
/// instead of an `APP` argument, for `rust_asgi_server.run(app)`; it cannot be handed to
/// worker processes, so `--workers` and `--reload` then need an import string.
///
/// Help, usage errors and log lines are written to stdout and stderr as by the binary.
/// Called from Python, release the GIL first (`py.detach`): the loop thread needs it.
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    workers: &WorkerCommand,
    app: Option<Py<PyAny>>,
) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    let parsed = Cli::try_parse_from(&args).and_then(|cli| {
        let static_dirs = checked_static_dirs(&cli)?;
        Ok((cli, static_dirs))
    });
    let (cli, static_dirs) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return u8::try_from(err.exit_code()).unwrap_or(2);
        }
    };
    // Before any thread exists, and before the interpreter copies the environment.
    let env_loaded = cli.load_env_file();
    // Held until this returns: dropping it exports the spans not sent yet.
    let _telemetry = match init_logging(&cli) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    match env_loaded {
        Ok(()) => {
            if let Some(path) = &cli.env_file {
                tracing::info!("loaded environment from {}", path.display());
                sync_python_environ();
            }
        }
        Err(err) => {
            tracing::error!("{err}");
            return 2;
        }
    }
    let source = match (cli.import_string(), app) {
        (_, Some(app)) if cli.process_role() == ProcessRole::Supervisor => {
            drop(app);
            eprintln!(
                "error: --workers, --reload, --workers-max-rss and --workers-lifetime start the \
                 app in new processes: give it as an import string (\"module:app\"), not as an \
                 object"
            );
            return 2;
        }
        (_, Some(app)) => AppArg::Object(app),
        (Some(import_string), None) => AppArg::Import(import_string.to_owned()),
        (None, None) => {
            eprintln!("error: no app given; usage: rust-asgi-server --app module:app");
            return 2;
        }
    };
    if let (Some(address), ProcessRole::Supervisor) = (cli.metrics_bind, cli.process_role())
        && let Err(message) = supervisor::slot_addresses(address, supervised_workers(&cli))
    {
        eprintln!("error: {message}");
        return 2;
    }
    let result = match cli.process_role() {
        ProcessRole::Supervisor => supervise(&cli, workers, &args),
        ProcessRole::Single | ProcessRole::Worker { .. } => serve(&cli, source, &static_dirs),
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!("{err}");
            3
        }
    }
}

/// The app of a command line: `APP` or an object from Python.
enum AppArg {
    Import(String),
    Object(Py<PyAny>),
}

impl AppArg {
    fn builder(self, cli: &Cli) -> PythonAppBuilder {
        let builder = match self {
            AppArg::Import(import_string) => PythonApp::builder(&import_string),
            AppArg::Object(app) => PythonApp::builder_for(app),
        };
        cli.python_app(builder)
    }
}

/// A server built from a command line, serving on the asyncio loop that runs on the
/// calling thread: the wheel's awaitable `Server`.
pub struct Embedded {
    /// Readiness and shutdown of the server.
    pub handle: ServerHandle,
    /// Serves until [`ServerHandle::shutdown`]; spawn it on the Tokio runtime.
    pub serving: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

/// Builds the server of the command line `args` (program name first) for an app object,
/// or the command line's `APP` when `app` is `None`, to be served on the asyncio loop
/// running on this thread, with no signal handlers: the caller owns its signals and stops
/// the server through [`Embedded::handle`]. Logs go to stderr as the binary's do. Call inside a Tokio runtime, with the GIL held
/// by the thread running that loop. A usage error is clap's message, as the binary would
/// print it.
pub fn embed(
    args: impl IntoIterator<Item = OsString>,
    app: Option<Py<PyAny>>,
) -> Result<Embedded, EmbedError> {
    let cli = Cli::try_parse_from(args).map_err(|err| EmbedError::Usage(err.to_string()))?;
    let static_dirs =
        checked_static_dirs(&cli).map_err(|err| EmbedError::Usage(err.to_string()))?;
    let telemetry = init_logging(&cli).map_err(EmbedError::Serve)?;
    if cli.env_file.is_some() {
        cli.load_env_file().map_err(EmbedError::Serve)?;
        sync_python_environ();
    }
    if cli.process_role() != ProcessRole::Single {
        return Err(EmbedError::Usage(
            "--workers, --reload, --workers-max-rss and --workers-lifetime are not available \
             to a server awaited in a running asyncio loop; use rust_asgi_server.run() or the \
             command line"
                .into(),
        ));
    }
    let source = match (app, cli.import_string()) {
        (Some(app), _) => AppArg::Object(app),
        (None, Some(import_string)) => AppArg::Import(import_string.to_owned()),
        (None, None) => return Err(EmbedError::Usage("no app given".into())),
    };
    // A bad certificate fails here, before the app is attached to the caller's loop.
    if let Some(tls) = cli.tls_options() {
        tls.server_config(cli.http).map_err(EmbedError::Serve)?;
    }
    let binds = cli.binds().map_err(EmbedError::Serve)?;
    if let Some(address) = cli.metrics_bind {
        metrics::serve_process(address).map_err(EmbedError::Serve)?;
    }
    let python = source
        .builder(&cli)
        .on_running_loop()
        .start()
        .map_err(EmbedError::Serve)?;
    let (handle, serving) = build_server(&cli, &static_dirs, binds, python, false);
    Ok(Embedded {
        handle,
        serving: Box::pin(async move {
            let served = serving.await;
            // Exporting the last spans blocks on the exporter's thread.
            if let Some(telemetry) = telemetry {
                drop(tokio::task::spawn_blocking(move || telemetry.shutdown()).await);
            }
            served
        }),
    })
}

/// Why [`embed`] could not build a server.
#[derive(Debug)]
pub enum EmbedError {
    /// The options are wrong: clap's message.
    Usage(String),
    /// The app or a listener could not be set up.
    Serve(Error),
}

/// The --static-path-* directories, or a usage error as clap reports its own.
fn checked_static_dirs(cli: &Cli) -> Result<Vec<StaticDir>, clap::Error> {
    cli.static_dirs()
        .map_err(|message| Cli::command().error(clap::error::ErrorKind::ValueValidation, message))
}

/// The binary's server for `python`: its router (the static directories, then the app) in
/// the command line's layers, on `binds`; its handle, and the future that serves until it
/// stops.
fn build_server(
    cli: &Cli,
    static_dirs: &[StaticDir],
    binds: Vec<crate::Bind>,
    python: PythonApp,
    signals: bool,
) -> (
    ServerHandle,
    impl Future<Output = Result<(), Error>> + Send + 'static,
) {
    // The app's requests are counted by a layer around its service rather than by
    // `Router::layer`, which would box their bodies and future once more.
    let app = match cli.metrics_bind {
        Some(_) => Either::Left(MapResponse::new(
            python.service().metered(),
            IntoResponse::into_response,
        )),
        None => Either::Right(MapResponse::new(
            python.service(),
            IntoResponse::into_response,
        )),
    };
    let app = if static_dirs.is_empty() {
        // Nothing to route: no path to match and no boxed clone of the app's service per
        // request (2 % less CPU per request, raw hello at 50 connections).
        Either::Left(app)
    } else {
        let router = static_files::mount(Router::new(), static_dirs);
        let router = match cli.metrics_bind {
            Some(_) => router.layer(MetricsLayer::new()),
            None => router,
        };
        // Its state given now, as `Server::new` does for a bare `Router`: this one is layered.
        Either::Right(router.fallback_service(app).with_state(()))
    };
    // Outermost first: refusals get the default headers too.
    let service = ServiceBuilder::new()
        .layer(DefaultHeadersLayer::new(cli.default_headers()))
        .option_layer(cli.limit_concurrency.map(InFlightLimitLayer::new))
        .option_layer(cli.limit_request_body.map(BodySizeLimitLayer::new))
        .service(app);
    let server = binds
        .into_iter()
        .fold(Server::new(service), Server::listen)
        .options(cli.server_options().signals(signals));
    (server.handle(), server.serve(python))
}

/// Serves the app in this process: alone, or as one worker of a supervisor.
fn serve(cli: &Cli, app: AppArg, static_dirs: &[StaticDir]) -> Result<(), Error> {
    // With one thread for sockets and Python, this thread only orchestrates: start-up,
    // signals, shutdown, the watchdog and the metrics listener.
    let mut runtime = match cli.runtime_mode() {
        RuntimeMode::Single => {
            keep_socket_buffers_on_the_heap();
            tokio::runtime::Builder::new_current_thread()
        }
        RuntimeMode::Split => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().map_err(|err| {
        Error::with_source(ErrorKind::System, "cannot start the Tokio runtime", err)
    })?;
    runtime.block_on(async {
        let binds = cli.binds()?;
        let lifeline = match cli.process_role() {
            ProcessRole::Worker { lifeline } => Some(Lifeline::inherited(lifeline)?),
            ProcessRole::Single | ProcessRole::Supervisor => None,
        };
        // A worker serves its metrics on its slot's listener, once it serves requests.
        let worker_metrics = match (&lifeline, cli.worker_metrics_fd, cli.metrics_bind) {
            (Some(_), Some(fd), _) => Some(WorkerMetrics::inherited(fd)?),
            (Some(_), None, _) | (None, _, None) => None,
            (None, _, Some(address)) => {
                metrics::serve_process(address)?;
                None
            }
        };
        let python = app.builder(cli).start()?;
        let (handle, serving) = build_server(cli, static_dirs, binds, python, true);
        if let Some(worker_metrics) = worker_metrics {
            worker_metrics.serve(handle.clone())?;
        }
        if let Some(lifeline) = lifeline {
            tokio::spawn(lifeline.attend(handle));
        }
        serving.await
    })
}

/// asyncio's socket transports (the loop of `--runtime-mode single`; uvloop has its own
/// buffers) read into a new 256 KiB `bytes` and shrink it to what arrived. Above glibc's
/// default threshold of 128 KiB, each such read costs an mmap, an mremap and a munmap; from
/// the heap it costs none (an app making 10 socket round trips a request: 1.7-2.0x the
/// requests per second, bench/results/2026-12-03-runtime-modes.md).
fn keep_socket_buffers_on_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes no pointer; it changes a setting of glibc's allocator for the
    // allocations that follow.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
    }
}

/// `--workers N` or `--reload`: binds the sockets, then starts and watches worker
/// processes that serve them. Python never starts in this process.
fn supervise(cli: &Cli, command: &WorkerCommand, args: &[OsString]) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            Error::with_source(ErrorKind::System, "cannot start the Tokio runtime", err)
        })?;
    // Checked once here, rather than failing in every worker.
    if let Some(tls) = cli.tls_options() {
        tls.server_config(cli.http)?;
    }
    let sockets = cli
        .binds()?
        .into_iter()
        .map(|bind| bind.open(cli.backlog))
        .collect::<Result<Vec<_>, _>>()?;
    let program = command.program.as_ref().map_err(|err| {
        Error::with_source(
            ErrorKind::System,
            "cannot find this program to start workers",
            std::io::Error::new(err.kind(), err.to_string()),
        )
    })?;
    let args = command
        .args
        .iter()
        .chain(args.iter().skip(1))
        .cloned()
        .collect();
    if cli.reload && cli.workers > 1 {
        tracing::warn!("--reload runs one worker: --workers is ignored");
    }
    let workers = supervised_workers(cli);
    let metrics = cli
        .metrics_bind
        .map(|address| MetricsListeners::bind(address, workers))
        .transpose()?;
    runtime.block_on(async {
        let mut supervisor =
            Supervisor::new(program.clone(), args, workers, sockets).recycle(cli.recycling());
        if cli.reload {
            supervisor = supervisor.reload_on(cli.file_watcher()?);
        }
        if let Some(metrics) = metrics {
            supervisor = supervisor.metrics(metrics);
        }
        supervisor.run().await
    })
}

/// How many workers a supervisor runs: one with --reload.
fn supervised_workers(cli: &Cli) -> usize {
    if cli.reload { 1 } else { cli.workers.into() }
}
/// An interpreter that is already running (the wheel) copied the environment when it
/// started: `os.environ` gets the variables of --env-file too.
fn sync_python_environ() {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        return;
    }
    let synced = Python::attach(|py| -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        for (name, value) in std::env::vars() {
            environ.set_item(name, value)?;
        }
        Ok(())
    });
    if let Err(err) = synced {
        tracing::warn!("cannot update os.environ from --env-file: {err}");
    }
}

/// Logs go to stderr, filtered by --log-level (or RUST_LOG), as text or one JSON object a
/// line. With --otel-endpoint, a process that serves also exports its spans at `INFO` and
/// above, whatever the log level: the exporter is returned, to be dropped last.
fn init_logging(cli: &Cli) -> Result<Option<Telemetry>, Error> {
    let telemetry = match (&cli.otel_endpoint, cli.process_role()) {
        (Some(endpoint), ProcessRole::Single | ProcessRole::Worker { .. }) => {
            Some(Telemetry::otlp(endpoint)?)
        }
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let spans = telemetry
        .as_ref()
        .map(|telemetry| telemetry.layer().with_filter(LevelFilter::INFO));
    // try_init: from Python, a second run() in one process keeps the first set-up.
    drop(
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(spans)
            .try_init(),
    );
    Ok(telemetry)
}
