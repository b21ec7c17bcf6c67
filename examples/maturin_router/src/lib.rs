//! `maturin_router._router`: a library user's own pyo3 extension, as the users of the
//! project rust-asgi-server replaces had. Python calls `serve(app, bind)` with its ASGI app
//! object; Rust answers `/rust` itself and hands everything else to that app.

use axum::Router;
use axum::routing::get;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rust_asgi_server::{PythonApp, Server};

/// Serves `app` behind a router with one Rust route until SIGINT/SIGTERM. The engine logs
/// to stderr (`listening on http://HOST:PORT` once it serves; `RUST_LOG` filters).
#[pyfunction]
fn serve(py: Python<'_>, app: Py<PyAny>, bind: String) -> PyResult<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| PyRuntimeError::new_err(err.to_string()))?;
    // The app runs on a loop thread of the engine, which needs the GIL this thread holds.
    py.detach(|| {
        runtime.block_on(async move {
            // The object the caller passed, in the interpreter that is already running.
            let python = PythonApp::builder_for(app).start()?;
            let router = Router::new()
                .route("/rust", get(|| async { "hello from Rust" }))
                .fallback_service(python.service());
            Server::new(router).bind(bind).serve(python).await
        })
    })
    .map_err(|err| PyRuntimeError::new_err(err.to_string()))
}

#[pymodule]
fn _router(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(serve, module)?)?;
    Ok(())
}
