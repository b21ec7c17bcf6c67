//! Parity checks on live traffic: three routes moved to Rust, each behind a `ShadowLayer`
//! that also asks the Python app and compares. Clients always get the Rust answer.
//!
//! `cargo run --release --example shadow_compare -- [--bind 127.0.0.1:3000] [--app pyapp.service:app] [--share 1.0] [--max-in-flight 32] [--max-loop-busy 0.5]`
//!
//! - `GET /items/{item_id}` drifted on purpose: its 404 says `Not found` where Python says
//!   `Item not found`. Each such request is logged as a mismatch with a short diff:
//!   `shadow: GET /items/999 answered differently by Python: body /detail: rust "Not found", python "Item not found"`.
//! - `GET /health` adds a `checked_at` timestamp, which the comparison ignores: it matches.
//! - `GET /slow?seconds=S` answers at once where Python sleeps S seconds: the client does not
//!   wait for the Python side, which is compared when it answers.
//!
//! `GET /shadow/stats` shows the counters (`ShadowLayer::stats`) as JSON.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any_service, get};
use clap::Parser;
use rust_asgi_server::migration::{ShadowLayer, ShadowStats};
use rust_asgi_server::{PythonApp, Server};
use serde_json::json;

use common::items::{SEED_ITEMS, item_json, json_response};

/// Rust routes compared, on live traffic, with the Python ones they replace.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: common::Args,
    /// Share of the requests also sent to Python, from 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    share: f64,
    /// Comparisons running at once; a request beyond that is not shadowed.
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    /// How busy the loop thread may be (a share of one CPU) for a comparison to start.
    #[arg(long, default_value_t = 0.5)]
    max_loop_busy: f64,
    /// The share of the machine's CPU time that must be idle for a comparison to start.
    #[arg(long, default_value_t = 0.1)]
    min_idle_cpu: f64,
    /// Comparisons started per second at most ("inf": no limit).
    #[arg(long, default_value_t = 100.0)]
    max_per_second: f64,
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let cli = Cli::parse();
    common::init_logging();
    let python = PythonApp::import(&cli.args.app)?;
    let asgi = python.service();
    let shadow = ShadowLayer::new(asgi.clone())
        .share(cli.share)
        .max_in_flight(cli.max_in_flight)
        .max_loop_busy(cli.max_loop_busy)
        .min_idle_cpu(cli.min_idle_cpu)
        .max_per_second(cli.max_per_second)
        .ignore_field("checked_at");
    let stats = shadow.stats();
    let router = Router::new()
        // The layer wraps the Rust handler only: PUT and DELETE go to Python unshadowed.
        .route(
            "/items/{item_id}",
            any_service(asgi.clone()).get(get_item.layer(shadow.clone())),
        )
        .route("/health", get(health.layer(shadow.clone())))
        .route("/slow", get(slow.layer(shadow)))
        .route("/shadow/stats", get(move || counts(stats.clone())))
        .fallback_service(asgi);
    Server::new(router).bind(cli.args.bind).serve(python).await
}

/// `GET /items/{item_id}`, drifted: Python's 404 says `Item not found`.
async fn get_item(Path(item_id): Path<String>) -> Response {
    let found = item_id
        .parse::<u32>()
        .ok()
        .and_then(|id| SEED_ITEMS.iter().find(|item| item.id == id));
    match found {
        Some(item) => json_response(StatusCode::OK, item_json(item)),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"detail": "Not found"}).to_string(),
        ),
    }
}

/// `GET /health`, with a field Python does not have and the comparison ignores.
async fn health() -> Response {
    let checked_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let body = json!({"status": "ok", "checked_at": checked_at});
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /slow?seconds=S`: Python sleeps, Rust says it did.
async fn slow(RawQuery(query): RawQuery) -> Response {
    let seconds = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds=")?.parse::<f64>().ok())
        .unwrap_or(1.0);
    json_response(StatusCode::OK, json!({"slept": seconds}).to_string())
}

async fn counts(stats: ShadowStats) -> Response {
    let counts = stats.counts();
    let body = json!({
        "compared": counts.compared,
        "mismatched": counts.mismatched,
        "skipped_busy": counts.skipped_busy,
        "skipped_too_large": counts.skipped_too_large,
        "failed": counts.failed,
    });
    json_response(StatusCode::OK, body.to_string())
}
