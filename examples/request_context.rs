//! Request context both ways: a Rust middleware authenticates the caller and tags the
//! request with an id; the Python app, still serving the routes, reads both from
//! `request.state` without authenticating again, and leaves an audit record in
//! `request.state.audit`, which the Rust middleware gets back with the response (and turns
//! into an `x-audit` header here; a real service would write its audit log).
//!
//! `cargo run --release --example request_context -- [--bind 127.0.0.1:3000] [--app pyapp.migration_apps:reads_context]`
//!
//! `curl -i -H 'authorization: Bearer token-ada' localhost:3000/me` → the user the Rust
//! middleware found, as pyapp/migration_apps.py sees it, and `x-audit: profile.read by 1`;
//! without a known token, 401 from Rust.

mod common;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use pyo3::{FromPyObject, IntoPyObject};
use rust_asgi_server::{PythonApp, Server};

/// A Python app reading what a Rust middleware put in the request's extensions.
#[derive(Parser)]
struct Cli {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The Python ASGI app, as `module:attribute`; it reads `request.state.user`.
    #[arg(long, default_value = "pyapp.migration_apps:reads_context")]
    app: String,
}

/// The caller, as the Rust middleware found them; a dict in Python.
#[derive(Clone, IntoPyObject)]
struct CurrentUser {
    id: u64,
    name: String,
    roles: Vec<String>,
}

/// The id the Rust side gave the request (for its logs); a string in Python.
#[derive(Clone, IntoPyObject)]
struct RequestId(String);

/// What the Python handler did, from the dict it leaves in `request.state.audit`.
#[derive(Clone, FromPyObject)]
#[pyo3(from_item_all)]
struct Audit {
    action: String,
    user_id: u64,
}

#[tokio::main]
async fn main() -> Result<(), rust_asgi_server::Error> {
    let cli = Cli::parse();
    common::init_logging();
    let python = PythonApp::builder(&cli.app).start()?;
    let app = python
        .service()
        .scope_state::<CurrentUser>("user")
        .scope_state::<RequestId>("request_id")
        .response_state::<Audit>("audit");
    let router = Router::new()
        .fallback_service(app)
        .layer(middleware::from_fn(authenticate));
    Server::new(router).bind(cli.bind).serve(python).await
}

/// Finds the caller from a bearer token (a fixed table here; a session store or a JWT check
/// in a real service) and numbers the request.
async fn authenticate(mut request: Request, next: Next) -> Response {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let token = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let user = match token {
        Some("token-ada") => CurrentUser {
            id: 1,
            name: "ada".into(),
            roles: vec!["admin".into(), "billing".into()],
        },
        Some("token-bob") => CurrentUser {
            id: 2,
            name: "bob".into(),
            roles: vec![],
        },
        _ => return (StatusCode::UNAUTHORIZED, "unknown or missing token\n").into_response(),
    };
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    request.extensions_mut().insert(user);
    request
        .extensions_mut()
        .insert(RequestId(format!("req-{id}")));
    let mut response = next.run(request).await;
    let audit = response.extensions().get::<Audit>().cloned();
    if let Some(audit) = audit
        && let Ok(value) = format!("{} by {}", audit.action, audit.user_id).parse()
    {
        response.headers_mut().insert("x-audit", value);
    }
    response
}
