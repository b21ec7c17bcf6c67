//! Rust called from Python: before a route moves, its Python handler can already call the
//! Rust implementation of what it computes. The module `rust_pricing` is registered in the
//! embedded interpreter before the app is imported, so the app imports it like any other.
//!
//! `cargo run --release --example rust_from_python -- [--bind 127.0.0.1:3000] [--app pyapp.migration_apps:calls_rust]`
//!
//! `GET /items/{item_id}/total?quantity=N` is answered by Python (pyapp/migration_apps.py),
//! which computes the total with `rust_pricing.total_price`, and says so in `computed_by`.

mod common;

use axum::Router;
use clap::Parser;
use pyo3::prelude::*;
use rust_asgi_server::{PythonApp, Server};

/// A Python app calling Rust functions registered in its interpreter.
#[derive(Parser)]
struct Cli {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The Python ASGI app, as `module:attribute`; it imports `rust_pricing`.
    #[arg(long, default_value = "pyapp.migration_apps:calls_rust")]
    app: String,
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let cli = Cli::parse();
    common::init_logging();
    let python = PythonApp::builder(&cli.app)
        .rust_module("rust_pricing", rust_pricing)
        .start()?;
    let router = Router::new().fallback_service(python.service());
    Server::new(router).bind(cli.bind).serve(python).await
}

/// The module the Python app imports as `rust_pricing`.
fn rust_pricing(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(total_price, module)?)
}

/// The price of `quantity` items at `unit_price`, tax included, rounded to the cent: what
/// `total_price` in pyapp/migration_apps.py computes in Python.
#[pyfunction]
fn total_price(unit_price: f64, quantity: u32, tax_rate: f64) -> f64 {
    (unit_price * f64::from(quantity) * (1.0 + tax_rate) * 100.0).round() / 100.0
}
