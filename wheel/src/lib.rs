//! `rust_asgi_server._engine`: the extension module of the wheel. Everything here is glue;
//! the serving code and the command line are the `rust-asgi-server` crate's (`cli::run`,
//! `cli::embed`), so `pip install` gives the same engine as `cargo build`.

use std::ffi::OsString;
use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rust_asgi_server::ServerHandle;
use rust_asgi_server::cli::{self, EmbedError, WorkerCommand};

#[global_allocator]
static ALLOCATOR: cli::Allocator = cli::Allocator;

/// Runs the command line `argv` (program name first) as the binary does and returns its
/// exit code. `app` is an app object served instead of an `APP` argument. Workers of
/// `--workers`/`--reload` are started as `python -m rust_asgi_server`, with this
/// interpreter.
#[pyfunction]
#[pyo3(signature = (argv, app=None))]
fn main(py: Python<'_>, argv: Vec<OsString>, app: Option<Py<PyAny>>) -> PyResult<u8> {
    let python: OsString = py.import("sys")?.getattr("executable")?.extract()?;
    let workers = WorkerCommand::new(python, ["-m".into(), "rust_asgi_server".into()]);
    // The loop thread needs the GIL this thread holds.
    Ok(py.detach(move || cli::run(argv, &workers, app)))
}

/// A server awaited on the caller's running asyncio loop: the app runs on that loop, the
/// HTTP work on this object's Tokio threads. No signal handler is installed.
#[pyclass(module = "rust_asgi_server._engine")]
struct EmbeddedServer {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Mutex<Option<ServerHandle>>,
}

#[pymethods]
impl EmbeddedServer {
    #[new]
    fn new() -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("rust-asgi-server")
            .build()
            .map_err(|err| PyRuntimeError::new_err(format!("cannot start Tokio: {err}")))?;
        Ok(EmbeddedServer {
            runtime: Some(runtime),
            handle: Mutex::new(None),
        })
    }

    /// Imports (or takes) the app on the running loop of this thread and starts serving
    /// the command line `argv`. `started` gets the TCP addresses as `(host, port)` once the
    /// server listens and lifespan startup is done; `done` gets
    /// `None` when it has stopped, or the error message it failed with; both through
    /// `resolve(future, error)`, called on the loop with `call_soon_threadsafe`.
    #[pyo3(signature = (argv, app, started, done, resolve))]
    fn start(
        &self,
        py: Python<'_>,
        argv: Vec<OsString>,
        app: Option<Py<PyAny>>,
        started: Py<PyAny>,
        done: Py<PyAny>,
        resolve: Py<PyAny>,
    ) -> PyResult<()> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the server has been closed"))?;
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if handle.is_some() {
            return Err(PyRuntimeError::new_err("the server was started already"));
        }
        let call_soon = py
            .import("asyncio")?
            .call_method0("get_running_loop")?
            .getattr("call_soon_threadsafe")?
            .unbind();
        let embedded = {
            let _runtime = runtime.enter();
            cli::embed(argv, app).map_err(|err| match err {
                EmbedError::Usage(message) => PyValueError::new_err(message),
                EmbedError::Serve(err) => PyRuntimeError::new_err(err.to_string()),
            })?
        };
        *handle = Some(embedded.handle.clone());
        let ready = embedded.handle.clone();
        let (call_soon_ready, resolve_ready) = (call_soon.clone_ref(py), resolve.clone_ref(py));
        runtime.spawn(async move {
            let addresses: Vec<(String, u16)> = ready
                .ready()
                .await
                .into_iter()
                .map(|address| (address.ip().to_string(), address.port()))
                .collect();
            Python::attach(|py| {
                let _ = call_soon_ready.call1(py, (resolve_ready, started, addresses));
            });
        });
        let serving = embedded.serving;
        runtime.spawn(async move {
            let outcome = serving.await;
            Python::attach(|py| {
                let error = outcome.err().map(|err| err.to_string());
                let _ = call_soon.call1(py, (resolve, done, error));
            });
        });
        Ok(())
    }

    /// Starts a graceful shutdown, as SIGTERM does the binary.
    fn shutdown(&self) {
        if let Some(handle) = &*self.handle.lock().unwrap_or_else(|p| p.into_inner()) {
            handle.shutdown();
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(main, module)?)?;
    module.add_class::<EmbeddedServer>()?;
    module.add(
        "ClientDisconnected",
        rust_asgi_server::client_disconnected_class(module.py()),
    )?;
    Ok(())
}
