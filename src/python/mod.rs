//! The embedded interpreter: start-up ([`interpreter`]), importing the app ([`loader`]) and
//! the loop thread that runs it ([`event_loop`]).

mod event_loop;
pub(crate) mod interpreter;
mod loader;
mod watchdog;

use pyo3::prelude::*;

pub(crate) use event_loop::{AppTask, EventLoop};
pub(crate) use loader::AppSpec;
pub use loader::{Interface, LoopKind};
pub(crate) use watchdog::{LoopWatch, watch as watch_loop};

/// The traceback of a Python exception as Python itself would print it.
pub(crate) fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    loader::support(py)
        .and_then(|support| support.call_method1("format_exception", (err.value(py),)))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}
