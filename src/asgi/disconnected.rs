//! `ClientDisconnected`, what `send()` raises in every bridge once the client has gone: the
//! ASGI spec (2.4) asks for "a server-specific subclass of `OSError`", and uvicorn names its
//! own the same. Starlette turns an `OSError` from `send()` into its own disconnect handling.
//! An app that lets it propagate is not logged as failing: a client leaving is no app error.
//!
//! The class is `rust_asgi_server.ClientDisconnected`; the wheel's Python package exports it
//! ([`crate::client_disconnected_class`]).

use pyo3::PyErr;

/// pyo3's macro declares the class `pub`; it is not part of the crate's API.
#[allow(unreachable_pub)]
mod class {
    pyo3::create_exception!(
        rust_asgi_server,
        ClientDisconnected,
        pyo3::exceptions::PyOSError,
        "The client has gone; the ASGI message was not sent."
    );
}

pub(crate) use class::ClientDisconnected;

/// The error for a message that could not go out because the client has gone.
pub(super) fn client_disconnected(message_type: &str) -> PyErr {
    ClientDisconnected::new_err(format!(
        "the client has gone; '{message_type}' was not sent"
    ))
}
