//! Nothing in Rust yet: the whole Python app served by rust-asgi-server — a complete ASGI
//! server (lifespan, graceful shutdown on SIGTERM/SIGINT) in ten lines. Every migration
//! starts here (docs/migration.md): run your client tests against it, then move routes.
//!
//! `cargo run --release --example asgi_only -- [--bind 127.0.0.1:3000] [--app pyapp.service:app]`

use axum::Router;
use clap::Parser;
use rust_asgi_server::{PythonApp, Server};

#[derive(Parser)]
struct Args {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The Python ASGI app, as `module:attribute`.
    #[arg(long, default_value = "pyapp.service:app")]
    app: String,
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let python = PythonApp::import(&args.app)?;
    let router = Router::new().fallback_service(python.service());
    Server::new(router).bind(args.bind).serve(python).await
}
