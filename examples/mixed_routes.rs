//! The first moved endpoint: `GET /items` is answered by Rust, `POST /items` (and PUT,
//! DELETE, OPTIONS… on the same path) and every other route still by the Python app.
//!
//! `cargo run --release --example mixed_routes -- [--bind 127.0.0.1:3000] [--app pyapp.service:app]`
//!
//! The Rust handler is in examples/common/items.rs; tests/python/test_examples.py checks
//! that it answers exactly as the Python one does under uvicorn.

mod common;

use axum::Router;
use axum::routing::any_service;
use clap::Parser;
use rust_asgi_server::{PythonApp, Server};

use common::items::list_items;

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let args = common::Args::parse();
    common::init_logging();
    let python = PythonApp::import(&args.app)?;
    let asgi = python.service();
    let router = Router::new()
        // /items: every method goes to Python except GET (and HEAD), which Rust answers now.
        // Per method instead: `get(list_items).post_service(asgi.clone())` — then a method
        // listed nowhere gets a 405 from axum rather than from the Python app.
        .route("/items", any_service(asgi.clone()).get(list_items))
        // Every path without a Rust route: Python.
        .fallback_service(asgi);
    Server::new(router).bind(args.bind).serve(python).await
}
