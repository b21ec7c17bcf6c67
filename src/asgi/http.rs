//! The ASGI HTTP bridge: a Tower service on the Tokio side, a `send`/`receive` pair on
//! the loop thread, and nothing but Rust-owned data crossing between them.
//!
//! A request travels like this:
//! 1. [`AsgiService::call`] (Tokio) reads small bodies, then queues a job for the loop.
//! 2. [`start`] (loop thread) builds the scope and runs `app(scope, receive, send)` as a task.
//! 3. [`HttpCycle::send`] turns ASGI messages into an `http::Response`, handed back over a
//!    oneshot channel — in one piece when the first body message is also the last,
//!    otherwise with a bounded channel that streams the rest.
//! 4. [`HttpCycle::receive`] answers at once when it can; otherwise it parks on an asyncio
//!    future that a Tokio task resolves (through the job queue) when data or a disconnect
//!    arrives.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::awaitable::ready;
use super::body::{BoxError, IncomingBody, RequestBody, ResponseBody, StreamItem};
use super::scope::{self, ConnectionInfo, RequestHead};
use crate::python::{EventLoop, format_traceback};

/// Chunks of a streamed response that may wait for the socket before `send` parks.
const STREAM_CHANNEL_CAPACITY: usize = 8;

/// Forwards HTTP requests into the Python app. Cheap to clone; works under any Tower stack.
#[derive(Clone)]
pub struct AsgiService {
    shared: Arc<ServiceConfig>,
}

struct ServiceConfig {
    event_loop: EventLoop,
    root_path: String,
}

impl AsgiService {
    pub(crate) fn new(event_loop: EventLoop, root_path: String) -> Self {
        AsgiService {
            shared: Arc::new(ServiceConfig {
                event_loop,
                root_path,
            }),
        }
    }
}

impl<B> tower::Service<Request<B>> for AsgiService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.handle(request).await) })
    }
}

impl ServiceConfig {
    async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let body = match RequestBody::prepare(&parts.headers, body).await {
            Ok(body) => body,
            Err(_) => return plain_response(StatusCode::BAD_REQUEST, "Bad Request"),
        };
        let head = request_head(parts);
        let (response_tx, response_rx) = oneshot::channel();
        let disconnect = CancellationToken::new();
        // Hyper drops this future when the client goes away before the response is ready.
        let disconnect_on_drop = disconnect.clone().drop_guard();
        let event_loop = self.event_loop.clone();
        let root_path = self.root_path.clone();
        self.event_loop.submit(Box::new(move |py| {
            start(
                py,
                event_loop,
                Exchange {
                    head,
                    body,
                    root_path,
                    response_tx,
                    disconnect,
                },
            )
        }));
        let response = response_rx.await.unwrap_or_else(|_| internal_error());
        disconnect_on_drop.disarm();
        response
    }
}

/// The request head as the client sent it: behind `Router::nest` axum has stripped the
/// prefix from the URI, but Python must see the original path, as under uvicorn.
fn request_head(mut parts: http::request::Parts) -> RequestHead {
    let uri = parts
        .extensions
        .remove::<axum::extract::OriginalUri>()
        .map_or(parts.uri, |original| original.0);
    let path_and_query = uri
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let connection = parts
        .extensions
        .get::<ConnectionInfo>()
        .copied()
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| ConnectionInfo {
                    client: Some(info.0),
                    ..ConnectionInfo::default()
                })
        })
        .unwrap_or_default();
    RequestHead {
        method: parts.method,
        version: parts.version,
        path_and_query,
        headers: parts.headers,
        connection,
    }
}

/// Everything one request hands to the loop thread.
struct Exchange {
    head: RequestHead,
    body: RequestBody,
    root_path: String,
    response_tx: oneshot::Sender<Response<ResponseBody>>,
    disconnect: CancellationToken,
}

/// Runs on the loop thread: builds the scope and starts the app as an asyncio task.
fn start(py: Python<'_>, event_loop: EventLoop, exchange: Exchange) {
    let Exchange {
        head,
        body,
        root_path,
        response_tx,
        disconnect,
    } = exchange;
    let cycle = match Bound::new(
        py,
        HttpCycle {
            event_loop: event_loop.clone(),
            body: Some(body),
            read_in_flight: false,
            receive_waiter: None,
            early_message: None,
            disconnect,
            response: ResponseState::NotStarted {
                sender: response_tx,
            },
            send_in_flight: false,
            send_backlog: VecDeque::new(),
        },
    ) {
        Ok(cycle) => cycle,
        Err(err) => {
            tracing::error!("cannot start the request:\n{}", format_traceback(py, &err));
            return;
        }
    };
    let run = || -> PyResult<()> {
        let objects = event_loop.objects();
        let scope = scope::http_scope(
            py,
            &head,
            &root_path,
            objects.state.bind(py),
            http_extensions(py)?,
        )?;
        let receive = cycle.getattr(intern!(py, "receive"))?;
        let send = cycle.getattr(intern!(py, "send"))?;
        let coroutine = objects.app.bind(py).call1((scope, receive, send))?;
        let task = objects.create_task.bind(py).call1((coroutine,))?;
        task.call_method1(
            intern!(py, "add_done_callback"),
            (cycle.getattr(intern!(py, "_app_done"))?,),
        )?;
        Ok(())
    };
    if let Err(err) = run() {
        cycle.borrow_mut().app_finished(py, Some(err));
    }
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

/// Where the response is, from the app's point of view.
enum ResponseState {
    NotStarted {
        sender: oneshot::Sender<Response<ResponseBody>>,
    },
    /// `http.response.start` received; the head waits for the first body message to learn
    /// whether the whole response can go in one piece.
    Started {
        sender: oneshot::Sender<Response<ResponseBody>>,
        head: http::response::Parts,
        trailers: bool,
    },
    Streaming {
        sender: mpsc::Sender<StreamItem>,
        /// `http.response.start` had `trailers: True`.
        trailers_expected: bool,
        /// The last body message was sent; only trailers may follow.
        body_done: bool,
        trailers: HeaderMap,
    },
    Complete,
}

/// One request's ASGI `receive`/`send` pair. Lives on the loop thread.
#[pyclass(unsendable)]
pub struct HttpCycle {
    event_loop: EventLoop,
    /// `None` while a Tokio task is reading from it, or once it is exhausted.
    body: Option<RequestBody>,
    read_in_flight: bool,
    receive_waiter: Option<Py<PyAny>>,
    /// A message whose `receive()` was cancelled before it arrived; the next call gets it,
    /// so cancelling a wait never loses body bytes.
    early_message: Option<Incoming>,
    disconnect: CancellationToken,
    response: ResponseState,
    send_in_flight: bool,
    /// Chunks queued behind a parked `send`, in order, each with the future to resolve.
    send_backlog: VecDeque<(StreamItem, Py<PyAny>)>,
}

/// What a `receive()` call produces.
enum Incoming {
    Body { chunk: Bytes, more: bool },
    Disconnect,
}

#[pymethods]
impl HttpCycle {
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut cycle = slf.borrow_mut();
        if let Some(message) = cycle.early_message.take() {
            return ready(py, Some(message.into_message(py)?));
        }
        if cycle.read_in_flight {
            return cycle.park_receive(py);
        }
        match cycle.body.take() {
            Some(RequestBody::Buffered(chunk)) => {
                let message = Incoming::Body { chunk, more: false };
                ready(py, Some(message.into_message(py)?))
            }
            Some(RequestBody::Streaming(body)) => {
                let disconnect = cycle.disconnect.clone();
                cycle.start_read(slf, read_chunk(body, disconnect))
            }
            None if cycle.disconnect.is_cancelled() => {
                ready(py, Some(Incoming::Disconnect.into_message(py)?))
            }
            None => {
                let disconnect = cycle.disconnect.clone();
                cycle.start_read(slf, async move {
                    disconnect.cancelled().await;
                    (None, Incoming::Disconnect)
                })
            }
        }
    }

    fn send(slf: &Bound<'_, Self>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let message_type = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message has no 'type' key"))?;
        let message_type = message_type.cast::<PyString>()?.to_str()?;
        let mut cycle = slf.borrow_mut();
        match message_type {
            "http.response.start" => cycle.response_start(py, message),
            "http.response.body" => cycle.response_body(slf, message),
            "http.response.trailers" => cycle.response_trailers(slf, message),
            "http.response.pathsend" => cycle.response_pathsend(py, message),
            other => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{other}' sent by an HTTP app; expected \
                 'http.response.start', 'http.response.body', 'http.response.trailers' or \
                 'http.response.pathsend'."
            ))),
        }
    }

    /// Done-callback of the app's task.
    fn _app_done(&mut self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = task.py();
        let error = if task.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            Some(PyRuntimeError::new_err("the ASGI app's task was cancelled"))
        } else {
            let exception = task.call_method0(intern!(py, "exception"))?;
            (!exception.is_none()).then(|| PyErr::from_value(exception))
        };
        self.app_finished(py, error);
        Ok(())
    }
}

impl HttpCycle {
    /// The app returned or raised: log what went wrong and make sure the client is not left
    /// waiting for a response that will never come.
    fn app_finished(&mut self, py: Python<'_>, error: Option<PyErr>) {
        if let Some(error) = &error {
            tracing::error!(
                "Exception in ASGI application\n{}",
                format_traceback(py, error)
            );
        }
        match std::mem::replace(&mut self.response, ResponseState::Complete) {
            ResponseState::Complete => {}
            ResponseState::NotStarted { sender } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without starting a response");
                }
                let _ = sender.send(internal_error());
            }
            ResponseState::Started { sender, head, .. } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without completing the response");
                }
                let (stream, receiver) = mpsc::channel(1);
                let _ = stream.try_send(Err(aborted()));
                let body = ResponseBody::channel(receiver, &self.disconnect);
                let _ = sender.send(Response::from_parts(head, body));
            }
            ResponseState::Streaming { sender, .. } => {
                if error.is_none() {
                    tracing::error!("ASGI app returned without completing the response");
                }
                if let Err(mpsc::error::TrySendError::Full(item)) = sender.try_send(Err(aborted()))
                {
                    self.event_loop.runtime().spawn(async move {
                        let _ = sender.send(item).await;
                    });
                }
            }
        }
    }

    fn response_start(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let sender = match std::mem::replace(&mut self.response, ResponseState::Complete) {
            ResponseState::NotStarted { sender } => sender,
            previous => {
                self.response = previous;
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.start' sent: the response has already started.",
                ));
            }
        };
        let restore = |cycle: &mut Self, sender, err| {
            cycle.response = ResponseState::NotStarted { sender };
            Err(err)
        };
        let status = match message.get_item(intern!(py, "status"))? {
            Some(status) => status.extract::<u16>(),
            None => Err(PyValueError::new_err(
                "'http.response.start' has no 'status'",
            )),
        };
        let status = match status.and_then(|code| {
            StatusCode::from_u16(code)
                .map_err(|_| PyValueError::new_err(format!("invalid HTTP status code {code}")))
        }) {
            Ok(status) => status,
            Err(err) => return restore(self, sender, err),
        };
        let headers = match message.get_item(intern!(py, "headers"))? {
            Some(headers) => match header_map(&headers) {
                Ok(headers) => headers,
                Err(err) => return restore(self, sender, err),
            },
            None => HeaderMap::new(),
        };
        let trailers = flag(message, intern!(py, "trailers"))?;
        let (mut head, ()) = Response::new(()).into_parts();
        head.status = status;
        head.headers = headers;
        self.response = ResponseState::Started {
            sender,
            head,
            trailers,
        };
        ready(py, None)
    }

    fn response_body(
        &mut self,
        slf: &Bound<'_, Self>,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let chunk = match message.get_item(intern!(py, "body"))? {
            Some(body) => Bytes::copy_from_slice(
                body.cast::<PyBytes>()
                    .map_err(|_| PyTypeError::new_err("'http.response.body' body must be bytes"))?
                    .as_bytes(),
            ),
            None => Bytes::new(),
        };
        let more = flag(message, intern!(py, "more_body"))?;
        match std::mem::replace(&mut self.response, ResponseState::Complete) {
            ResponseState::Started {
                sender,
                head,
                trailers: false,
            } if !more => {
                let body = ResponseBody::full(chunk, Some(&self.disconnect));
                let _ = sender.send(Response::from_parts(head, body));
                ready(py, None)
            }
            ResponseState::Started {
                sender,
                head,
                trailers,
            } => {
                let (stream, receiver) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
                let body = ResponseBody::channel(receiver, &self.disconnect);
                let _ = sender.send(Response::from_parts(head, body));
                self.stream_chunk(slf, stream, chunk, more, trailers)
            }
            ResponseState::Streaming {
                sender,
                trailers_expected,
                body_done: false,
                ..
            } => self.stream_chunk(slf, sender, chunk, more, trailers_expected),
            streaming @ ResponseState::Streaming { .. } => {
                self.response = streaming;
                Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.body' sent after the last body message.",
                ))
            }
            ResponseState::NotStarted { sender } => {
                self.response = ResponseState::NotStarted { sender };
                Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.body' sent before 'http.response.start'.",
                ))
            }
            ResponseState::Complete => Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.body' sent after the response completed.",
            )),
        }
    }

    /// Queues one body chunk on an open stream and records what comes next.
    fn stream_chunk(
        &mut self,
        slf: &Bound<'_, Self>,
        sender: mpsc::Sender<StreamItem>,
        chunk: Bytes,
        more: bool,
        trailers_expected: bool,
    ) -> PyResult<Py<PyAny>> {
        if more || trailers_expected {
            self.response = ResponseState::Streaming {
                sender: sender.clone(),
                trailers_expected,
                body_done: !more,
                trailers: HeaderMap::new(),
            };
        }
        // When the stream ends here, `sender` is dropped after this chunk: hyper then ends
        // the body cleanly.
        if chunk.is_empty() {
            return ready(slf.py(), None);
        }
        self.push(slf, sender, chunk)
    }

    fn push(
        &mut self,
        slf: &Bound<'_, Self>,
        sender: mpsc::Sender<StreamItem>,
        chunk: Bytes,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let item = Ok(Frame::data(chunk));
        if self.send_in_flight {
            let waiter = self.event_loop.objects().create_future.call0(py)?;
            self.send_backlog.push_back((item, waiter.clone_ref(py)));
            return Ok(waiter);
        }
        match sender.try_send(item) {
            Ok(()) => ready(py, None),
            // The client went away; like uvicorn, further body is dropped silently and the
            // app learns of it from `receive()`.
            Err(mpsc::error::TrySendError::Closed(_)) => ready(py, None),
            Err(mpsc::error::TrySendError::Full(item)) => {
                let waiter = self.event_loop.objects().create_future.call0(py)?;
                self.spawn_send(slf, sender, item, waiter.clone_ref(py));
                Ok(waiter)
            }
        }
    }

    /// Waits for room in the stream on Tokio, then resolves `waiter` on the loop thread.
    fn spawn_send(
        &mut self,
        slf: &Bound<'_, Self>,
        sender: mpsc::Sender<StreamItem>,
        item: StreamItem,
        waiter: Py<PyAny>,
    ) {
        self.send_in_flight = true;
        let cycle: Py<HttpCycle> = slf.clone().unbind();
        let event_loop = self.event_loop.clone();
        self.event_loop.runtime().spawn(async move {
            let _ = sender.send(item).await;
            event_loop.submit(Box::new(move |py| {
                let cycle = cycle.bind(py);
                resolve(py, waiter.bind(py), None);
                let next = {
                    let mut cycle = cycle.borrow_mut();
                    cycle.send_in_flight = false;
                    cycle.send_backlog.pop_front()
                };
                if let Some((item, waiter)) = next {
                    let sender = match &cycle.borrow().response {
                        ResponseState::Streaming { sender, .. } => Some(sender.clone()),
                        _ => None,
                    };
                    match sender {
                        Some(sender) => cycle.borrow_mut().spawn_send(cycle, sender, item, waiter),
                        None => resolve(py, waiter.bind(py), None),
                    }
                }
            }));
        });
    }

    fn response_trailers(
        &mut self,
        slf: &Bound<'_, Self>,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let ResponseState::Streaming {
            sender,
            trailers_expected: true,
            body_done: true,
            mut trailers,
        } = std::mem::replace(&mut self.response, ResponseState::Complete)
        else {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.trailers': it must follow the last \
                 body message of a response started with 'trailers': True.",
            ));
        };
        if let Some(headers) = message.get_item(intern!(py, "headers"))? {
            trailers.extend(header_map(&headers)?);
        }
        if flag(message, intern!(py, "more_trailers"))? {
            self.response = ResponseState::Streaming {
                sender,
                trailers_expected: true,
                body_done: true,
                trailers,
            };
            return ready(py, None);
        }
        let item = Ok(Frame::trailers(trailers));
        if self.send_in_flight {
            let waiter = self.event_loop.objects().create_future.call0(py)?;
            self.send_backlog.push_back((item, waiter.clone_ref(py)));
            return Ok(waiter);
        }
        match sender.try_send(item) {
            Err(mpsc::error::TrySendError::Full(item)) => {
                let waiter = self.event_loop.objects().create_future.call0(py)?;
                self.spawn_send(slf, sender, item, waiter.clone_ref(py));
                Ok(waiter)
            }
            _ => ready(py, None),
        }
    }

    fn response_pathsend(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let ResponseState::Started {
            sender, mut head, ..
        } = std::mem::replace(&mut self.response, ResponseState::Complete)
        else {
            return Err(PyRuntimeError::new_err(
                "Unexpected ASGI message 'http.response.pathsend': it must directly follow \
                 'http.response.start'.",
            ));
        };
        let path: std::path::PathBuf = message
            .get_item(intern!(py, "path"))?
            .ok_or_else(|| PyValueError::new_err("'http.response.pathsend' has no 'path'"))?
            .extract()?;
        if !path.is_absolute() {
            return Err(PyValueError::new_err(
                "'http.response.pathsend' path must be absolute",
            ));
        }
        let file = std::fs::File::open(&path)?;
        let length = file.metadata()?.len();
        head.headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(length));
        // Opening happens on the loop thread (one syscall); reading happens on Tokio.
        let _guard = self.event_loop.runtime().enter();
        let body = ResponseBody::file(tokio::fs::File::from_std(file), length, &self.disconnect);
        let _ = sender.send(Response::from_parts(head, body));
        ready(py, None)
    }

    fn park_receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let waiter = self.event_loop.objects().create_future.call0(py)?;
        self.receive_waiter = Some(waiter.clone_ref(py));
        Ok(waiter)
    }

    /// Parks `receive()` on an asyncio future and runs `read` on Tokio; its result comes
    /// back through the job queue.
    fn start_read<F>(&mut self, slf: &Bound<'_, Self>, read: F) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = (Option<RequestBody>, Incoming)> + Send + 'static,
    {
        let waiter = self.park_receive(slf.py())?;
        self.read_in_flight = true;
        let cycle: Py<HttpCycle> = slf.clone().unbind();
        let event_loop = self.event_loop.clone();
        self.event_loop.runtime().spawn(async move {
            let (body, message) = read.await;
            event_loop.submit(Box::new(move |py| {
                let mut cycle = cycle.bind(py).borrow_mut();
                cycle.read_in_flight = false;
                cycle.body = body;
                let waiter = cycle
                    .receive_waiter
                    .take()
                    .filter(|waiter| !is_done(waiter.bind(py)));
                match waiter {
                    Some(waiter) => match message.into_message(py) {
                        Ok(message) => resolve(py, waiter.bind(py), Some(message)),
                        Err(err) => {
                            let _ = waiter
                                .bind(py)
                                .call_method1(intern!(py, "set_exception"), (err.value(py),));
                        }
                    },
                    None => cycle.early_message = Some(message),
                }
            }));
        });
        Ok(waiter)
    }
}

/// Reads the next data frame of a streamed request body, or notices the client leaving.
async fn read_chunk(
    mut body: IncomingBody,
    disconnect: CancellationToken,
) -> (Option<RequestBody>, Incoming) {
    loop {
        let frame = tokio::select! {
            biased;
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            () = disconnect.cancelled() => return (None, Incoming::Disconnect),
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
            // A body that fails mid-way means the client is gone (or broke the framing).
            Some(Err(_)) => return (None, Incoming::Disconnect),
        }
    }
}

impl Incoming {
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

fn is_done(future: &Bound<'_, PyAny>) -> bool {
    future
        .call_method0(intern!(future.py(), "done"))
        .and_then(|done| done.is_truthy())
        .unwrap_or(true)
}

/// Completes a parked awaitable unless the app cancelled it meanwhile: a cancelled future
/// must never get `set_result` (asyncio would raise `InvalidStateError`).
fn resolve(py: Python<'_>, future: &Bound<'_, PyAny>, value: Option<Py<PyAny>>) {
    if is_done(future) {
        return;
    }
    let value = value.unwrap_or_else(|| py.None());
    if let Err(err) = future.call_method1(intern!(py, "set_result"), (value,)) {
        tracing::error!("cannot resume the ASGI app: {err}");
    }
}

fn flag(message: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match message.get_item(key)? {
        Some(value) => value.is_truthy(),
        None => Ok(false),
    }
}

/// ASGI headers (an iterable of `[name, value]` byte pairs) as a `HeaderMap`, rejecting
/// what HTTP cannot carry (CR/LF in values, invalid names) before it reaches the wire.
fn header_map(headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for pair in headers.try_iter()? {
        let pair = pair?;
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
            return Err(PyTypeError::new_err(format!(
                "response header names and values must be bytes, got {}",
                pair.repr()?
            )));
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid response header name {}",
                name.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid value for response header '{name}': {}",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

fn plain_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        Bytes::from_static(text.as_bytes()),
        None,
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn internal_error() -> Response<ResponseBody> {
    let mut response = plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn aborted() -> BoxError {
    "the ASGI app failed before completing its response".into()
}
