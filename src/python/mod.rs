//! The embedded interpreter: start-up ([`interpreter`]), importing the app ([`loader`]) and
//! the loop thread that runs it ([`event_loop`]).

mod app_coroutine;
mod call_soon;
mod driver;
mod event_loop;
pub(crate) mod interpreter;
mod loader;
mod request_task;
mod watchdog;

use pyo3::prelude::*;

pub use driver::RuntimeMode;
pub(crate) use event_loop::{AppTask, EventLoop};
pub(crate) use loader::{AppSource, AppSpec};
pub use loader::{Interface, LoopKind};
pub(crate) use watchdog::{LoopWatch, watch as watch_loop};

/// The traceback of a Python exception as Python itself would print it.
pub(crate) fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    loader::support(py)
        .and_then(|support| support.call_method1("format_exception", (err.value(py),)))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}

/// Runs `wait` with the GIL released if this thread holds it: a caller inside Python (an
/// extension module, `rust_asgi_server.run`) must not block the loop thread's Python.
pub(crate) fn without_gil<T: Send>(wait: impl FnOnce() -> T + Send) -> T {
    // SAFETY: PyGILState_Check only reads this thread's state; it is 0 before the interpreter
    // is initialised.
    let holds_gil =
        unsafe { pyo3::ffi::Py_IsInitialized() != 0 && pyo3::ffi::PyGILState_Check() == 1 };
    match holds_gil {
        true => Python::attach(|py| py.detach(wait)),
        false => wait(),
    }
}
