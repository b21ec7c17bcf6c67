//! Tower layers around Rust and Python routes alike: request id, tracing, CORS, compression
//! and a timeout wrap the whole router, so a Python response is compressed, gets CORS
//! headers and times out exactly like a Rust one.
//!
//! `cargo run --release --example tower_layers -- [--bind 127.0.0.1:3000] [--app pyapp.service:app] [--timeout 10]`
//!
//! Request identity: the `x-request-id` a client sends (or a fresh UUID) is put on the
//! request before routing, so the Python app finds it in its scope headers and logs it
//! (pyapp/service.py), the Rust trace span logs it, and the response carries it back.
//!
//! ```text
//! curl -si -H 'x-request-id: abc' -H 'accept-encoding: gzip' localhost:3000/items/1
//! ```

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::any_service;
use clap::Parser;
use rust_asgi_server::{PythonApp, Server};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use common::items::{SERVED_BY, list_items};

/// Request id, tracing, CORS, compression and a timeout around Rust and Python routes.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: common::Args,
    /// Seconds a request may take before the server gives up on it and answers 504.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One span per request, named after its id: every Rust log line inside carries it.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        uri = %request.uri(),
    )
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let cli = Cli::parse();
    common::init_logging();
    let python = PythonApp::import(&cli.args.app)?;
    let asgi = python.service();

    // Outermost first: the id is set before the span opens, the span covers everything.
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers(Any)
                .expose_headers([REQUEST_ID, SERVED_BY]),
        )
        .layer(CompressionLayer::new())
        // The handler (Rust or Python) took too long: 504, and the request is dropped —
        // for Python, its `receive()` then reports `http.disconnect`.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs_f64(cli.timeout),
        ));

    let router = Router::new()
        .route("/items", any_service(asgi.clone()).get(list_items))
        .fallback_service(asgi)
        .layer(layers);
    Server::new(router).bind(cli.args.bind).serve(python).await
}
