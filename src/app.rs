//! [`PythonApp`]: the interpreter, its loop thread and the imported app, as one value.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::asgi::lifespan::{self, RunningLifespan};
use crate::asgi::{AsgiService, LifespanMode};
use crate::defaults;
use crate::error::{Error, ErrorKind};
use crate::python::{
    AppSource, AppSpec, EventLoop, Interface, LoopKind, LoopWatch, RuntimeMode, format_traceback,
    interpreter, without_gil,
};
use crate::shutdown::Shutdown;

/// A Python ASGI app running on its own loop thread.
pub struct PythonApp {
    event_loop: EventLoop,
    thread: Option<JoinHandle<()>>,
    root_path: String,
    lifespan: LifespanMode,
    ws_max_size: usize,
    ws_per_message_deflate: bool,
    /// The server's shutdown stages, which the app's websockets watch too.
    shutdown: Shutdown,
}

/// Options for [`PythonApp`]; every one has uvicorn's default.
pub struct PythonAppBuilder {
    spec: AppSpec,
    loop_kind: LoopKind,
    runtime_mode: RuntimeMode,
    root_path: String,
    lifespan: LifespanMode,
    ws_max_size: usize,
    ws_per_message_deflate: bool,
    rust_modules: Vec<(&'static str, ModuleInit)>,
    /// Serve on the asyncio loop running on the thread that calls `start`.
    on_running_loop: bool,
}

/// Fills a Rust module for Python, as a `#[pymodule]` function does.
type ModuleInit = fn(&Bound<'_, PyModule>) -> PyResult<()>;

impl PythonApp {
    /// Imports `module:attribute` with default options. Must be called inside a Tokio
    /// runtime: waits started by the app run on it.
    pub fn import(import_string: &str) -> Result<Self, Error> {
        Self::builder(import_string).start()
    }

    /// Options for importing `module:attribute`, each with uvicorn's default; finish with
    /// [`PythonAppBuilder::start`].
    pub fn builder(import_string: &str) -> PythonAppBuilder {
        PythonAppBuilder::new(AppSource::Import(import_string.to_owned()))
    }

    /// Options for serving `app`, an ASGI app object (or with
    /// [`PythonAppBuilder::factory`], its factory) of an interpreter that is already
    /// running: a pyo3 extension module gives the object its Python caller passed, as in
    /// `examples/maturin_router`. Finish with [`PythonAppBuilder::start`].
    pub fn builder_for(app: Py<PyAny>) -> PythonAppBuilder {
        PythonAppBuilder::new(AppSource::Object(app))
    }

    /// A Tower service forwarding requests to the app; clone it freely.
    pub fn service(&self) -> AsgiService {
        AsgiService::new(
            self.event_loop.clone(),
            self.root_path.clone(),
            self.ws_max_size,
            self.ws_per_message_deflate,
            self.shutdown.clone(),
        )
    }

    /// Runs code on the loop thread that reads the app itself (its OpenAPI document, its
    /// route table), also after the server has taken the [`PythonApp`].
    pub(crate) fn loop_calls(&self) -> LoopCalls {
        LoopCalls {
            event_loop: self.event_loop.clone(),
        }
    }

    /// What [`crate::Server`] drives its connections, and this app's websockets, with.
    pub(crate) fn shutdown_stages(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The runtime the server's connections run on: the caller's, or with
    /// [`RuntimeMode::Single`] the loop thread's own.
    pub(crate) fn connections_runtime(&self) -> &tokio::runtime::Handle {
        self.event_loop.runtime()
    }

    /// Starts the blocked-loop watchdog (`--loop-block-warn`) on the current runtime.
    pub(crate) fn watch_loop(&self, limit: std::time::Duration) -> LoopWatch {
        crate::python::watch_loop(self.event_loop.clone(), limit)
    }

    /// Runs lifespan startup; no request should reach the app before it returns.
    pub(crate) async fn startup(&self) -> Result<RunningLifespan, Error> {
        lifespan::startup(&self.event_loop, self.lifespan)
            .await
            .map_err(|message| {
                Error::new(
                    ErrorKind::LifespanStartup,
                    format!("Application startup failed:\n{message}"),
                )
            })
    }

    /// Waits up to `grace` for running requests to return, cancels what remains and waits
    /// `grace` again; true when none is left.
    pub(crate) async fn finish_apps(&self, grace: std::time::Duration) -> bool {
        self.event_loop.finish_apps(grace).await
    }

    /// Resolves if the loop thread ended without [`PythonApp::stop`] (the app stopped the
    /// loop, or a bug): requests can no longer be served.
    pub(crate) async fn loop_died(&self) {
        self.event_loop.died().await;
    }

    /// Stops the loop thread after lifespan shutdown.
    pub(crate) fn stop(mut self) {
        self.event_loop.stop();
        if let Some(thread) = self.thread.take() {
            without_gil(move || {
                let _ = thread.join();
            });
        }
    }
}

/// A handle for running closures with the app object on its loop thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct LoopCalls {
    event_loop: EventLoop,
}

impl LoopCalls {
    /// Runs `call` with the app object on the loop thread, between two asyncio callbacks, and
    /// returns its result. A Python exception becomes an error of `kind`: `what` failed,
    /// then the traceback.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        kind: ErrorKind,
        what: &'static str,
        call: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<T> + Send + 'static,
    ) -> Result<T, Error> {
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let event_loop = self.event_loop.clone();
        self.event_loop.submit(Box::new(move |py| {
            let result =
                call(event_loop.objects().app.bind(py)).map_err(|err| format_traceback(py, &err));
            let _ = result_tx.send(result);
        }));
        match result_rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(traceback)) => Err(Error::new(kind, format!("{what}:\n{traceback}"))),
            // The loop thread dropped the call: it has stopped.
            Err(_) => Err(Error::new(
                ErrorKind::LoopDied,
                format!("{what}: the Python event loop has stopped"),
            )),
        }
    }
}

impl PythonAppBuilder {
    fn new(source: AppSource) -> Self {
        PythonAppBuilder {
            spec: AppSpec::new(source),
            loop_kind: LoopKind::Auto,
            runtime_mode: RuntimeMode::default(),
            root_path: String::new(),
            lifespan: LifespanMode::Auto,
            ws_max_size: defaults::WS_MAX_SIZE,
            ws_per_message_deflate: defaults::WS_PER_MESSAGE_DEFLATE,
            rust_modules: Vec::new(),
            on_running_loop: false,
        }
    }

    /// Call the attribute to obtain the app (uvicorn's `--factory`).
    pub fn factory(mut self, factory: bool) -> Self {
        self.spec.factory = factory;
        self
    }

    /// The app's ASGI calling convention (default: detected).
    pub fn interface(mut self, interface: Interface) -> Self {
        self.spec.interface = interface;
        self
    }

    /// Directory put first on `sys.path` (default: the current directory).
    pub fn app_dir(mut self, app_dir: impl Into<PathBuf>) -> Self {
        self.spec.app_dir = app_dir.into();
        self
    }

    /// The asyncio loop the app runs on (default: uvloop when installed).
    pub fn event_loop(mut self, loop_kind: LoopKind) -> Self {
        self.loop_kind = loop_kind;
        self
    }

    /// The ASGI `root_path`: the prefix a proxy in front of the server strips.
    pub fn root_path(mut self, root_path: impl Into<String>) -> Self {
        self.root_path = root_path.into().trim_end_matches('/').to_string();
        self
    }

    /// Whether the lifespan protocol runs (default: [`LifespanMode::Auto`]).
    pub fn lifespan(mut self, lifespan: LifespanMode) -> Self {
        self.lifespan = lifespan;
        self
    }

    /// Largest websocket message accepted from a client, in bytes.
    pub fn ws_max_size(mut self, bytes: usize) -> Self {
        self.ws_max_size = bytes;
        self
    }

    /// Whether websockets are compressed (permessage-deflate, RFC 7692) with clients that
    /// offer it (default: on, as uvicorn does).
    pub fn ws_per_message_deflate(mut self, enabled: bool) -> Self {
        self.ws_per_message_deflate = enabled;
        self
    }

    /// Makes a Rust module importable by the app as `name` (`import name`), before the app
    /// is imported: `init` adds its functions and classes, as a `#[pymodule]` function does.
    /// Python code can then call the Rust implementation of what it is moving.
    pub fn rust_module(
        mut self,
        name: &'static str,
        init: fn(&Bound<'_, PyModule>) -> PyResult<()>,
    ) -> Self {
        self.rust_modules.push((name, init));
        self
    }

    /// Where the server's sockets run relative to Python (default: [`RuntimeMode::Split`]).
    /// With [`RuntimeMode::Single`] they share the loop thread: no thread hand-off per
    /// request, but Rust routes wait while Python runs, and the loop is asyncio's own.
    /// Moot with [`PythonAppBuilder::on_running_loop`].
    pub fn runtime_mode(mut self, mode: RuntimeMode) -> Self {
        self.runtime_mode = mode;
        self
    }

    /// Serves the app on the asyncio loop running on the thread that calls
    /// [`PythonAppBuilder::start`] (the caller's thread, inside a coroutine) instead of on a
    /// loop thread of its own; [`PythonAppBuilder::event_loop`] is then moot. The caller
    /// keeps that loop running until the server has stopped; requests and lifespan run on
    /// it, next to the caller's own tasks. Needs an interpreter that is already running.
    pub fn on_running_loop(mut self) -> Self {
        self.on_running_loop = true;
        self
    }

    /// Starts the interpreter (once per process; an interpreter already running is used as
    /// it is), the loop thread, and imports the app. Called from Python (an extension
    /// module), it releases the GIL while the loop thread imports the app.
    pub fn start(self) -> Result<PythonApp, Error> {
        static INTERPRETER: OnceLock<Result<(), String>> = OnceLock::new();
        INTERPRETER
            .get_or_init(interpreter::initialize)
            .clone()
            .map_err(|message| Error::new(ErrorKind::Interpreter, message))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Interpreter,
                "PythonApp must be started from inside a Tokio runtime",
            )
        })?;
        for (name, init) in &self.rust_modules {
            register_module(name, *init)?;
        }
        let (event_loop, thread) = match self.on_running_loop {
            true => (
                Python::attach(|py| EventLoop::attach(py, self.spec, runtime))?,
                None,
            ),
            false => {
                let (event_loop, thread) =
                    EventLoop::start(self.spec, self.loop_kind, self.runtime_mode, runtime)?;
                (event_loop, Some(thread))
            }
        };
        Ok(PythonApp {
            event_loop,
            thread,
            root_path: self.root_path,
            lifespan: self.lifespan,
            ws_max_size: self.ws_max_size,
            ws_per_message_deflate: self.ws_per_message_deflate,
            shutdown: Shutdown::default(),
        })
    }
}

/// Puts a new module `name`, filled by `init`, in `sys.modules`, where `import` finds it.
fn register_module(name: &str, init: ModuleInit) -> Result<(), Error> {
    Python::attach(|py| {
        let register = || -> PyResult<()> {
            let module = PyModule::new(py, name)?;
            init(&module)?;
            py.import("sys")?.getattr("modules")?.set_item(name, module)
        };
        register().map_err(|err| {
            let traceback = format_traceback(py, &err);
            Error::new(
                ErrorKind::Import,
                format!("cannot register the Rust module {name}:\n{traceback}"),
            )
        })
    })
}
