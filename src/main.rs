//! `rust-asgi-server --app module:app`: the drop-in uvicorn replacement.

use std::io::IsTerminal;
use std::process::ExitCode;

use axum::Router;
use clap::Parser;
use rust_asgi_server::Server;
use rust_asgi_server::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Some(import_string) = cli.import_string().map(str::to_owned) else {
        eprintln!("error: no app given; usage: rust-asgi-server --app module:app");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the Tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let python = cli.python_app(&import_string).start()?;
        let router = Router::new().fallback_service(python.service());
        Server::new(router)
            .bind(cli.bind_address())
            .options(cli.server_options())
            .serve(python)
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::from(3)
        }
    }
}
