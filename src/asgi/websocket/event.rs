//! What crosses between the websocket's socket and the app: events for `receive()`, and
//! the close frames both sides send.

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use yawc::Frame;
use yawc::close::CloseCode;

use crate::asgi::parking::IntoMessage;

/// The close code the app sees when the connection ends without a close frame.
pub(super) const ABNORMAL_CLOSURE: u16 = 1006;

/// What the app's `receive()` gets.
pub(super) enum Event {
    Connect,
    Text(String),
    Binary(Bytes),
    Disconnect { code: u16, reason: String },
}

impl Event {
    /// The connection ended without a close frame.
    pub(super) fn abnormal_closure() -> Event {
        Event::Disconnect {
            code: ABNORMAL_CLOSURE,
            reason: String::new(),
        }
    }
}

impl IntoMessage for Event {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let message = PyDict::new(py);
        match self {
            Event::Connect => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?
            }
            Event::Text(text) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "text"), text)?;
            }
            Event::Binary(bytes) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "bytes"), PyBytes::new(py, &bytes))?;
            }
            Event::Disconnect { code, reason } => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
                message.set_item(intern!(py, "code"), code)?;
                message.set_item(intern!(py, "reason"), reason)?;
            }
        }
        Ok(message.into_any().unbind())
    }
}

/// A close frame with `code` and `reason`.
pub(super) fn close_frame(code: u16, reason: String) -> Frame {
    Frame::close(CloseCode::from(code), reason)
}
