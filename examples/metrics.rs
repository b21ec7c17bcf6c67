//! Prometheus metrics of a migration router: `GET /items` in Rust, the rest in Python, and
//! one `http_requests_total` that tells the two backends apart.
//!
//! `cargo run --release --example metrics -- [--bind 127.0.0.1:3000] [--app pyapp.service:app] [--metrics-bind 127.0.0.1:9100]`
//!
//! Scrape `http://127.0.0.1:9100/metrics`: the series are listed in the docs of
//! `rust_asgi_server::metrics`.

mod common;

use axum::Router;
use axum::routing::any_service;
use clap::Parser;
use rust_asgi_server::metrics::{Metrics, MetricsLayer};
use rust_asgi_server::{PythonApp, Server};

use common::items::list_items;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: common::Args,
    /// Where the metrics are served, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_bind: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    common::init_logging();
    let metrics = Metrics::install()?;
    let scrape = tokio::net::TcpListener::bind(&cli.metrics_bind).await?;
    tracing::info!("metrics on http://{}/metrics", scrape.local_addr()?);
    tokio::spawn(async move { axum::serve(scrape, metrics.router()).await });

    let python = PythonApp::import(&cli.args.app)?;
    let asgi = python.service();
    let router = Router::new()
        .route("/items", any_service(asgi.clone()).get(list_items))
        .fallback_service(asgi)
        // `Router::layer` wraps each route on its own: the layer sees the matched route.
        .layer(MetricsLayer::new());
    Server::new(router)
        .bind(cli.args.bind)
        .serve(python)
        .await?;
    Ok(())
}
