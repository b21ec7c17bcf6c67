//! The exceptions `send()` raises when the app breaks the ASGI protocol: one Python type per
//! kind of mistake, the same in every bridge, so an app (or its tests) can rely on them:
//!
//! - `RuntimeError`: a message that is not allowed now (an unknown type, the wrong order, a
//!   message after the end), as uvicorn raises;
//! - `TypeError`: a field of the wrong Python type (a body or header that is not `bytes`);
//! - `ValueError`: a bad value (a missing required key, an invalid status, header value or
//!   close code).

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::{PyErr, PyResult};

/// A message the protocol does not allow at this point.
pub(super) fn not_allowed(message: impl Into<String>) -> PyErr {
    PyRuntimeError::new_err(message.into())
}

/// A message of type `message_type` sent when `problem` forbids it.
fn unexpected(message_type: &str, problem: &str) -> PyErr {
    not_allowed(format!(
        "Unexpected ASGI message '{message_type}': {problem}."
    ))
}

/// A field whose Python type is not the one the spec requires.
pub(super) fn wrong_type(message: impl Into<String>) -> PyErr {
    PyTypeError::new_err(message.into())
}

/// A field that is missing, or whose value is not allowed.
pub(super) fn bad_value(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// A bridge's state machine: each state knows why a message that does not fit it is refused.
pub(super) trait State: Sized {
    /// Completes "Unexpected ASGI message 'X': …", e.g. "the response is complete".
    fn problem(&self) -> &'static str;
}

/// Refuses a message of type `message_type` that does not fit `state`.
pub(super) fn refusal(state: &impl State, message_type: &str) -> PyErr {
    unexpected(message_type, state.problem())
}

/// Puts `state` back into `slot` (whence it was taken) and refuses `message_type`.
pub(super) fn refuse<S: State, T>(slot: &mut S, state: S, message_type: &str) -> PyResult<T> {
    let refusal = refusal(&state, message_type);
    *slot = state;
    Err(refusal)
}
