//! The embedded interpreter: start-up, the loop thread and the app it serves.

pub mod app;
pub mod event_loop;
pub mod interpreter;

use pyo3::prelude::*;

pub use app::{AppSpec, Interface, LoopKind};
pub use event_loop::{EventLoop, Job};

/// The traceback of a Python exception as Python itself would print it.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    app::support(py)
        .and_then(|support| support.call_method1("format_exception", (err.value(py),)))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}
