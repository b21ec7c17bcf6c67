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
//! Where a request goes: the server accepts it, the router picks a Rust handler or
//! [`AsgiService`], which hands it to the Python loop thread; `docs/architecture.md` follows
//! a request file by file.

#![warn(missing_docs, unreachable_pub)]

mod app;
mod asgi;
#[cfg(feature = "cli")]
pub mod cli;
mod connection_info;
mod defaults;
mod error;
pub mod layers;
pub mod metrics;
pub mod migration;
mod python;
mod server;
mod shutdown;
mod signal;
pub mod telemetry;

pub use app::{PythonApp, PythonAppBuilder};
pub use asgi::{AsgiService, LifespanMode, ResponseBody};
pub use error::{Error, ErrorKind};
pub use python::{Interface, LoopKind, RuntimeMode};
pub use server::{
    AccessLogFormat, AccessLogFormatError, Bind, ClientCertificates, HttpVersions, KeyPassword,
    Server, ServerHandle, ServerOptions, TlsOptions,
};

/// The exception class `send()` raises once the client has gone:
/// `rust_asgi_server.ClientDisconnected`, a subclass of `OSError` (ASGI spec 2.4). An
/// extension module exports it so that apps can catch it by name.
pub fn client_disconnected_class(py: pyo3::Python<'_>) -> pyo3::Bound<'_, pyo3::types::PyType> {
    use pyo3::PyTypeInfo;
    asgi::ClientDisconnected::type_object(py)
}

/// `docs/migration.md`, compiled as doctests so the guide's Rust code keeps up with the API;
/// only in doctest builds, so it adds nothing to the crate.
#[cfg(doctest)]
#[doc = include_str!("../docs/migration.md")]
pub struct MigrationGuide;

/// The error type of bodies and services crossing this crate, as in tower and hyper.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
