//! The mixed server of the benchmark: `GET /rust` is answered by the same Rust handler as
//! `bench_axum`, every other request goes to the Python ASGI app (bench/run.py).
//!
//! Usage: `bench_mixed [--bind 127.0.0.1:8000] [--app pyapp.bench_raw:hello] [--loop auto|asyncio|uvloop]`

use axum::Router;
use axum::routing::get;
use rust_asgi_server::{LoopKind, PythonApp, Server};

/// The same handler as `bench_axum`.
async fn hello() -> &'static str {
    "Hello, world!"
}

struct Args {
    bind: String,
    app: String,
    event_loop: LoopKind,
}

fn parse_args() -> Args {
    let mut parsed = Args {
        bind: "127.0.0.1:8000".into(),
        app: "pyapp.bench_raw:hello".into(),
        event_loop: LoopKind::Auto,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match name.as_str() {
            "--bind" => parsed.bind = value(),
            "--app" => parsed.app = value(),
            "--loop" => {
                parsed.event_loop = match value().as_str() {
                    "auto" => LoopKind::Auto,
                    "asyncio" => LoopKind::Asyncio,
                    "uvloop" => LoopKind::Uvloop,
                    other => panic!("--loop {other:?}: expected auto, asyncio or uvloop"),
                }
            }
            other => panic!(
                "unknown argument {other:?}; usage: bench_mixed [--bind ADDR] [--app MOD:ATTR] [--loop KIND]"
            ),
        }
    }
    parsed
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let python = PythonApp::builder(&args.app)
        .event_loop(args.event_loop)
        .start()?;
    let asgi = python.service();
    let router = Router::new()
        .route("/rust", get(hello))
        .fallback_service(asgi);
    Server::new(router).bind(args.bind).serve(python).await?;
    Ok(())
}
