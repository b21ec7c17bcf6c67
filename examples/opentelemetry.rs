//! One trace across Rust and Python: `GET /hello` answered in Rust, the rest by a Python app
//! that has its own OpenTelemetry instrumentation; every request gets a server span, exported
//! over OTLP/HTTP.
//!
//! `cargo run --release --example opentelemetry -- [--bind 127.0.0.1:3000] [--app pyapp.traced:app] [--otel-endpoint http://127.0.0.1:4318]`
//!
//! A request with a `traceparent` continues the client's trace: the server span is its
//! child, and the span of the Rust handler, or the Python app's own spans, are children of
//! the server span.

use axum::Router;
use axum::routing::get;
use clap::Parser;
use rust_asgi_server::telemetry::Telemetry;
use rust_asgi_server::{PythonApp, Server, ServerOptions};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

#[derive(Parser, Debug)]
struct Cli {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The Python ASGI app, as `module:attribute`, imported from the current directory.
    #[arg(long, default_value = "pyapp.traced:app")]
    app: String,
    /// Base URL of the OTLP/HTTP receiver.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otel_endpoint: String,
}

/// A Rust handler's own span: a child of the request's server span.
#[tracing::instrument]
async fn hello() -> &'static str {
    "hello from Rust"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let telemetry = Telemetry::otlp(&cli.otel_endpoint)?;
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .with(telemetry.layer().with_filter(LevelFilter::INFO))
        .init();

    let python = PythonApp::import(&cli.app)?;
    let router = Router::new()
        .route("/hello", get(hello))
        .fallback_service(python.service());
    let served = Server::new(router)
        .bind(cli.bind)
        .options(ServerOptions::new().request_spans(true))
        .serve(python)
        .await;
    // The exporter's last batch is sent from its own thread, which this waits for.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(served?)
}
