//! Bare axum serving `GET /rust`, the baseline for the benchmark's Rust-route cell
//! (bench/run.py compares it with the same handler inside `bench_mixed`).
//!
//! Usage: `bench_axum [--bind 127.0.0.1:8000]`

use axum::Router;
use axum::routing::get;

/// The same handler as the Rust route of `bench_mixed`.
async fn hello() -> &'static str {
    "Hello, world!"
}

fn bind_arg() -> String {
    let mut args = std::env::args().skip(1);
    let mut bind = String::from("127.0.0.1:8000");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().expect("--bind needs an address"),
            other => match other.strip_prefix("--bind=") {
                Some(value) => bind = value.to_string(),
                None => panic!("unknown argument {other:?}; usage: bench_axum [--bind ADDR]"),
            },
        }
    }
    bind
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = bind_arg();
    let router = Router::new().route("/rust", get(hello));
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await
}
