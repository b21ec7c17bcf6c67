//! Micro-benchmark of the ASGI bridge alone, without sockets or HTTP parsing: requests are
//! built in memory and sent straight to `AsgiService`, and each response body is collected.
//! Driven by bench/micro.py, which compares it with calling the same app directly in Python.
//!
//! Usage: `bench_bridge --app MOD:ATTR [--method GET] [--path /] [--body TEXT]
//!         [--requests 100000] [--concurrency 1] [--warmup 2000] [--loop auto|asyncio|uvloop]`
//!
//! Prints one line: `BRIDGE_JSON {"requests": N, "seconds": S, "bytes": B}`.

use std::time::Instant;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rust_asgi_server::{AsgiService, LoopKind, PythonApp};
use tower::ServiceExt;

struct Args {
    app: String,
    method: String,
    path: String,
    body: Option<String>,
    requests: usize,
    concurrency: usize,
    warmup: usize,
    event_loop: LoopKind,
}

fn parse_args() -> Args {
    let mut parsed = Args {
        app: "pyapp.bench_raw:hello".into(),
        method: "GET".into(),
        path: "/".into(),
        body: None,
        requests: 100_000,
        concurrency: 1,
        warmup: 2_000,
        event_loop: LoopKind::Auto,
    };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        let number = |text: String| -> usize {
            text.parse()
                .unwrap_or_else(|_| panic!("not a number: {text:?}"))
        };
        match name.as_str() {
            "--app" => parsed.app = value(),
            "--method" => parsed.method = value(),
            "--path" => parsed.path = value(),
            "--body" => parsed.body = Some(value()),
            "--requests" => parsed.requests = number(value()),
            "--concurrency" => parsed.concurrency = number(value()).max(1),
            "--warmup" => parsed.warmup = number(value()),
            "--loop" => {
                parsed.event_loop = match value().as_str() {
                    "auto" => LoopKind::Auto,
                    "asyncio" => LoopKind::Asyncio,
                    "uvloop" => LoopKind::Uvloop,
                    other => panic!("--loop {other:?}: expected auto, asyncio or uvloop"),
                }
            }
            other => {
                panic!("unknown argument {other:?}; see the usage in examples/bench_bridge.rs")
            }
        }
    }
    parsed
}

fn request(args: &Args) -> Request<Full<Bytes>> {
    let body = args.body.clone().unwrap_or_default();
    let mut builder = Request::builder()
        .method(args.method.as_str())
        .uri(args.path.as_str())
        .header("host", "127.0.0.1")
        .header("user-agent", "bench_bridge");
    if args.body.is_some() {
        builder = builder
            .header("content-type", "application/octet-stream")
            .header("content-length", body.len());
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}

/// Sends `count` requests one after another; returns the response bytes received.
async fn worker(service: AsgiService, args: std::sync::Arc<Args>, count: usize) -> usize {
    let mut received = 0;
    for _ in 0..count {
        let response = service
            .clone()
            .oneshot(request(&args))
            .await
            .expect("AsgiService is infallible");
        assert!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        let body = response.into_body().collect().await.expect("response body");
        received += body.to_bytes().len();
    }
    received
}

/// `total` requests spread over `concurrency` workers.
async fn run(service: &AsgiService, args: &std::sync::Arc<Args>, total: usize) -> usize {
    let per_worker = total / args.concurrency;
    let extra = total % args.concurrency;
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|index| {
            let count = per_worker + usize::from(index < extra);
            tokio::spawn(worker(service.clone(), args.clone(), count))
        })
        .collect();
    let mut received = 0;
    for task in tasks {
        received += task.await.expect("worker panicked");
    }
    received
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = std::sync::Arc::new(parse_args());
    let python = PythonApp::builder(&args.app)
        .event_loop(args.event_loop)
        .start()?;
    // No lifespan: the bench apps need none, and only `Server` runs an app's lifecycle.
    let service = python.service();
    run(&service, &args, args.warmup).await;
    let started = Instant::now();
    let received = run(&service, &args, args.requests).await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "BRIDGE_JSON {{\"requests\": {}, \"seconds\": {seconds:.6}, \"bytes\": {received}}}",
        args.requests
    );
    // The loop thread ends with the process.
    Ok(())
}
