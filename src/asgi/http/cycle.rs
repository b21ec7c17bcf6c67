//! The loop-thread half of an HTTP request: the `receive`/`send` pair the app gets.
//!
//! `receive` answers at once when it can; otherwise it parks on an asyncio future that a
//! Tokio task resolves (through the job queue) when data or a disconnect arrives. `send`
//! moves the [`AppResponse`] on; whatever it must hand to Tokio crosses as Rust-owned data.

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::body_failure::BodyFailure;
use super::response::{AppResponse, Ending, Step};
use crate::asgi::awaitable::ready;
use crate::asgi::body::{IncomingBody, RequestBody, ResponseBody, StreamItem};
use crate::asgi::codec::message_type;
use crate::asgi::context::ResponseState;
use crate::asgi::cycle::{self, Asked, Cycle, Handler};
use crate::asgi::disconnected::client_disconnected;
use crate::asgi::parking::{Closed, Inbox, IntoMessage, Next, Outbox};
use crate::asgi::scope::{self, RequestHead};
use crate::python::{AppTask, EventLoop};
use crate::signal::Signal;

/// Runs on the loop thread: builds the scope and starts the app. `asked.gone` is the
/// request's disconnect: it fires when hyper drops the request or its response body.
/// `body_failure` records a failed read of the request body.
pub(super) fn start(
    py: Python<'_>,
    head: RequestHead,
    body: RequestBody,
    body_failure: BodyFailure,
    root_path: &str,
    carried: Carried,
    asked: Asked<Response<ResponseBody>>,
) {
    let Carried {
        state: response_state,
        wants_route,
    } = carried;
    let Asked {
        event_loop,
        answer,
        gone: disconnect,
    } = asked;
    let head_request = head.method == http::Method::HEAD;
    let cycle = HttpCycle {
        inbox: Inbox::new(body),
        outbox: Outbox::new(),
        response: AppResponse::new(answer, head_request, disconnect.clone()),
        disconnect,
        body_failure,
        event_loop,
    };
    let event_loop = cycle.event_loop.clone();
    let mut scope_state = None;
    let mut routed_scope = None;
    let started = cycle::start(py, &event_loop, cycle, AppTask::Request, |state| {
        let scope = scope::http_scope(py, &head, root_path, state, http_extensions(py)?)?;
        if !response_state.is_empty() {
            scope_state = scope.get_item(intern!(py, "state"))?;
        }
        routed_scope = wants_route.then(|| scope.clone().unbind());
        Ok(scope)
    });
    let Some(cycle) = started else { return };
    // The app task is created but has not run yet: all is in place before it starts.
    let mut cycle = cycle.borrow_mut();
    if let Some(state) = scope_state
        && let Ok(state) = state.cast_into::<PyDict>()
    {
        cycle.response.carry_state(response_state, state.unbind());
    }
    if let Some(scope) = routed_scope {
        cycle.response.tell_route(scope);
    }
}

/// What of the request goes into the response's extensions.
pub(super) struct Carried {
    /// The keys of the scope's `state` to carry.
    pub(super) state: ResponseState,
    /// Whether the metrics want the app's route on the response, as a
    /// [`PythonRoute`](crate::metrics::PythonRoute).
    pub(super) wants_route: bool,
}

/// The extensions every HTTP scope advertises; copied per request so apps may mutate theirs.
fn http_extensions(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    static EXTENSIONS: pyo3::sync::PyOnceLock<Py<PyDict>> = pyo3::sync::PyOnceLock::new();
    EXTENSIONS
        .get_or_try_init(py, || {
            let extensions = PyDict::new(py);
            extensions.set_item("http.response.trailers", PyDict::new(py))?;
            extensions.set_item("http.response.pathsend", PyDict::new(py))?;
            Ok::<_, PyErr>(extensions.unbind())
        })
        .map(|extensions| extensions.bind(py))
}

/// One request's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub(super) struct HttpCycle {
    event_loop: EventLoop,
    inbox: Inbox<RequestBody, Incoming>,
    outbox: Outbox<StreamItem>,
    disconnect: Signal,
    /// Fired by the read that found the request body broken or stalled: the client's
    /// fault, not the app's.
    body_failure: BodyFailure,
    response: AppResponse,
}

/// What a `receive()` call produces.
enum Incoming {
    Body { chunk: Bytes, more: bool },
    Disconnect,
}

impl Cycle for HttpCycle {
    const PROTOCOL: &'static str = "an HTTP";
    const MESSAGES: &'static [(&'static str, Handler<Self>)] = &[
        ("http.response.start", |cycle, message| {
            cycle.response.start(message)
        }),
        ("http.response.body", |cycle, message| {
            cycle.response.body(message)
        }),
        ("http.response.trailers", |cycle, message| {
            cycle.response.trailers(message)
        }),
        ("http.response.pathsend", |cycle, message| {
            cycle.response.pathsend(message, &cycle.event_loop)
        }),
    ];
    type Sent = Step;

    fn event_loop(&self) -> &EventLoop {
        &self.event_loop
    }

    fn app_finished(&mut self, _py: Python<'_>, error: Option<PyErr>) {
        let ending = if self.disconnect.is_cancelled() || self.body_failure.has_failed() {
            Ending::ClientGone
        } else if error.is_some() {
            Ending::Raised
        } else {
            Ending::Returned
        };
        self.response.finish(ending, &self.event_loop);
    }
}

#[pymethods]
impl HttpCycle {
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Inbox::receive(slf, HttpCycle::inbox, |cycle, source| match source {
            // The spec: `http.disconnect` "if receive is called after a response has been
            // sent", whatever of the body is left.
            _ if cycle.response.is_complete() => Next::Ready(None, Incoming::Disconnect),
            Some(RequestBody::Buffered(chunk)) => {
                Next::Ready(None, Incoming::Body { chunk, more: false })
            }
            Some(RequestBody::Partial(chunk, rest)) => Next::Ready(
                Some(RequestBody::Streaming(rest)),
                Incoming::Body { chunk, more: true },
            ),
            Some(RequestBody::Streaming(body)) => Next::Read(read_next(Some(body), cycle.ends())),
            None if cycle.disconnect.is_cancelled() => Next::Ready(None, Incoming::Disconnect),
            None => Next::Read(read_next(None, cycle.ends())),
        })
    }

    fn send(slf: &Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let step = {
            let mut cycle = slf.borrow_mut();
            // Fired while the response is open, the token means hyper dropped the exchange.
            if cycle.disconnect.is_cancelled() && !cycle.response.is_complete() {
                return Err(client_disconnected(message_type(message)?.to_str()?));
            }
            cycle::dispatch(&mut *cycle, message)?
        };
        match step {
            Step::Nothing => ready(py, None),
            Step::HandBack(answer, response) => {
                slf.borrow().event_loop.hand_back(py, move || {
                    let _ = answer.send(response);
                });
                ready(py, None)
            }
            Step::Stream(stream, item) => {
                match Outbox::push(slf, HttpCycle::outbox, &stream, item)? {
                    Ok(awaitable) => Ok(awaitable),
                    Err(Closed) => Err(client_disconnected("http.response.body")),
                }
            }
        }
    }
}

impl HttpCycle {
    fn inbox(&mut self) -> &mut Inbox<RequestBody, Incoming> {
        &mut self.inbox
    }

    fn outbox(&mut self) -> &mut Outbox<StreamItem> {
        &mut self.outbox
    }

    /// What a read of the request body watches and fires.
    fn ends(&self) -> Ends {
        Ends {
            disconnect: self.disconnect.clone(),
            body_failure: self.body_failure.clone(),
        }
    }
}

/// How a request body read can end besides a chunk: the client left, or the body broke.
struct Ends {
    disconnect: Signal,
    body_failure: BodyFailure,
}

/// Reads the next data frame of a request body, or notices the client leaving; once the
/// body has ended (`None`), waits for the client to leave.
async fn read_next(body: Option<IncomingBody>, ends: Ends) -> (Option<RequestBody>, Incoming) {
    let Some(mut body) = body else {
        ends.disconnect.cancelled().await;
        return (None, Incoming::Disconnect);
    };
    loop {
        let frame = tokio::select! {
            biased;
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            () = ends.disconnect.cancelled() => return (None, Incoming::Disconnect),
        };
        match frame {
            None => {
                let end = Incoming::Body {
                    chunk: Bytes::new(),
                    more: false,
                };
                return (None, end);
            }
            Some(Ok(frame)) => {
                // Request trailers have no ASGI message; skip them.
                if let Ok(chunk) = frame.into_data() {
                    let more = !body.is_end_stream();
                    let body = more.then_some(RequestBody::Streaming(body));
                    return (body, Incoming::Body { chunk, more });
                }
            }
            // The client is gone, broke the framing (a malformed chunk) or stopped sending:
            // the app sees a disconnect, and the client a 400 or 408 if nothing was sent yet.
            Some(Err(err)) => {
                ends.body_failure.fail(&err);
                return (None, Incoming::Disconnect);
            }
        }
    }
}

impl IntoMessage for Incoming {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let message = PyDict::new(py);
        match self {
            Incoming::Body { chunk, more } => {
                message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
                message.set_item(intern!(py, "body"), PyBytes::new(py, &chunk))?;
                message.set_item(intern!(py, "more_body"), more)?;
            }
            Incoming::Disconnect => {
                message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
            }
        }
        Ok(message.into_any().unbind())
    }
}
