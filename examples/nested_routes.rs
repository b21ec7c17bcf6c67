//! Rust routers nested two deep (`/api`, `/api/v1`), with the Python app as the fallback at
//! every level, and a whole Python subtree mounted with `nest_service` a level below.
//!
//! `cargo run --release --example nested_routes -- [--bind 127.0.0.1:3000] [--app pyapp.service:app]`
//!
//! | request                      | answered by                                        |
//! |------------------------------|----------------------------------------------------|
//! | `GET /api/health`            | Rust (`/api` router)                               |
//! | `GET /api/v1/items`          | Rust (`/api/v1` router)                            |
//! | `POST /api/v1/items`         | Python, through the method fallback of that route  |
//! | `/api/v1/items/7`, `/api/…`  | Python, through the fallback of the nested router  |
//! | `/api/v1/reports/…`          | Python, through `nest_service` (depth 3)           |
//! | anything else                | Python, through the top-level fallback             |
//!
//! Axum strips the nesting prefix before an inner router sees the request, but the ASGI
//! service uses the original URI: Python gets `path == "/api/v1/items/7"`, the original
//! `raw_path` and query string, and `root_path == ""` — what it gets under uvicorn.

mod common;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any_service, get};
use clap::Parser;
use rust_asgi_server::{PythonApp, Server};

use common::items::{json_response, list_items};

/// A new endpoint written in Rust; the Python service has its own `GET /health`.
async fn api_health() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.to_string())
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let args = common::Args::parse();
    common::init_logging();
    let python = PythonApp::import(&args.app)?;
    let asgi = python.service();

    let v1 = Router::new()
        .route("/items", any_service(asgi.clone()).get(list_items))
        .nest_service("/reports", asgi.clone())
        .fallback_service(asgi.clone());
    let api = Router::new()
        .route("/health", get(api_health))
        .nest("/v1", v1)
        .fallback_service(asgi.clone());
    let router = Router::new().nest("/api", api).fallback_service(asgi);

    Server::new(router).bind(args.bind).serve(python).await
}
