//! Serve a Python ASGI application from Rust.
//!
//! As a binary, `rust-asgi-server` is a drop-in replacement for uvicorn. As a library, it
//! lets a team move a Starlette/FastAPI service to Axum one route at a time: the Python app
//! becomes a [`tower::Service`] that answers whatever Rust does not.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use rust_asgi_server::{PythonApp, Server};
//!
//! # async fn run() -> Result<(), rust_asgi_server::Error> {
//! let python = PythonApp::import("main:app")?;
//! let router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .fallback_service(python.service());
//! Server::new(router).bind("0.0.0.0:3000").serve(python).await
//! # }
//! ```
//!
//! Where a request goes: [`server`] accepts it, the router picks a Rust handler or
//! [`AsgiService`] (in [`asgi::http`]), which hands it to the loop thread in [`python`].

pub mod access_log;
pub mod asgi;
pub mod cli;
pub mod connection;
pub mod default_headers;
mod guarded_body;
mod keep_alive;
pub mod limits;
pub mod listener;
pub mod proxy_headers;
pub mod python;
pub mod reload;
pub mod server;
pub mod tls;
pub mod workers;

mod app;

pub use app::{PythonApp, PythonAppBuilder};
pub use asgi::{AsgiService, ConnectionInfo, LifespanMode, ServerAddress};
pub use connection::HttpVersions;
pub use python::{Interface, LoopKind};
pub use server::{Server, ServerHandle, ServerOptions};
pub use tls::{ClientCertificates, KeyPassword, TlsOptions};

/// The Tower layers the binary puts around its router, for a `main.rs` of your own to put
/// around yours (`tower::ServiceBuilder::new().layer(…).service(router)`), so Rust and Python
/// routes get the same treatment. Proxy headers are [`Server`]'s own business
/// ([`ServerOptions::proxy_headers`]); their layer is for routers served without it.
pub mod layers {
    pub use crate::default_headers::DefaultHeadersLayer;
    pub use crate::limits::{BodySizeLimitLayer, InFlightLimitLayer};
    pub use crate::proxy_headers::{ProxyHeadersLayer, TrustedProxies};
}

/// Why the server could not start or stopped badly; the message is meant for the user.
pub struct Error(String);

/// Shows the message alone, so `fn main() -> Result<(), Error>` prints something readable.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
