//! The `rust-asgi-server` command line: its arguments (`args.rs`), the `--workers`
//! supervisor (`supervisor.rs`) and `--reload` (`reload.rs`). Behind the default `cli`
//! feature, so a library user compiles none of it.

mod args;
mod reload;
mod supervisor;

use std::io::IsTerminal;
use std::process::ExitCode;

use axum::Router;
use clap::Parser;
use tower::ServiceBuilder;

use self::args::{Cli, LogFormat, ProcessRole};
use self::supervisor::{Lifeline, Supervisor};
use crate::Server;
use crate::error::{Error, ErrorKind};
use crate::layers::{BodySizeLimitLayer, DefaultHeadersLayer, InFlightLimitLayer};

/// Runs the command line of this process's arguments, as the `rust-asgi-server` binary
/// does, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread exists, and before the interpreter copies the environment.
    let env_loaded = cli.load_env_file();
    init_logging(&cli);
    match env_loaded {
        Ok(()) => {
            if let Some(path) = &cli.env_file {
                tracing::info!("loaded environment from {}", path.display());
            }
        }
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(2);
        }
    }
    let Some(import_string) = cli.import_string().map(str::to_owned) else {
        eprintln!("error: no app given; usage: rust-asgi-server --app module:app");
        return ExitCode::from(2);
    };
    let result = match cli.process_role() {
        ProcessRole::Supervisor => supervise(&cli),
        ProcessRole::Single | ProcessRole::Worker { .. } => serve(&cli, &import_string),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::from(3)
        }
    }
}

/// Serves the app in this process: alone, or as one worker of a supervisor.
fn serve(cli: &Cli, import_string: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            Error::with_source(ErrorKind::System, "cannot start the Tokio runtime", err)
        })?;
    runtime.block_on(async {
        let binds = cli.binds()?;
        let lifeline = match cli.process_role() {
            ProcessRole::Worker { lifeline } => Some(Lifeline::inherited(lifeline)?),
            ProcessRole::Single | ProcessRole::Supervisor => None,
        };
        let python = cli.python_app(import_string).start()?;
        let router = Router::new().fallback_service(python.service());
        // Outermost first: refusals get the default headers too.
        let service = ServiceBuilder::new()
            .layer(DefaultHeadersLayer::new(cli.default_headers()))
            .option_layer(cli.limit_concurrency.map(InFlightLimitLayer::new))
            .option_layer(cli.limit_request_body.map(BodySizeLimitLayer::new))
            .service(router);
        let server = binds
            .into_iter()
            .fold(Server::new(service), Server::listen)
            .options(cli.server_options());
        if let Some(lifeline) = lifeline {
            tokio::spawn(lifeline.attend(server.handle()));
        }
        server.serve(python).await
    })
}

/// `--workers N` or `--reload`: binds the sockets, then starts and watches worker
/// processes that serve them. Python never starts in this process.
fn supervise(cli: &Cli) -> Result<(), Error> {
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
    let program = std::env::current_exe().map_err(|err| {
        Error::with_source(
            ErrorKind::System,
            "cannot find this program to start workers",
            err,
        )
    })?;
    let args = std::env::args_os().skip(1).collect();
    let workers = if cli.reload {
        if cli.workers > 1 {
            tracing::warn!("--reload runs one worker: --workers is ignored");
        }
        1
    } else {
        cli.workers.into()
    };
    runtime.block_on(async {
        let supervisor = Supervisor::new(program, args, workers, sockets);
        let supervisor = match cli.reload {
            true => supervisor.reload_on(cli.file_watcher()?),
            false => supervisor,
        };
        supervisor.run().await
    })
}

/// Logs go to stderr, filtered by --log-level (or RUST_LOG), as text or one JSON object a line.
fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}
