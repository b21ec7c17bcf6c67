//! Importing the user's app: `module:attr`, `--factory`, ASGI 2/3 detection and the loop
//! implementation. The logic is Python (src/python/support.py) because it only runs once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyString};

use super::driver::Driver;
use crate::error::{Error, ErrorKind};

/// Which ASGI calling convention the app uses; `Auto` detects it as uvicorn does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Interface {
    /// An ASGI 2 double callable (a class taking the scope) is detected and adapted.
    #[default]
    Auto,
    /// `app(scope, receive, send)`.
    Asgi3,
    /// `app(scope)` returning `instance(receive, send)`.
    Asgi2,
}

/// Which asyncio loop runs the app; `Auto` prefers uvloop when it is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LoopKind {
    /// uvloop when it is installed, else asyncio's own loop.
    #[default]
    Auto,
    /// asyncio's own loop.
    Asyncio,
    /// uvloop; start-up fails when it is not installed.
    Uvloop,
}

/// Where the app comes from: imported by name, or an object of a running interpreter.
#[derive(Debug)]
pub(crate) enum AppSource {
    /// `module:attribute`, attributes may be dotted.
    Import(String),
    /// The app itself (or its factory), given by Python code of this process.
    Object(Py<PyAny>),
}

/// What to import and how to call it.
#[derive(Debug)]
pub(crate) struct AppSpec {
    pub source: AppSource,
    /// Call the attribute with no arguments to get the app.
    pub factory: bool,
    pub interface: Interface,
    /// Put first on `sys.path` before importing (uvicorn's `--app-dir`).
    pub app_dir: std::path::PathBuf,
}

impl AppSpec {
    pub(crate) fn new(source: AppSource) -> Self {
        AppSpec {
            source,
            factory: false,
            interface: Interface::Auto,
            app_dir: std::path::PathBuf::from("."),
        }
    }
}

/// The support module, compiled once per interpreter.
pub(crate) fn support(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static SUPPORT: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    SUPPORT
        .get_or_try_init(py, || {
            PyModule::from_code(
                py,
                c_str(include_str!("support.py")).as_c_str(),
                c"rust_asgi_server/support.py",
                c"_rust_asgi_server_support",
            )
            .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

fn c_str(source: &str) -> std::ffi::CString {
    std::ffi::CString::new(source).expect("support.py has no NUL byte")
}

/// A new asyncio loop of `kind`, set as the thread's current loop; with a `driver`, an
/// asyncio loop whose selector runs the server's connections (`RuntimeMode::Single`).
pub(crate) fn new_event_loop<'py>(
    py: Python<'py>,
    kind: LoopKind,
    driver: Option<&Bound<'py, Driver>>,
) -> Result<Bound<'py, PyAny>, Error> {
    let name = match (kind, driver) {
        (_, Some(_)) => "single",
        (LoopKind::Auto, None) => "auto",
        (LoopKind::Asyncio, None) => "asyncio",
        (LoopKind::Uvloop, None) => "uvloop",
    };
    let make = || -> PyResult<Bound<'py, PyAny>> {
        let event_loop = support(py)?.call_method1("new_event_loop", (name, driver))?;
        if driver.is_some() {
            super::call_soon::install(&event_loop)?;
        }
        py.import("asyncio")?
            .call_method1("set_event_loop", (&event_loop,))?;
        Ok(event_loop)
    };
    make().map_err(|err| Error::new(ErrorKind::Interpreter, load_error_message(py, &err)))
}

pub(crate) fn load_app(py: Python<'_>, spec: &AppSpec) -> Result<Py<PyAny>, Error> {
    let interface = match spec.interface {
        Interface::Auto => "auto",
        Interface::Asgi3 => "asgi3",
        Interface::Asgi2 => "asgi2",
    };
    let app = match &spec.source {
        AppSource::Import(import_string) => PyString::new(py, import_string).into_any(),
        AppSource::Object(app) => app.bind(py).clone(),
    };
    support(py)
        .and_then(|support| {
            support.call_method1(
                "load_app",
                (
                    app,
                    spec.factory,
                    interface,
                    std::path::absolute(&spec.app_dir)
                        .unwrap_or_else(|_| spec.app_dir.clone())
                        .to_string_lossy()
                        .into_owned(),
                ),
            )
        })
        .map(Bound::unbind)
        .map_err(|err| Error::new(ErrorKind::Import, load_error_message(py, &err)))
}

/// Our own `AppLoadError`s carry a complete sentence; anything else raised while importing
/// is the user's bug and deserves its traceback.
fn load_error_message(py: Python<'_>, err: &PyErr) -> String {
    let is_ours = support(py)
        .and_then(|support| support.getattr("AppLoadError"))
        .map(|class| err.get_type(py).is(&class))
        .unwrap_or(false);
    if is_ours {
        err.value(py).to_string()
    } else {
        format!(
            "Error while importing the app:\n{}",
            super::format_traceback(py, err)
        )
    }
}
